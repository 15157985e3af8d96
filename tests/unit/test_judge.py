"""The judge's parameters and schema, the simulator's verdicts, and named backends in fingerprints."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from synthgen.fingerprint import stage_fingerprints
from synthgen.recipe import recipe_from_data
from synthgen.sim.content import judgement, text_quality
from synthgen.stages.base import StageContext
from synthgen.stages.judge import Judge, JudgeParams
from tests.conftest import REPO
from tests.test_bad_input import BASE, assert_clean_failure, run

GOOD = ("Photosynthesis turns light into chemical energy. Plants take in carbon dioxide and water and release "
        "oxygen. It happens in the chloroplasts, where chlorophyll absorbs the light.")
JUNK = ["", "Ok.", "Sure! Here is <the answer>.", "I'm ready to assist!", "Apple pie. Apple pie. Apple pie.",
        "Write your answer to this [instruction_type], [input_type] about {topic} and {{ x }}."]
RUBRIC = {"type": "object", "properties": {"justification": {"type": "string"},
                                           "clarity": {"type": "integer", "minimum": 1, "maximum": 10}}}
PAIRWISE = {"type": "object", "properties": {"justification": {"type": "string"}, "winner": {"enum": ["A", "B"]}}}


def verdict(schema: dict, prompt: str, bias: float = 0.0, seed: int = 0) -> dict:
    text = judgement(schema, prompt, random.Random(seed), bias)
    assert text is not None
    return orjson.loads(text)


def test_sim_text_quality_ranks_junk_below_a_real_answer() -> None:
    assert text_quality(GOOD) > 0.8  # 26 words: a little short of full marks (30)
    assert all(text_quality(junk) < 0.4 for junk in JUNK), [text_quality(junk) for junk in JUNK]


def test_sim_rubric_verdict_scores_the_wrapped_text_on_the_schema_scale() -> None:
    prompt = "Grade what is between <response> and </response>. <response>\n{}\n</response>"
    good, junk = verdict(RUBRIC, prompt.format(GOOD)), verdict(RUBRIC, prompt.format(JUNK[2]))
    assert set(good) == {"justification", "clarity"} and good["clarity"] >= 8 and junk["clarity"] <= 3
    assert verdict(RUBRIC, prompt.format(GOOD), seed=5) == good  # the text decides, not the seed


def test_sim_pairwise_verdict_follows_quality_in_both_orders_unless_position_biased() -> None:
    def ask(a: str, b: str, bias: float = 0.0, seed: int = 0) -> str:
        return verdict(PAIRWISE, f"<response_a>{a}</response_a> <response_b>{b}</response_b>", bias, seed)["winner"]

    assert (ask(GOOD, JUNK[3]), ask(JUNK[3], GOOD)) == ("A", "B")
    assert (ask("Same length here.", "Other words here."), ask("Other words here.", "Same length here.")) in [("A", "B"), ("B", "A")]
    assert {ask(JUNK[3], GOOD, bias=1.0, seed=s) for s in range(5)} == {"A"}
    assert {ask(JUNK[3], GOOD, bias=0.5, seed=s) for s in range(40)} == {"A", "B"}


def test_sim_gives_no_verdict_to_other_schemas_or_prompts_without_the_text() -> None:
    assert judgement({"type": "object", "properties": {"name": {"type": "string"}}}, "<response>x</response>",
                     random.Random(0), 0.0) is None
    assert judgement(RUBRIC, "no wrapped text here", random.Random(0), 0.0) is None


def judge(**params: object) -> Judge:
    ctx = StageContext(label="01-judge", index=1, seed=0, recipe_path=Path("r.yaml"), prompts_dir=REPO / "prompts",
                       resolve=Path, key="judge")
    return Judge(JudgeParams.model_validate(params), ctx)


def test_verdict_schema_is_built_from_the_criteria_and_scale_justification_first() -> None:
    schema = judge(criteria={"clarity": "c", "depth": "d"}, scale=[0, 10]).schema()
    assert list(schema["properties"]) == ["justification", "clarity", "depth"]
    assert schema["properties"]["depth"] == {"type": "integer", "minimum": 0, "maximum": 10}
    assert schema["required"] == ["justification", "clarity", "depth"] and schema["additionalProperties"] is False
    pairwise = judge(mode="pairwise", chosen_field="a", rejected_field="b").schema()
    assert list(pairwise["properties"]) == ["justification", "winner"]
    assert judge(mode="pairwise", chosen_field="a", rejected_field="b").planned_requests(5) == 10


JUDGE = BASE + "  - judge: {PARAMS}\n"


@pytest.mark.parametrize(("params", "needles"), [
    ("{scale: [5, 1]}", ["stages[1].judge", "scale [5, 1] must be [lowest, highest]"]),
    ("{min_scores: {depth: 3}}", ["min_scores names ['depth'], which are not criteria"]),
    ("{threshold: 7}", ["threshold and min_scores must lie on the scale [1, 5]"]),
    ("{criteria: {mean: m}}", ["criteria ['mean']: use plain names"]),
    ("{mode: pairwise, chosen_field: a}", ["pairwise mode needs `chosen_field` and `rejected_field`"]),
    ("{backend: grader}", ["stages[1].judge.backend", "no backend named 'grader'; the recipe's `backends:` has []"]),
])
def test_bad_judge_parameters_fail_before_any_request(tmp_path: Path, params: str, needles: list[str]) -> None:
    code, message, out = run(tmp_path, JUDGE.replace("{PARAMS}", params))
    assert_clean_failure(code, message, out, "r.yaml", *needles)


def test_named_backends_enter_the_fingerprints_only_when_a_recipe_has_them() -> None:
    data = {"name": "x", "backend": {"kind": "sim"}, "stages": [{"judge": {}}]}
    plain = stage_fingerprints(recipe_from_data(data, "r.yaml"), 1, None)
    assert plain == stage_fingerprints(recipe_from_data({**data, "backends": {}}, "r.yaml"), 1, None)
    small = {**data, "backends": {"judge": {"kind": "sim", "model": "small"}}}
    big = {**data, "backends": {"judge": {"kind": "sim", "model": "big"}}}
    prints = {tuple(stage_fingerprints(recipe_from_data(d, "r.yaml"), 1, None)) for d in (data, small, big)}
    assert len(prints) == 3
