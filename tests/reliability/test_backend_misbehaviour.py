"""Issue 14 items 14 and 18: a misbehaving or unreachable server, against real HTTP servers (the sim)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from synthgen.backends.base import ChatRequest, Completion
from synthgen.backends.openai_compat import OpenAIBackend
from synthgen.errors import FatalBackendError, RetryableBackendError
from synthgen.sim import SimConfig, SimServer
from synthgen.stats import RunStats
from tests.conftest import read_jsonl, write
from tests.test_bad_input import assert_clean_failure, run

DEAD_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there


def request(i: int = 0) -> ChatRequest:
    return ChatRequest("sim-model", [{"role": "user", "content": f"question {i}"}], {"max_tokens": 32, "seed": i})


def complete_all(backend: OpenAIBackend, count: int) -> list[Completion | BaseException]:
    async def scenario() -> list[Completion | BaseException]:
        try:
            return await asyncio.gather(*(backend.complete(request(i)) for i in range(count)), return_exceptions=True)
        finally:
            await backend.aclose()

    return asyncio.run(scenario())


def sim_recipe(faults: str, count: int = 3) -> str:
    return f"""name: misbehaving
prompts_dir: prompts
backend: {{kind: sim, sim: {{latency: 0.0, faults: {faults}}}, max_attempts: 2, retry_initial: 0.01}}
stages:
  - generate: {{template: t/plain.j2, count: {count}, max_retries: 0}}
"""


def cached_completions(out: Path) -> int:
    with sqlite3.connect(out / "cache.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM completions").fetchone()[0])


@pytest.mark.parametrize(
    ("fault", "cause", "detail"),
    [
        ("html_body", "malformed", "unparseable response body: b'<html>"),
        ("empty_choices", "malformed", "no completion in response body"),
        ("null_content", "malformed", "message content is NoneType, not text"),
        ("list_content", "malformed", "message content is list, not text"),
        ("endless_body", "oversized", "response body over max_response_bytes=65536"),
    ],
)
def test_item14_a_200_without_a_completion_is_retried_then_fails(fault: str, cause: str, detail: str) -> None:
    with SimServer(SimConfig(latency=0.0, faults={fault: 1.0})) as sim:
        stats = RunStats()
        backend = OpenAIBackend(sim.base_url, max_attempts=3, retry_initial=0.01, max_response_bytes=65536, stats=stats)
        (result,) = complete_all(backend, 1)
    assert isinstance(result, RetryableBackendError) and result.cause == cause, result
    assert detail in str(result)
    assert stats.retries[cause] == 2 and stats.http_ok == 0


def test_item14_retry_after_nan_falls_back_to_the_backoff() -> None:
    with SimServer(SimConfig(latency=0.0, faults={"retry_after_nan": 1.0})) as sim:
        stats = RunStats()
        backend = OpenAIBackend(sim.base_url, max_attempts=3, retry_initial=0.3, retry_max=1.0, stats=stats)
        began = time.monotonic()
        (result,) = complete_all(backend, 1)
        elapsed = time.monotonic() - began
        served = sim.stats()["statuses"]
    assert isinstance(result, RetryableBackendError) and result.cause == "http_429"
    assert stats.retries["http_429"] == 2 and served == {"429": 3}
    assert elapsed >= 0.8  # back-offs of >= 0.3 s and >= 0.6 s, not a wait of "nan" (none at all)


def test_item14_retry_after_http_date_is_honoured() -> None:
    with SimServer(SimConfig(latency=0.0, faults={"retry_after_date": 1.0}, retry_after=2.0)) as sim:
        backend = OpenAIBackend(sim.base_url, max_attempts=2, retry_initial=0.001, retry_max=0.01)
        began = time.monotonic()
        (result,) = complete_all(backend, 1)
        elapsed = time.monotonic() - began
    assert isinstance(result, RetryableBackendError) and result.cause == "http_429"
    assert 0.9 < elapsed < 10  # the date is 2 s ahead at one-second resolution; the 1 ms back-off was not used


def test_item14_a_run_the_backend_rejects_entirely_exits_nonzero_and_caches_nothing(tmp_path: Path) -> None:
    code, message, out = run(tmp_path, sim_recipe("{null_content: 0.5, html_body: 0.5}", count=4))
    assert code == 1, message
    assert "Traceback" not in message
    assert "error: every request failed at the backend: backend_malformed 4; nothing was kept" in message
    assert read_jsonl(out / "dataset.jsonl") == []
    rejects = read_jsonl(out / "rejects.jsonl")
    assert [row["reason"] for row in rejects] == ["backend_malformed"] * 4
    assert cached_completions(out) == 0


def test_item14_an_empty_completion_is_rejected_not_kept(tmp_path: Path) -> None:
    code, message, out = run(tmp_path, sim_recipe("{empty_content: 1.0}"))
    assert code == 0, message  # the server did answer: the records are rejected, the run is not a failure
    assert read_jsonl(out / "dataset.jsonl") == []
    assert {row["reason"] for row in read_jsonl(out / "rejects.jsonl")} == {"empty_output"}


def test_item14_a_partly_misbehaving_server_still_gives_a_full_dataset(tmp_path: Path) -> None:
    faults = "{null_content: 0.2, list_content: 0.1, empty_choices: 0.1, html_body: 0.1}"
    recipe = sim_recipe(faults, count=20).replace("max_attempts: 2", "max_attempts: 12")
    code, message, out = run(tmp_path, recipe)
    assert code == 0, message
    rows = read_jsonl(out / "dataset.jsonl")
    assert len(rows) == 20 and all(row["fields"]["text"].strip() for row in rows)
    assert cached_completions(out) == 20


def test_item18_an_unreachable_server_fails_every_request_after_one_short_probe() -> None:
    stats = RunStats()
    backend = OpenAIBackend(DEAD_URL, max_concurrency=64, max_attempts=6, stats=stats)
    began = time.monotonic()
    results = complete_all(backend, 50)
    assert time.monotonic() - began < 10
    assert all(isinstance(r, FatalBackendError) and "cannot connect to http://127.0.0.1:9/v1" in str(r) for r in results)
    assert not stats.retries and stats.http_requests <= 50 + 3  # each request once, plus the probe


def test_item18_a_refused_connection_after_the_server_answered_is_retried() -> None:
    with SimServer(SimConfig(latency=0.0)) as sim:
        stats = RunStats()
        backend = OpenAIBackend(sim.base_url, max_attempts=3, retry_initial=0.01, stats=stats)

        async def scenario() -> BaseException | Completion:
            try:
                await backend.complete(request(0))
                sim.stop()  # the server goes away mid-run
                return await backend.complete(request(1))
            except BaseException as exc:
                return exc
            finally:
                await backend.aclose()

        result = asyncio.run(scenario())
    assert isinstance(result, FatalBackendError) and "cannot connect" in str(result)
    assert sum(stats.retries.values()) == 2 and stats.retries["connect"] >= 1, stats.retries  # retried as usual


def test_item18_cli_run_against_a_dead_server_stops_in_seconds(tmp_path: Path) -> None:
    recipe = """name: dead
