"""Head-of-line blocking: generate throughput with and without hung requests, against the sim in its own process.

For each window it runs a generate-only recipe twice, on a fault-free server and on one where a share of the
requests hang (`hang_seconds`, then answer normally), and prints wall seconds, req/s over the whole run (which
includes waiting for the last hung request), req/s until 95% of the requests were finished (the flow behind the
hung ones), the ceiling the backend's window allows (Little's law: `max_concurrency` / the mean seconds a request
holds a slot; a hung request holds one for `hang_seconds`, so hangs lower it whatever the stage does), and the
hung/fault-free ratios. Without head-of-line blocking the flow rate reaches the ceiling; with it, a hung request at
the head of an in-order window stops all submission once the window behind it is full.

    python bench/head_of_line.py                                 # 6,000 requests, 100 ms, windows 64 and 256
    python bench/head_of_line.py --windows 64 --hang 0.03 --hang-seconds 30
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.sim.process import SimProcess
from synthgen.stats import RunStats

RECIPE = """
name: head-of-line
seed: 5
backend: {{kind: openai, base_url: "{url}", max_concurrency: {window}, timeout: {timeout}}}
stages:
  - generate:
      template: ask.j2
      count: {requests}
      sampling: {{temperature: 1.0, max_tokens: 16}}
"""
FLOW_SHARE = 0.95  # below the share of requests that do not hang, so the "flow" rate never waits for a hung one


def measure(window: int, requests: int, latency: float, hang: float, hang_seconds: float) -> tuple[float, float, float]:
    """Wall seconds, req/s over the run, req/s until FLOW_SHARE of the requests were finished."""
    faults = [f"--fault=hang={hang}"] if hang else []
    with SimProcess("--latency", str(latency), "--hang-seconds", str(hang_seconds), *faults) as server, \
            tempfile.TemporaryDirectory(prefix="synthgen-hol-") as tmp:
        work = Path(tmp)
        (work / "prompts").mkdir()
        (work / "prompts" / "ask.j2").write_text("Write one short task.")
        recipe = work / "recipe.yaml"
        recipe.write_text(RECIPE.format(url=server.base_url, window=window, requests=requests,
                                        timeout=hang_seconds + 30))
        stats, flowed, done = RunStats(), [float("nan")], threading.Event()

        def watch() -> None:
            while not done.wait(0.02):
                if stats.finished_requests >= FLOW_SHARE * requests:
                    flowed[0] = time.monotonic() - began
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        began = time.monotonic()
        watcher.start()
        run_recipe(load_recipe(recipe), work / "run", stats=stats)
        wall = time.monotonic() - began
        done.set()
        watcher.join()
        return wall, stats.finished_requests / wall, FLOW_SHARE * requests / flowed[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, nargs="+", default=[64, 256], help="max_concurrency values")
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--hang", type=float, default=0.03, help="share of requests that hang")
    parser.add_argument("--hang-seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"{args.requests:,} generate requests, sim latency {args.latency * 1000:.0f} ms (separate process); "
          f"hung: {args.hang:.0%} of requests for {args.hang_seconds:g} s")
    print(f"{'window':>6} {'faults':>8} {'wall s':>7} {'req/s':>7} {'flow req/s':>10} {'ceiling':>8} {'flow/ceiling':>12}")
    for window in args.windows:
        rows = {}
        for label, hang in (("none", 0.0), (f"hang {args.hang:.0%}", args.hang)):
            wall, rate, flow = rows[label] = measure(window, args.requests, args.latency, hang, args.hang_seconds)
            ceiling = window / ((1 - hang) * args.latency + hang * args.hang_seconds)
            print(f"{window:6d} {label:>8} {wall:7.1f} {rate:7.0f} {flow:10.0f} {ceiling:8.0f} {flow / ceiling:12.2f}",
                  flush=True)
        (_, calm_rate, calm_flow), (_, hung_rate, hung_flow) = rows.values()
        print(f"{window:6d} {'ratio':>8} {'':7} {hung_rate / calm_rate:7.2f} {hung_flow / calm_flow:10.2f}", flush=True)


if __name__ == "__main__":
    main()
