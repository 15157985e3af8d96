"""The LLM stage kind: a stage that only says what to ask gets re-asks, rejects and provenance from the base."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from synthgen.aio import LoopThread
from synthgen.backends.base import ChatRequest, Completion
from synthgen.errors import RetryableBackendError
from synthgen.record import Record
from synthgen.runtime import Runtime
from synthgen.stages.base import StageContext, StageParams
from synthgen.stages.llm import Ask, LLMStage, Reading
from synthgen.validation import OutputSchema

SCHEMA = OutputSchema({"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]})


class Title(LLMStage):
    """A tiny LLM stage: one ask per record for a JSON title, re-asked twice; it has no other code."""

    name = "title"

    def asks(self, records: Iterable[Record]) -> Iterator[tuple[Record, Ask]]:
        for record in records:
            messages = [{"role": "user", "content": record.fields["text"]}]
            yield record, Ask("title.j2", messages, {"temperature": 0.0}, (self.ctx.seed, self.ctx.key, record.id),
                              Reading(SCHEMA, max_retries=2))


class ScriptedBackend:
    """Answers by the marker in the prompt; `flaky` is invalid JSON on the first attempt only."""

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> Completion:
        self.requests.append(request)
        text = request.messages[-1]["content"]
        if text == "down":
            raise RetryableBackendError("http_503", "unavailable")
        if text == "long":
            return Completion('{"title": "cut', "length", 5, 16)
        if text == "empty":
            return Completion("  ", "stop", 5, 0)
        if text == "bad" or (text == "flaky" and request.attempt == 0):
            return Completion("not json", "stop", 5, 2)
        return Completion(json.dumps({"title": text.upper()}), "stop", 5, 3)

    async def aclose(self) -> None:
        """Nothing to release."""


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def stage(backend: ScriptedBackend) -> Iterator[tuple[Title, list[tuple[Record, str, str | None]]]]:
    loop = LoopThread()
    rejects: list[tuple[Record, str, str | None]] = []
    ctx = StageContext(label="01-title", index=1, seed=3, recipe_path=Path("r.yaml"), prompts_dir=Path("."),
                       resolve=Path, runtime=Runtime(backend, loop, "fake-model", "fake", max_pending=4),
                       reject=lambda record, reason, detail: rejects.append((record, reason, detail)))
    yield Title(StageParams(), ctx), rejects
    loop.close()


def records(*texts: str) -> list[Record]:
    return [Record(f"r{i}", {"text": text}, {"line": i}) for i, text in enumerate(texts)]


def test_answers_become_records_with_provenance(stage: tuple[Title, list], backend: ScriptedBackend) -> None:
    title, rejects = stage
    made = list(title.run(records("owls", "tides")))
    assert [r.fields for r in made] == [{"text": "owls", "title": "OWLS"}, {"text": "tides", "title": "TIDES"}]
    assert rejects == [] and title.ctx.stats.reasks == 0
    step = made[0].meta["steps"][0]
    request = next(r for r in backend.requests if r.messages[-1]["content"] == "owls")
    assert step == {"stage": "01-title", "template": "title.j2", "backend": "fake", "model": "fake-model",
                    "sampling": {"temperature": 0.0, "seed": request.params["seed"]}, "sample": 0, "attempt": 0,
                    "request": request.key(), "finish_reason": "stop", "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
    assert made[0].meta["parents"] == ["r0"] and made[0].meta["line"] == 0
    assert made[0].id != made[1].id


def test_bad_output_is_asked_again_with_a_new_seed(stage: tuple[Title, list], backend: ScriptedBackend) -> None:
    title, rejects = stage
    (made,) = title.run(records("flaky"))
    assert made.fields["title"] == "FLAKY" and made.meta["steps"][0]["attempt"] == 1
    first, second = backend.requests
    assert (first.attempt, second.attempt) == (0, 1) and first.params["seed"] != second.params["seed"]
    assert made.meta["steps"][0]["request"] == second.key() != first.key()
    assert title.ctx.stats.reasks == 1 and rejects == []


@pytest.mark.parametrize(("text", "reason", "requests", "detail"), [
    ("bad", "invalid_json", 3, "; raw: not json"),
    ("long", "truncated", 3, 'finish_reason=length; raw: {"title": "cut'),
    ("empty", "empty_output", 3, "finish_reason=stop; raw:   "),
    ("down", "backend_http_503", 1, "http_503: unavailable"),  # the backend already retried: no re-ask
])
def test_failures_are_rejected_with_reason_and_raw_text(stage: tuple[Title, list], backend: ScriptedBackend, text: str,
                                                        reason: str, requests: int, detail: str) -> None:
    title, rejects = stage
    assert list(title.run(records(text))) == []
    ((record, got, message),) = rejects
    assert got == reason and message is not None and message.endswith(detail)
    assert len(backend.requests) == requests and title.ctx.stats.reasks == requests - 1
    assert record.fields == {"text": text} and record.meta["parents"] == ["r0"]
    step = record.meta["steps"][0]
    assert step["attempt"] == requests - 1 and step["request"] == backend.requests[-1].key()
    assert ("finish_reason" in step) == (reason != "backend_http_503")


def test_outputs_keep_input_order_around_rejects(stage: tuple[Title, list]) -> None:
    title, rejects = stage
    made = list(title.run(records("a", "bad", "b", "down", "c")))
    assert [r.fields["title"] for r in made] == ["A", "B", "C"]
    assert [reason for _, reason, _ in rejects] == ["invalid_json", "backend_http_503"]
