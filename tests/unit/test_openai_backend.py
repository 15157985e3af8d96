"""The OpenAI-compatible client against the sim server: retries, Retry-After, AIMD, timeouts, fatal errors."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from typing import Any

import pytest

from synthgen.backends.base import ChatRequest, Completion
from synthgen.backends.openai_compat import OpenAIBackend
from synthgen.backends.responses import retry_after
from synthgen.errors import FatalBackendError, RetryableBackendError
from synthgen.sim import SimConfig, SimServer
from synthgen.stats import RunStats


def request(i: int = 0, **params: Any) -> ChatRequest:
    return ChatRequest("sim-model", [{"role": "user", "content": f"question {i}"}], {"max_tokens": 64, "seed": i, **params})


def complete_all(backend: OpenAIBackend, requests: list[ChatRequest]) -> list[Completion | BaseException]:
    async def scenario() -> list[Completion | BaseException]:
        try:
            return await asyncio.gather(*(backend.complete(r) for r in requests), return_exceptions=True)
        finally:
            await backend.aclose()

    return asyncio.run(scenario())


def test_transient_faults_are_retried_until_they_succeed() -> None:
    faults = {"server_error": 0.15, "unavailable": 0.15, "malformed": 0.1, "disconnect": 0.1}
    with SimServer(SimConfig(latency=0.0, faults=faults, seed=1)) as sim:
        stats = RunStats()
        backend = OpenAIBackend(sim.base_url, max_concurrency=16, max_attempts=12, retry_initial=0.001, retry_max=0.01, stats=stats)
        results = complete_all(backend, [request(i) for i in range(100)])
    assert all(isinstance(r, Completion) and r.text for r in results)
    assert {"http_500", "http_503", "malformed", "disconnect"} <= set(stats.retries)
    assert stats.http_ok == 100 and stats.http_requests == 100 + sum(stats.retries.values())


def test_retry_after_is_honoured_and_429_shrinks_the_window() -> None:
    with SimServer(SimConfig(latency=0.0, faults={"rate_limit": 1.0}, retry_after=0.2)) as sim:
        stats = RunStats()
        backend = OpenAIBackend(sim.base_url, max_concurrency=8, max_attempts=3, retry_initial=0.001, stats=stats)
        began = time.monotonic()
        (result,) = complete_all(backend, [request()])
        elapsed = time.monotonic() - began
    assert isinstance(result, RetryableBackendError) and result.cause == "http_429"
    assert elapsed >= 0.4  # two waits of Retry-After, not the 1 ms back-off
    assert stats.retries["http_429"] == 2
    assert backend.window.limit < 8


def test_a_hung_request_times_out_and_is_retried() -> None:
    with SimServer(SimConfig(latency=0.0, faults={"hang": 1.0}, hang_seconds=3.0)) as sim:
        stats = RunStats()
        backend = OpenAIBackend(sim.base_url, timeout=0.2, max_attempts=2, retry_initial=0.001, stats=stats)
        began = time.monotonic()
        (result,) = complete_all(backend, [request()])
    assert isinstance(result, RetryableBackendError) and result.cause == "timeout"
    assert "the server shows no progress" in str(result)  # the sim without capacity has no /health: nothing says busy
    assert stats.retries["timeout"] == 1 and time.monotonic() - began < 2.0
    assert backend.window.limit < 256 and stats.backend["abandoned"] == 2  # an abandoned request halves the window


@pytest.mark.parametrize(
    ("config", "model", "key", "status", "hint"),
    [
        (SimConfig(latency=0.0, api_key="right"), "sim-model", "wrong", 401, "OPENAI_API_KEY"),
        (SimConfig(latency=0.0, models=["a"]), "b", None, 404, "model 'b'"),
        (SimConfig(latency=0.0, max_context_tokens=10), "sim-model", None, 400, "lower max_tokens"),
    ],
)
def test_unfixable_errors_are_fatal_without_retries(config: SimConfig, model: str, key: str | None, status: int, hint: str) -> None:
    with SimServer(config) as sim:
        stats = RunStats()
        backend = OpenAIBackend(sim.base_url, key, max_attempts=5, stats=stats)
        req = request()
        req.model = model
        (result,) = complete_all(backend, [req])
    assert isinstance(result, FatalBackendError) and result.status == status and hint in str(result)
    assert stats.http_requests == 1 and not stats.retries


def test_usage_and_structured_output() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "score": {"type": "integer", "minimum": 1, "maximum": 5}},
              "required": ["answer", "score"], "additionalProperties": False}
    with SimServer(SimConfig(latency=0.0)) as sim:
        stats = RunStats()
        backend = OpenAIBackend(sim.base_url, stats=stats)
        req = request()
        req.schema = schema
        (result,) = complete_all(backend, [req])
    import json

    assert isinstance(result, Completion)
    value = json.loads(result.text)
    assert set(value) == {"answer", "score"} and 1 <= value["score"] <= 5
    assert result.prompt_tokens > 0 and result.completion_tokens > 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5", 5.0), ("0.25", 0.25), ("1e9", 120.0), ("nan", None), ("inf", None), ("-1", None), ("soon", None),
     ("", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_header_is_seconds_or_a_date_and_never_nonsense(value: str, expected: float | None) -> None:
    assert retry_after({"Retry-After": value}) == expected


def test_retry_after_http_date_in_the_future_is_the_seconds_until_it() -> None:
    from email.utils import formatdate

    wait = retry_after({"Retry-After": formatdate(time.time() + 30, usegmt=True)})
    assert wait is not None and 28 <= wait <= 30


def sim_get(sim: SimServer, path: str) -> Any:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(sim.base_url.removesuffix("/v1") + path) as r:
        return json.loads(r.read())


def test_a_slow_server_never_gets_a_request_twice_however_short_the_timeout() -> None:
    """The issue's case: more in flight than the server has slots, each answer slower than `timeout`."""
    with SimServer(SimConfig(latency=1.0, capacity=2, track_bodies=True)) as sim:
        stats = RunStats()
        backend = OpenAIBackend(sim.base_url, max_concurrency=10, timeout=0.3, max_attempts=3, stats=stats)
        results = complete_all(backend, [request(i) for i in range(10)])
        bodies = sim_get(sim, "/sim/bodies")
    assert all(isinstance(r, Completion) for r in results)
    assert len(bodies) == len(set(bodies)) == 10 and stats.http_requests == 10 and not stats.retries
    assert stats.backend["waits_extended"] >= 1 and stats.backend["abandoned"] == 0
    assert backend.window.limit == 10  # nothing was abandoned, so nothing halved it


