"""What an OpenAI-compatible server says about itself beyond the OpenAI API: its slots, and whether it is busy.

llama.cpp's server answers GET /props (`total_slots`), GET /slots (one entry per slot with `is_processing`) and
GET /health; vLLM answers GET /metrics (Prometheus text with `vllm:num_requests_running`; its `max_num_seqs` is
not exposed, so no slot count) and GET /health. Other servers (OpenAI, proxies) answer 404 or 401: "unknown".
Every probe is time-boxed and never raises; `root` is the base URL without its trailing `/v1`.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

PROBE_SECONDS = 2.0  # a probe's time box: a server without these endpoints costs at most this, once
_RUNNING = re.compile(rb"^vllm:num_requests_running(?:\{[^}]*\})? +([0-9.eE+-]+)", re.MULTILINE)


@dataclass
class ServerInfo:
    """What discovery found: the slot count (None: not reported), where it came from, and how to ask if busy."""

    slots: int | None = None
    slots_from: str | None = None
    busy_path: str = "/health"  # "/slots" (llama.cpp), "/metrics" (vLLM) or "/health" (alive is all it says)


def server_root(base_url: str) -> str:
    """The server's root URL: `base_url` without a trailing `/v1`."""
    return base_url.rstrip("/").removesuffix("/v1")


async def discover(session: aiohttp.ClientSession, root: str) -> ServerInfo:
    """Ask /props, /slots and /metrics at once (at most PROBE_SECONDS in all) what the server reports."""
    props, slots, metrics = await asyncio.gather(*(_get(session, root + path) for path in ("/props", "/slots", "/metrics")))
    info = ServerInfo()
    if isinstance(slots, list) and slots and all(isinstance(s, dict) and "is_processing" in s for s in slots):
        info.slots, info.slots_from, info.busy_path = len(slots), "/slots", "/slots"
    elif isinstance(metrics, bytes) and _RUNNING.search(metrics):
        info.busy_path = "/metrics"
    total = props.get("total_slots") if isinstance(props, dict) else None
    if type(total) is int and total >= 1:
        info.slots, info.slots_from = total, "/props total_slots"
    return info


async def is_busy(session: aiohttp.ClientSession, root: str, info: ServerInfo) -> bool:
    """Whether the server shows it is working: a slot processing, requests running, else /health answering 200."""
    answer = await _get(session, root + info.busy_path)
    if info.busy_path == "/slots":
        return isinstance(answer, list) and any(isinstance(s, dict) and s.get("is_processing") for s in answer)
    if info.busy_path == "/metrics":
        return isinstance(answer, bytes) and sum(float(n) for n in _RUNNING.findall(answer)) > 0
    return answer is not None


async def _get(session: aiohttp.ClientSession, url: str) -> Any:
    """The parsed JSON (or raw bytes if not JSON) of a 200 answer to GET `url`; None for anything else."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=PROBE_SECONDS)) as response:
            if response.status != 200:
                return None
            raw = b""
            async for chunk in response.content.iter_chunked(1 << 16):
                raw += chunk
                if len(raw) > 1 << 20:  # no self-description is this long
                    return None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
