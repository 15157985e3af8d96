"""The Evol-Instruct stage: the four elimination cases, the operation draw, and the pool over rounds (fake backend)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from synthgen.aio import LoopThread
from synthgen.backends.base import ChatRequest, Completion
from synthgen.errors import InputError, RetryableBackendError
from synthgen.recipe import load_recipe
from synthgen.recipes.evol_instruct import (
    EvolInstruct,
    EvolInstructParams,
    copied_prompt_words,
    eliminate,
    is_refusal,
    is_stop_words_only,
)
from synthgen.record import Record
from synthgen.runtime import Runtime
from synthgen.stages.base import StageContext
from tests.conftest import REPO

OPERATIONS = {"in_depth/add_constraints", "in_depth/deepening", "in_depth/concretizing", "in_depth/reasoning",
              "in_depth/complicate_input", "in_breadth/breadth"}


@pytest.mark.parametrize("text", ["#Rewritten Prompt#: Explain tides.", "Answer the given prompt in French.",
                                  "#GIVEN PROMPT# Write a poem.", "Follow the created-prompt format.",
                                  "Compare the rewritten\nprompts below.", "Use given_prompt as input."])
def test_copied_prompt_words_are_found(text: str) -> None:
    assert copied_prompt_words(text)


@pytest.mark.parametrize("text", ["Rewrite this prompt in plain English.", "Given a prompt, list its verbs.",
                                  "Explain prompt engineering to a beginner.", "Who created promptly the first map?",
                                  "Given the list of prompts, pick one."])
def test_ordinary_instructions_copy_nothing(text: str) -> None:
    assert copied_prompt_words(text) is None


def test_refusal_is_sorry_under_80_words() -> None:
    assert is_refusal("I'm sorry, but I cannot help with that request.")
    assert is_refusal("SORRY. " + "word " * 78)  # 79 words
    assert not is_refusal("Sorry " + "word " * 79)  # 80 words: long enough to be an answer
    assert not is_refusal("Tides rise and fall twice a day because of the Moon.")


def test_stop_words_only() -> None:
    for text in ("", "...!?", "The, and of it! Is it?", "It is what it is, and so on."):
        assert is_stop_words_only(text), text
    for text in ("The cat.", "42", "Paris is the capital of France.", "It is what it is, naïvely."):
        assert not is_stop_words_only(text), text


def test_eliminate_names_the_first_failure() -> None:
    def reason(equal: bool, response: str) -> str | None:
        verdict = eliminate(equal, response)
        return verdict[0] if verdict else None

    assert reason(False, "Tides are caused by the Moon's gravity pulling on the oceans.") is None
    assert reason(True, "Tides are caused by the Moon's gravity.") == "no_information_gain"
    assert reason(True, "Sorry, I cannot.") == "no_information_gain"  # the judge's verdict comes first
    assert reason(False, "Sorry, I cannot.") == "refusal"
    assert reason(False, "So, it is what it is.") == "stop_words_only"


def make_stage(seed: int = 7, runtime: Runtime | None = None, rejects: list[tuple[Record, str]] | None = None,
               **params: Any) -> EvolInstruct:
    sink = rejects if rejects is not None else []
    ctx = StageContext(label="00-evol_instruct", index=0, seed=seed, recipe_path=REPO / "recipes" / "evol_instruct.yaml",
                       prompts_dir=REPO / "prompts", resolve=lambda path: REPO / path, runtime=runtime,
                       reject=lambda record, reason, detail: sink.append((record, reason)))
    return EvolInstruct(EvolInstructParams.model_validate(params), ctx)


def test_operations_are_drawn_uniformly() -> None:
    stage = make_stage()
    draws = 12_000
    counts = Counter(stage.choose(round_, f"rec{i}")[0].path for i in range(draws // 3) for round_ in (1, 2, 3))
    assert set(counts) == OPERATIONS
    for operation, count in counts.items():
        assert abs(count / draws - 1 / 6) < 0.015, (operation, count)


def test_operation_draws_are_deterministic() -> None:
    first, again, other = make_stage(seed=7), make_stage(seed=7), make_stage(seed=8)
    picks = [first.choose(1, f"rec{i}") for i in range(60)]
    assert picks == [again.choose(1, f"rec{i}") for i in range(60)]
    assert [leaf.path for leaf, _ in picks] != [leaf.path for leaf, _ in (other.choose(1, f"rec{i}") for i in range(60))]
    assert [leaf.path for leaf, _ in picks] != [leaf.path for leaf, _ in (first.choose(2, f"rec{i}") for i in range(60))]
    complicated = [values for leaf, values in picks if leaf.path == "in_depth/complicate_input"]
    assert complicated and all(set(values) == {"data_format"} for values in complicated)


class ScriptedBackend:
    """Answers each request by kind (evolve / judge / answer) from markers in the instruction it carries."""

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> Completion:
        self.requests.append(request)
        user = request.messages[-1]["content"]
        if request.schema and "equal" in request.schema["properties"]:
            return Completion(json.dumps({"equal": "SAME" in user.rsplit("Second instruction:", 1)[1]}))
        if request.schema:
            given = user.rsplit("#Given Prompt#:", 1)[1].strip()
            if "FLAKY" in given:
                raise RetryableBackendError("http_503", "unavailable")
            if "BROKEN" in given:
                return Completion("not json")
            evolved = f"#Rewritten Prompt#: {given}" if "COPY" in given else f"{given} Then justify each step."
            return Completion(json.dumps({"instruction": evolved}))
        if "REFUSE" in user:
            return Completion("Sorry, I can't do that.")
        if "MUTE" in user:
            return Completion("It is what it is, and so on!")
        if "YESNO" in user:
            return Completion("No.")
        if "LONG" in user:
            return Completion("Step one: gather the data. Step two: sort it by", finish_reason="length")
        return Completion("Tides follow the Moon: its gravity raises a bulge of water on the near and far sides.")

    async def aclose(self) -> None:
        """Nothing to release."""


SEEDS = {
    "ok": "Explain tides to a curious child.", "copy": "COPY the recipe for bread dough.",
    "refuse": "REFUSE to describe the weather today.", "mute": "MUTE answer: describe a quiet library.",
    "same": "SAME question about the history of tea.", "flaky": "FLAKY request about renewable energy.",
    "broken": "BROKEN output about planetary orbits.",
}
REASONS = {"copy": "copies_evolution_prompt", "refuse": "refusal", "mute": "stop_words_only", "same": "no_information_gain",
           "flaky": "backend_http_503", "broken": "evolve_invalid_json"}


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    loop = LoopThread()
    yield Runtime(ScriptedBackend(), loop, "fake-model", "fake", max_pending=64)
    loop.close()


def seed_records() -> list[Record]:
    return [Record(key, {"instruction": text, "topic": key}, {"source": "seeds.jsonl", "line": i + 1})
            for i, (key, text) in enumerate(SEEDS.items())]


def test_pool_over_rounds(runtime: Runtime) -> None:
    rejects: list[tuple[Record, str]] = []
    records = list(make_stage(runtime=runtime, rejects=rejects, rounds=2).run(seed_records()))
    first, second = records
    assert first.meta["evol"] == {"root": "ok", "parent": "ok", "operation": first.meta["evol"]["operation"], "round": 1,
                                  "depth": 1, "truncated": False}
    assert second.meta["evol"]["parent"] == first.id and second.meta["evol"]["depth"] == 2
    assert {first.meta["evol"]["operation"], second.meta["evol"]["operation"]} <= OPERATIONS
    assert second.fields == {"instruction": SEEDS["ok"] + " Then justify each step." * 2, "response": first.fields["response"]}
    assert len(second.meta["steps"]) == 2 and second.meta["source"] == "seeds.jsonl"
    assert set(second.meta["steps"][1]["requests"]) == {"evolve", "answer", "judge"}
    # every failure is rejected each round with its reason, and its parent (the original) is evolved again
    assert len(rejects) == 12
    for record, reason in rejects:
        root = record.meta["evol"]["root"]
        assert reason == REASONS[root] and record.meta["evol"]["parent"] == root
    assert Counter(record.meta["evol"]["round"] for record, _ in rejects) == {1: 6, 2: 6}
    copy = next(record for record, reason in rejects if reason == "copies_evolution_prompt")
    assert "response" not in copy.fields  # never answered: case 4 is checked before spending two requests
    backend = runtime.backend
    assert isinstance(backend, ScriptedBackend)
    assert len(backend.requests) == 2 * (7 + 2 * 4)  # per round: 7 evolutions, then answer + judge for 4


def test_originals_and_input_fields(runtime: Runtime) -> None:
    records = list(make_stage(runtime=runtime, rounds=1, include_originals=True, keep_input=True).run(seed_records()))
    assert [r.id for r in records[:7]] == list(SEEDS) and all(r.meta["evol"]["round"] == 0 for r in records[:7])
    evolved = records[7:]
    assert len(evolved) == 1 and evolved[0].fields["topic"] == "ok" and "response" in evolved[0].fields


def test_missing_instruction_stops_with_the_input_line(runtime: Runtime) -> None:
    bad = Record("x", {"text": "no instruction here"}, {"source": "seeds.jsonl", "line": 3})
    with pytest.raises(InputError, match=r"seeds.jsonl:3.*'instruction'"):
        list(make_stage(runtime=runtime).run([bad]))


@pytest.mark.parametrize("answer", ["Yes.", "No.", "OK", "okay!", "Yes, it is.", "No, it is not."])
def test_yes_no_and_ok_answers_are_not_stop_words(answer: str) -> None:
    assert not is_stop_words_only(answer) and eliminate(False, answer) is None


def test_answer_budget_is_the_reference_codes_2048_tokens() -> None:
    assert EvolInstructParams().answer_sampling.max_tokens == 2048
    recipe = load_recipe(REPO / "recipes" / "evol_instruct.yaml")
    params = recipe.stage_specs[0].params
    assert isinstance(params, EvolInstructParams) and params.answer_sampling.max_tokens == 2048


def test_truncated_and_yes_no_answers_keep_their_evolution(runtime: Runtime) -> None:
    seeds = [Record("long", {"instruction": "LONG plan for a research project."}),
             Record("yesno", {"instruction": "YESNO: is the Moon larger than Mars?"})]
    rejects: list[tuple[Record, str]] = []
    records = {r.meta["evol"]["root"]: r for r in make_stage(runtime=runtime, rejects=rejects, rounds=1).run(seeds)}
    assert rejects == [] and set(records) == {"long", "yesno"}
    assert records["long"].meta["evol"]["truncated"] is True and records["long"].fields["response"].endswith("sort it by")
    assert records["yesno"].meta["evol"]["truncated"] is False and records["yesno"].fields["response"] == "No."


def test_input_is_appended_to_the_instruction_as_in_the_reference_code(runtime: Runtime) -> None:
    seed = Record("s", {"instruction": "Sort the numbers below.", "input": "3, 1, 2"})
    records = list(make_stage(runtime=runtime, rounds=1, keep_input=True).run([seed]))
    backend = runtime.backend
    assert isinstance(backend, ScriptedBackend)
    evolve, judge = (next(r.messages[-1]["content"] for r in backend.requests if marker in r.messages[-1]["content"])
                     for marker in ("#Given Prompt#", "First instruction:"))
    assert "#Given Prompt#:\nSort the numbers below.\n3, 1, 2" in evolve
    assert "First instruction:\nSort the numbers below.\n3, 1, 2\n" in judge
    (evolved,) = records
    assert evolved.fields["instruction"] == "Sort the numbers below.\n3, 1, 2 Then justify each step."
    assert "input" not in evolved.fields  # the input lives in the evolved instruction now
    assert load_recipe(REPO / "recipes" / "evol_instruct.yaml").source.fields is None  # type: ignore[union-attr]


def test_include_originals_answers_them(runtime: Runtime) -> None:
    seeds = [*seed_records(), Record("input", {"instruction": "Sort the numbers below.", "input": "3, 1, 2"})]
    records = list(make_stage(runtime=runtime, rounds=1, include_originals=True).run(seeds))
    originals = [r for r in records if r.meta["evol"]["round"] == 0]
    assert [r.id for r in originals] == [s.id for s in seeds]
    assert all(isinstance(r.fields.get("response"), str) and r.fields["response"] for r in originals)
    assert originals[-1].fields["input"] == "3, 1, 2" and originals[-1].meta["steps"][0]["round"] == 0
    backend = runtime.backend
    assert isinstance(backend, ScriptedBackend)
    asked = [r.messages[-1]["content"] for r in backend.requests if not r.schema]
    assert "Sort the numbers below.\n3, 1, 2" in asked
