"""Client throughput of synthgen's OpenAI-compatible backend against the sim server (in its own process).

For each window size it prints achieved req/s, the ideal (in-flight / latency), their ratio, the client's
CPU milliseconds per request, and p50/p99 latency added on top of the server's. `--compare-openai` also
drives the official AsyncOpenAI client (default transport) through the same windows.

    python bench/client_throughput.py                      # 64, 256, 1024, 2048 in flight, 100 ms latency
    python bench/client_throughput.py --windows 256 --requests 5000 --compare-openai
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable

from synthgen.aio import new_event_loop
from synthgen.backends.base import ChatRequest
from synthgen.backends.openai_compat import OpenAIBackend
from synthgen.sim.process import SimProcess

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def requests(count: int) -> list[ChatRequest]:
    system = "You create training data for instruction-following models. " * 6
    return [
        ChatRequest("sim-model", [{"role": "system", "content": system},
                                  {"role": "user", "content": f"Write task number {i} about topic {i % 97}."}],
                    {"temperature": 0.8, "max_tokens": 128, "seed": i})
        for i in range(count)
    ]


async def drive(call: Callable[[ChatRequest], Awaitable[object]], batch: list[ChatRequest], window: int,
                latency: float) -> tuple[float, list[float]]:
    """Keep `window` requests in flight until `batch` is done; return wall seconds and added latencies."""
    slots = asyncio.Semaphore(window)
    added: list[float] = []

    async def one(request: ChatRequest) -> None:
        async with slots:
            started = time.perf_counter()
            await call(request)
            added.append(time.perf_counter() - started - latency)

    began = time.perf_counter()
    await asyncio.gather(*(one(r) for r in batch))
    return time.perf_counter() - began, added


async def synthgen_client(base: str, window: int, batch: list[ChatRequest], latency: float) -> tuple[float, list[float]]:
    backend = OpenAIBackend(base, "sk-bench", max_concurrency=window, timeout=60)
    await drive(backend.complete, batch[: min(len(batch), window)], window, latency)  # warm the connection pool
    try:
        return await drive(backend.complete, batch, window, latency)
    finally:
        await backend.aclose()


async def openai_client(base: str, window: int, batch: list[ChatRequest], latency: float) -> tuple[float, list[float]]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base, api_key="sk-bench", max_retries=0, timeout=60)

    async def call(request: ChatRequest) -> object:
        return await client.chat.completions.create(**request.body())

    await drive(call, batch[: min(len(batch), window)], window, latency)
    try:
        return await drive(call, batch, window, latency)
    finally:
        await client.close()


def measure(name: str, runner: Callable[..., Awaitable[tuple[float, list[float]]]], base: str, window: int,
            count: int, latency: float, server_pid: int) -> None:
    batch = requests(count)
    loop = new_event_loop()
    cpu0, server0 = time.process_time(), cpu_seconds(server_pid)
    try:
        wall, added = loop.run_until_complete(runner(base, window, batch, latency))
    finally:
        loop.close()
    cpu = time.process_time() - cpu0
    server_cpu = cpu_seconds(server_pid) - server0
    warm = min(count, window)
    rate, ideal = count / wall, window / latency
    cuts = statistics.quantiles(added, n=100)
    print(f"{name:9} {window:6d} {count:8d} {rate:9.0f} {ideal:8.0f} {rate / ideal:6.2f} "
          f"{cpu * 1000 / (count + warm):9.3f} {server_cpu * 1000 / (count + warm):9.3f} "
          f"{cuts[49] * 1000:8.1f} {cuts[98] * 1000:8.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, nargs="+", default=[64, 256, 1024, 2048])
    parser.add_argument("--requests", type=int, default=5000, help="at least this many per window (10x window when larger)")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--compare-openai", action="store_true", help="also measure AsyncOpenAI (slow past 256)")
    args = parser.parse_args()
    with SimProcess("--latency", str(args.latency)) as server:
        base = server.base_url
        print(f"sim server latency {args.latency * 1000:.0f} ms, separate process; client on uvloop")
        print(f"{'client':9} {'window':>6} {'requests':>8} {'req/s':>9} {'ideal':>8} {'ratio':>6} "
              f"{'cpu ms/req':>9} {'srv ms/req':>9} {'p50 +ms':>8} {'p99 +ms':>8}")
        for window in args.windows:
            count = max(args.requests, 10 * window)
            measure("synthgen", synthgen_client, base, window, count, args.latency, server.pid)
            if args.compare_openai:
                measure("openai", openai_client, base, window, count, args.latency, server.pid)


if __name__ == "__main__":
    main()
