"""The generate stage: samples, structured output, retries of invalid output, provenance; its request window."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, cast

import pydantic
import pytest

from synthgen.aio import LoopThread
from synthgen.backends.base import Backend
from synthgen.errors import FatalBackendError
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.runtime import Runtime
from synthgen.stats import RunStats
from tests.conftest import read_jsonl, write


class Pair(pydantic.BaseModel):
    """A schema given as a pydantic model (`schema_model: tests.unit.test_generate:Pair`)."""

    question: str
    difficulty: int = pydantic.Field(ge=1, le=3)


def recipe_file(tmp_path: Path, stage: str, sim: str = "{latency: 0.0}") -> Path:
    write(tmp_path / "prompts" / "ask.j2", "{% block system %}Shared rules.{% endblock %}{% block user %}Ask about {{ topic }}.{% endblock %}")
    return write(tmp_path / "recipes" / "r.yaml", f"""
name: gen
seed: 1
backend: {{kind: sim, sim: {sim}, max_attempts: 2, retry_initial: 0.001}}
stages:
  - generate:
      template: ask.j2
      count: 6
{stage}
""")


def test_n_samples_per_prompt_have_distinct_ids_and_seeds(tmp_path: Path) -> None:
    path = recipe_file(tmp_path, "      n: 3\n      taxonomy: tax.yaml")
    write(tmp_path / "tax.yaml", "children:\n  - id: only\n    placeholders: {topic: [owls, tides]}\n")
    result = run_recipe(load_recipe(path), tmp_path / "run")
    rows = read_jsonl(result.run_dir.dataset_path)
    assert len(rows) == 18 and len({r["id"] for r in rows}) == 18
    steps = [r["meta"]["steps"][0] for r in rows]
    assert sorted(s["sample"] for s in steps) == sorted([0, 1, 2] * 6)
    assert len({s["sampling"]["seed"] for s in steps}) == 18
    assert {s["placeholders"]["topic"] for s in steps} <= {"owls", "tides"}
    assert all(s["leaf"] == "only" and s["template"] == "ask.j2" for s in steps)


def test_schema_from_a_pydantic_model(tmp_path: Path) -> None:
    path = recipe_file(tmp_path, "      schema_model: tests.unit.test_generate:Pair\n      taxonomy: tax.yaml")
    write(tmp_path / "tax.yaml", "placeholders: {topic: [owls]}\nchildren: [{id: a}]\n")
    result = run_recipe(load_recipe(path), tmp_path / "run")
    rows = read_jsonl(result.run_dir.dataset_path)
    assert len(rows) == 6
    for row in rows:
        Pair.model_validate(row["fields"])


@pytest.mark.parametrize(("fault", "reason"), [("invalid_json", {"invalid_json", "schema_mismatch"}), ("truncated", {"truncated"})])
def test_invalid_output_is_asked_again_then_rejected_with_raw_text(tmp_path: Path, fault: str, reason: set[str]) -> None:
    stage = "      max_retries: 2\n      taxonomy: tax.yaml\n      schema: {type: object, properties: {q: {type: string}}, required: [q]}"
    path = recipe_file(tmp_path, stage, sim=f"{{latency: 0.0, faults: {{{fault}: 1.0}}}}")
    write(tmp_path / "tax.yaml", "placeholders: {topic: [owls]}\nchildren: [{id: a}]\n")
    result = run_recipe(load_recipe(path), tmp_path / "run")
    assert read_jsonl(result.run_dir.dataset_path) == []
    rejects = read_jsonl(result.run_dir.rejects_path)
    assert len(rejects) == 6 and {r["reason"] for r in rejects} <= reason
    assert all("raw: " in r["detail"] for r in rejects)
    assert result.stats.http_ok == 18  # 1 + max_retries attempts, each with a new sample seed


def test_rendering_error_names_the_input_line(tmp_path: Path) -> None:
    from synthgen.errors import TemplateError

    write(tmp_path / "prompts" / "t.j2", "Answer {{ record.question }}")
    write(tmp_path / "in.jsonl", '{"question": "why?"}\n{"other": 1}\n')
    path = write(tmp_path / "recipes" / "r.yaml", f"""
name: gen
backend: {{kind: sim, sim: {{latency: 0.0}}}}
source: {{path: {tmp_path / 'in.jsonl'}}}
stages:
  - generate: {{template: t.j2}}
""")
    with pytest.raises(TemplateError, match=r"t.j2.*question.*in.jsonl:2"):
        run_recipe(load_recipe(path), tmp_path / "run")
    assert not (tmp_path / "run" / "dataset.jsonl").exists()


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


def window(loop: LoopThread, max_pending: int, reorder_limit: int = 100) -> Runtime:
    """A runtime whose only part in use is the request window (`Runtime.stream`)."""
    return Runtime(cast(Backend, None), loop, "fake-model", "fake", max_pending=max_pending, reorder_limit=reorder_limit)


def test_a_stuck_first_request_holds_back_release_but_not_the_requests_behind_it(loop: LoopThread) -> None:
    runtime, stats = window(loop, max_pending=4, reorder_limit=10), RunStats()
    submitted = 0
    seen: dict[str, int] = {}

    async def first() -> int:
        deadline = time.monotonic() + 5  # an in-order window never submits more than max_pending: give up then
        while submitted <= runtime.reorder_limit and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # room for submissions beyond the bound to show
        seen.update(submitted=submitted, finished=stats.finished_requests)
        return 0

    async def other(i: int) -> int:
        return i

    def work() -> Iterator[Coroutine[Any, Any, int]]:
        nonlocal submitted
        for i in range(100):
            submitted += 1
            yield first() if i == 0 else other(i)

    assert list(runtime.stream(work(), stats)) == list(range(100))
    # behind the stuck request, work went on until the reorder buffer was full, and no further
    assert runtime.reorder_limit < seen["submitted"] <= runtime.reorder_limit + runtime.max_pending
    assert seen["finished"] == seen["submitted"] - 1  # counted as they finished, before any was released
    assert stats.planned_requests == stats.finished_requests == 100


def test_a_failed_request_stops_the_window_at_once_and_cancels_the_unfinished(loop: LoopThread) -> None:
    cancelled = threading.Event()

    async def job(i: int) -> int:
        if i == 2:
            raise FatalBackendError(401, "invalid api key", "set OPENAI_API_KEY")
        if i == 0:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return i

    began = time.monotonic()
    with pytest.raises(FatalBackendError, match="401"):
        list(window(loop, max_pending=8).stream((job(i) for i in range(4)), RunStats()))
    assert cancelled.wait(5), "the stuck first request was not cancelled"
    assert time.monotonic() - began < 15  # not after the stuck request's 30 s
