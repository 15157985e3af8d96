"""best_of_n: candidates of one prompt are grouped (by parent, by the drawing step, or by fields), the best kept
with what it cost, the rest rejected with a reason; the funnel lands in stats.metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from synthgen.errors import ConfigError
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.select import BestOfN, BestOfNParams
from synthgen.stats import RunStats
from tests.test_bad_input import BASE, assert_clean_failure
from tests.test_bad_input import run as bad_input_run

Rejects = list[tuple[str, str, str | None]]


def context(tmp_path: Path, rejects: Rejects) -> StageContext:
    return StageContext(label="03-best_of_n", index=3, seed=1, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                        resolve=lambda name: tmp_path / name, stats=RunStats(), workdir=tmp_path,
                        reject=lambda record, reason, detail: rejects.append((record.id, reason, detail)))


def candidate(rid: str, parent: str, mean: float | None, **criteria: float) -> Record:
    meta: dict[str, Any] = {"parents": [parent], "steps": []}
    if mean is not None:
        meta["scores"] = {"judge": {**criteria, "mean": mean}}
    return Record(rid, {"instruction": f"task {parent}", "response": f"answer {rid}"}, meta)


def run_stage(tmp_path: Path, cls: Any, records: list[Record], **params: Any) -> tuple[list[Record], Rejects, dict[str, Any]]:
    """Run stage class `cls` (scoring by the judge's `mean` unless `params` say otherwise): output, rejects, metrics."""
    rejects: Rejects = []
    ctx = context(tmp_path, rejects)
    stage = cls(cls.Params.model_validate({"score": "judge", **params}), ctx)
    made = list(stage.run(records))
    return made, rejects, ctx.stats.metrics[ctx.label]


def run(tmp_path: Path, records: list[Record], **params: Any) -> tuple[list[Record], Rejects, dict[str, Any]]:
    return run_stage(tmp_path, BestOfN, records, **params)


GROUPS = [candidate("a0", "A", 2.0), candidate("a1", "A", 4.5), candidate("a2", "A", 3.0), candidate("a3", "A", 4.5),
          candidate("b0", "B", 1.0), candidate("b1", "B", 5.0)]


def test_keeps_the_best_of_each_prompt_with_its_cost(tmp_path: Path) -> None:
    kept, rejects, funnel = run(tmp_path, GROUPS)
    assert [r.id for r in kept] == ["a1", "b1"]  # a tie keeps the first candidate
    assert kept[0].meta["best_of"] == {"candidates": 4, "rank": 1, "scores": [2.0, 4.5, 3.0, 4.5]}
    assert kept[0].fields == GROUPS[1].fields and kept[0].meta["parents"] == ["A"]
    assert rejects == [("a3", "not_best", "judge=4.5: rank 2 of 4 (best 4.5)"), ("a2", "not_best", "judge=3: rank 3 of 4 (best 4.5)"),
                       ("a0", "not_best", "judge=2: rank 4 of 4 (best 4.5)"), ("b0", "not_best", "judge=1: rank 2 of 2 (best 5)")]
    assert funnel == {"candidates": 6, "prompts": 2, "kept": 2, "candidates_per_kept": 3.0}


def test_a_criterion_can_rank_instead_of_the_mean(tmp_path: Path) -> None:
    records = [candidate("a0", "A", 4.0, accuracy=1.0), candidate("a1", "A", 2.0, accuracy=5.0)]
    kept, _, _ = run(tmp_path, records, score="judge.accuracy")
    assert [r.id for r in kept] == ["a1"]


def test_threshold_drops_a_best_that_is_still_bad(tmp_path: Path) -> None:
    kept, rejects, funnel = run(tmp_path, GROUPS, threshold=4.8)
    assert [r.id for r in kept] == ["b1"]
    assert ("a1", "below_threshold", "judge=4.5 < threshold 4.8") in rejects
    assert funnel["candidates_per_kept"] == 6.0


def test_keep_above_keeps_every_good_candidate(tmp_path: Path) -> None:
    kept, rejects, _ = run(tmp_path, GROUPS, keep="above", threshold=3.0)
    assert [(r.id, r.meta["best_of"]["rank"]) for r in kept] == [("a1", 1), ("a3", 2), ("a2", 3), ("b1", 1)]
    assert {rid for rid, reason, _ in rejects if reason == "below_threshold"} == {"a0", "b0"}


def test_keep_above_needs_a_threshold() -> None:
    with pytest.raises(ValidationError, match="`keep: above` needs a `threshold`"):
        BestOfNParams.model_validate({"score": "judge", "keep": "above"})


def test_drawn_candidates_group_by_their_drawing_step(tmp_path: Path) -> None:
    def drawn(rid: str, topic: str, mean: float) -> Record:
        step = {"template": "t.j2", "leaf": "x", "placeholders": {"topic": topic}, "sample": int(rid[-1])}
        return Record(rid, {"response": rid}, {"parents": [], "steps": [step], "scores": {"judge": {"mean": mean}}})

    kept, _, funnel = run(tmp_path, [drawn("a0", "cats", 1), drawn("a1", "cats", 3), drawn("b0", "dogs", 2), drawn("b1", "dogs", 1)])
    assert [r.id for r in kept] == ["a1", "b0"]
    assert funnel["prompts"] == 2


def test_group_by_fields(tmp_path: Path) -> None:
    records = [Record(f"r{i}", {"q": "same" if i < 3 else "other"}, {"parents": [f"p{i}"], "scores": {"judge": {"mean": i}}})
               for i in range(5)]
    kept, _, _ = run(tmp_path, records, group_by=["q"])
    assert [r.id for r in kept] == ["r2", "r4"]


def test_unscored_candidates_are_rejected(tmp_path: Path) -> None:
    kept, rejects, _ = run(tmp_path, [candidate("a0", "A", None), candidate("a1", "A", 3.0)])
    assert [r.id for r in kept] == ["a1"]
    assert rejects == [("a0", "unscored", "no meta.scores['judge']['mean']; scores held: []")]


def test_a_score_no_record_has_is_a_recipe_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stages\[3\].best_of_n.score: no record has the score 'jduge'"):
        run(tmp_path, GROUPS, score="jduge")


@pytest.mark.parametrize(("stage", "needles"), [
    ("best_of_n: {score: jduge}", ("stages[1].best_of_n.score: no record has the score 'jduge' in meta.scores",
                                   "put a judge stage that writes it before this one")),
    ("preference_pairs: {score: judge, prompt_fields: [text], response_field: answer}",
     ("stages[1].preference_pairs.response_field: no record has the field 'answer'",)),
])
def test_cli_names_the_stage_param_that_reads_nothing(tmp_path: Path, stage: str, needles: tuple[str, ...]) -> None:
    code, message, out = bad_input_run(tmp_path, BASE.replace("count: 3", "count: 3\n      n: 2") + f"  - {stage}\n")
    assert code == 2 and "error: " in message
    assert_clean_failure(code, message, out, *needles)
