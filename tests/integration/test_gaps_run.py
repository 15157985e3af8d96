"""Gap filling through `synthgen run` with the sim: records made between two anchors of a leaf, with their gap's
meta and the stage's metrics; a text that lands on an existing record is rejected as filling no gap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from tests.conftest import read_jsonl, synthgen, write

RECIPE = """
name: gaps
seed: 4
prompts_dir: {prompts}
source: {{path: {data}}}
backend: {{kind: sim, sim: {{latency: 0.0}}}}
stages:
  - embed_augment: {{operation: gaps, text_field: text, {extra}count: {count}, decode: llm{tau}}}
"""
PROMPTS = Path("prompts").resolve()


@pytest.mark.slow
def test_gaps_through_synthgen_run(tmp_path: Path) -> None:
    data = Path("recipes/data/banking77_sample.csv").resolve()
    recipe = write(tmp_path / "r.yaml", RECIPE.format(prompts=PROMPTS, data=data, extra="label_field: category, ",
                                                      count=8, tau=""))
    result = synthgen("run", str(recipe), "--out", str(tmp_path / "run"),
                      env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(tmp_path / "run" / "dataset.jsonl")
    inputs = {row["id"]: row["fields"] for row in rows if "operation" not in row["fields"]}
    made = [row for row in rows if row["fields"].get("operation") == "gaps"]
    assert len(inputs) == 160 and made
    for row in made:
        gap = row["meta"]["gap"]
        a, b = gap["anchors"]
        assert gap["anchors"] == row["meta"]["parents"] and {a, b} <= set(inputs)
        assert row["fields"]["category"] == inputs[a]["category"] == inputs[b]["category"]  # one leaf's gap
        assert 0 <= gap["emptiness_after"] <= gap["emptiness_before"] and gap["kind"] in ("pair", "cell")
        assert row["meta"]["scores"]["target_cosine"] >= 0.6  # the default tau of gaps
        assert row["fields"]["text"] not in {fields["text"] for fields in inputs.values()}
    metrics = json.loads((tmp_path / "run" / "stats.json").read_text())["metrics"]["00-embed_augment"]
    assert metrics["gaps_filled"] == len(made) and 0 <= metrics["cells_filled"] <= len(made)
    assert metrics["mean_nn_distance"]["before"] > 0 and metrics["after"]["n"] == 160 + len(made)


@pytest.mark.slow
def test_a_text_landing_on_an_existing_record_fills_no_gap(tmp_path: Path) -> None:
    # every first word x every second word: the sim's in-between text (A's first word, B's last) is always a record
    texts = [f"{verb} {noun}" for verb in ("cancel", "track", "refund") for noun in ("card", "transfer", "loan")]
    data = write(tmp_path / "data.jsonl", "\n".join(json.dumps({"text": t}) for t in texts) + "\n")
    recipe = write(tmp_path / "r.yaml", RECIPE.format(prompts=PROMPTS, data=data, extra="max_attempts: 1, ",
                                                      count=4, tau=", tau: -1.0"))
    result = run_recipe(load_recipe(recipe), tmp_path / "run")
    assert [row for row in read_jsonl(result.run_dir.dataset_path) if "operation" in row["fields"]] == []
    rejects = read_jsonl(result.run_dir.rejects_path)
    assert len(rejects) == 4 and {r["reason"] for r in rejects} <= {"gap_not_filled", "near_copy"}
    missed = [r for r in rejects if r["reason"] == "gap_not_filled"]
    assert missed and all("1.000 to the nearest kept record" in r["detail"] for r in missed)