prompts_dir: prompts
backend: {kind: openai, max_concurrency: 64}
stages:
  - generate: {template: t/plain.j2, count: 50}
"""
    began = time.monotonic()
    code, message, out = run(tmp_path, recipe, "--base-url", DEAD_URL)
    assert time.monotonic() - began < 15
    assert code == 2
    assert_clean_failure(code, message, out, "error: backend answered 0: cannot connect to http://127.0.0.1:9/v1",
                         "--base-url")


def test_item19_a_request_over_the_whole_tpm_budget_stops_the_run_naming_the_field(tmp_path: Path) -> None:
    recipe = """name: tpm
prompts_dir: prompts
backend: {kind: sim, sim: {latency: 0.0}, tpm: 300}
stages:
  - generate: {template: t/plain.j2, count: 2, sampling: {max_tokens: 512}}
"""
    code, message, out = run(tmp_path, recipe)
    assert code == 2
    assert_clean_failure(code, message, out, "error: backend: tpm: a request needs about 5", "budget of 300 a minute",
                         "raise backend.tpm or lower the stage's sampling.max_tokens")


def test_item19_ray_actors_share_the_runs_rate_limits(tmp_path: Path) -> None:
    from synthgen.engine.ray_engine import share_rate_limits
    from synthgen.recipe import load_recipe

    path = write(tmp_path / "r.yaml", "name: shared\nbackend: {kind: sim, rpm: 600, tpm: 90000}\n"
                                      "stages:\n  - generate: {template: t.j2, count: 4}\n")
    recipe = load_recipe(path)
    shared = share_rate_limits(recipe, 3)
    assert (shared.backend.rpm, shared.backend.tpm) == (200, 30000)
    assert (recipe.backend.rpm, recipe.backend.tpm) == (600, 90000)  # the driver's recipe is left as it was
    unlimited = load_recipe(write(tmp_path / "u.yaml", path.read_text().replace("rpm: 600, tpm: 90000", "max_attempts: 2")))
    assert share_rate_limits(unlimited, 3) is unlimited