@pytest.mark.parametrize(("capacity", "max_concurrency", "window", "window_from"), [
    (3, None, 3, "server slots (/props total_slots)"),
    (3, 6, 6, "max_concurrency"),  # given explicitly: kept, even above the slots
    (None, None, 256, "default"),  # no /props, /slots or /metrics: 404s, nothing changes
])
def test_window_defaults_to_the_slot_count_the_server_reports(
        capacity: int | None, max_concurrency: int | None, window: int, window_from: str) -> None:
    with SimServer(SimConfig(latency=0.05, capacity=capacity)) as sim:
        stats = RunStats()
        backend = OpenAIBackend(sim.base_url, max_concurrency=max_concurrency, stats=stats)
        results = complete_all(backend, [request(i) for i in range(12)])
        server = sim.stats()
    assert all(isinstance(r, Completion) for r in results)
    assert backend.window.max_limit == window and server["max_in_flight"] == min(window, 12)
    assert stats.backend["window"] == window and stats.backend["window_from"] == window_from
    assert stats.backend["slots"] == capacity
    assert stats.http_requests == 12  # the discovery probes are not counted as requests sent
    assert stats.backend["deadline_s"] == 120.0  # at 0.05 s a request, the floor


def test_a_hung_request_on_a_busy_server_is_waited_on_until_hard_timeout() -> None:
    with SimServer(SimConfig(latency=0.0, capacity=1, faults={"hang": 1.0}, hang_seconds=6.0)) as sim:
        stats = RunStats()
        backend = OpenAIBackend(sim.base_url, timeout=0.2, hard_timeout=1.0, max_attempts=1, stats=stats)
        began = time.monotonic()
        (result,) = complete_all(backend, [request()])
        elapsed = time.monotonic() - began
        probes = sim.stats()["endpoints"].get("/slots", 0)
    assert isinstance(result, RetryableBackendError) and result.cause == "timeout"
    assert 1.0 <= elapsed < 4.0  # its slot shows processing, so it was kept until hard_timeout, not 0.2 s
    assert stats.backend["waits_extended"] >= 2 and stats.backend["abandoned"] == 1 and probes >= 3


def test_503_shrinks_the_window() -> None:
    with SimServer(SimConfig(latency=0.0, faults={"unavailable": 1.0})) as sim:
        backend = OpenAIBackend(sim.base_url, max_concurrency=8, max_attempts=2, retry_initial=0.001)
        (result,) = complete_all(backend, [request()])
    assert isinstance(result, RetryableBackendError) and result.cause == "http_503"
    assert backend.window.limit == 4


def test_a_server_that_accepts_no_connection_fails_fast() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # never accepted: once its queue is full, connecting hangs
    port = listener.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
    try:
        backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", connect_timeout=0.5, max_attempts=3)
        began = time.monotonic()
        (result,) = complete_all(backend, [request()])
        elapsed = time.monotonic() - began
    finally:
        for sock in (listener, *fillers):
            sock.close()
    assert isinstance(result, FatalBackendError) and "no connection within 0.5s" in str(result)
    assert elapsed < 15  # discovery (2 s) + connect (0.5 s) + the up-probe (~2 s + 3 x 0.5 s), not 3 x 120 s
