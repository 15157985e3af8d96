"""The Self-Instruct recipe end to end on the simulated server over HTTP, with the real seed tasks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from synthgen.pipeline import run_recipe
from synthgen.recipe import Recipe, load_recipe
from synthgen.stages.source import Source
from tests.conftest import REPO, read_checkpoint_records, read_jsonl, write

REASONS = {"too_few_words", "too_many_words", "blacklisted_word", "write_a_program", "starts_with_punctuation",
           "starts_with_non_ascii", "rouge_similar", "target_reached", "conflicting_outputs", "no_valid_instances",
           "invalid_json", "schema_mismatch", "truncated", "exact_duplicate"}


def sim_recipe(tmp_path: Path, stage: dict[str, object], sim: str = "{latency: 0.0}") -> Recipe:
    """recipes/self_instruct.yaml on the sim with other stage parameters, reading the real seed file."""
    text = (REPO / "recipes" / "self_instruct.yaml").read_text(encoding="utf-8")
    text = text.replace("kind: openai", f"kind: sim\n  sim: {sim}\n  max_attempts: 1")
    text = text.replace("path: data/", f"path: {REPO / 'recipes' / 'data'}/")
    text = text.replace("name: self_instruct", f"name: self_instruct\nprompts_dir: {REPO / 'prompts'}")
    for key, value in stage.items():
        lines = [line for line in text.splitlines() if not line.strip().startswith(f"{key}:")]
        text = "\n".join(line + (f"\n      {key}: {value}" if line.strip() == "- self_instruct:" else "") for line in lines)
    return load_recipe(write(tmp_path / "recipes" / "self_instruct.yaml", text))


def test_repo_recipe_finds_the_seed_tasks() -> None:
    recipe = load_recipe(REPO / "recipes" / "self_instruct.yaml")
    assert recipe.source is not None and recipe.resolve(recipe.source.path).is_file()
    assert [spec.name for spec in recipe.stage_specs] == ["self_instruct", "exact_dedup", "explode", "select_fields"]


def test_bootstrap_run_then_cached_rerun(tmp_path: Path) -> None:
    # 8 requests of 1-2 instructions: ~10 survivors a round, so the loop needs rounds with generated examples
    recipe = sim_recipe(tmp_path, {"target": 15, "requests_per_round": 8, "instructions_per_request": 2})
    result = run_recipe(recipe, tmp_path / "run")
    rows = read_checkpoint_records(result.run_dir.path, "01-exact_dedup")  # the tasks, before explode makes instance rows
    assert len(rows) == 15 and result.records == sum(len(row["fields"]["instances"]) for row in rows)
    assert result.stats.http_requests > 30
    assert recipe.source is not None
    seeds = {record.id for record in Source(recipe.source, recipe.resolve(recipe.source.path))}
    for row in rows:
        fields, meta = row["fields"], row["meta"]
        earlier = {r["id"] for r in rows if r["meta"]["round"] < meta["round"]}
        assert isinstance(fields["instruction"], str) and isinstance(fields["is_classification"], bool)
        assert fields["instances"] and all(set(i) == {"input", "output"} and i["output"] for i in fields["instances"])
        parents = meta["parents"]
        assert len(parents) == len(set(parents)) == 8
        generated = [p for p in parents if p not in seeds]
        assert set(generated) <= earlier and len(generated) == (0 if meta["round"] == 0 else 2)
        templates = [step["template"] for step in meta["steps"]]
        first = "instances_output_first" if fields["is_classification"] else "instances_input_first"
        assert templates == ["self_instruct/instructions.j2", "self_instruct/classify.j2", f"self_instruct/{first}.j2"]
        assert all(len(step["request"]) == 64 and step["model"] == "sim-model" for step in meta["steps"])
    summary = json.loads((result.run_dir.checkpoints / "00-self_instruct.summary.json").read_text())
    assert summary["stopped_by"] == "target" and summary["rounds"] >= 2 and summary["accepted"] == 15
    rejects = read_jsonl(result.run_dir.rejects_path)
    assert rejects and {r["reason"] for r in rejects} <= REASONS and all(r["detail"] for r in rejects)

    dataset = result.run_dir.dataset_path.read_bytes()
    again = run_recipe(recipe, tmp_path / "run")
    assert again.stats.http_requests == 0 and again.run_dir.dataset_path.read_bytes() == dataset
    shutil.rmtree(result.run_dir.checkpoints)  # no stage checkpoints: the loop runs again, every answer from the cache
    replay = run_recipe(recipe, tmp_path / "run")
    assert replay.stats.http_requests == 0 and replay.stats.cache_hits == result.stats.http_ok
    assert replay.run_dir.dataset_path.read_bytes() == dataset


def test_broken_answers_are_rejects_and_max_rounds_stops_the_loop(tmp_path: Path) -> None:
    sim = "{latency: 0.0, faults: {invalid_json: 0.2, server_error: 0.1}}"
    recipe = sim_recipe(tmp_path, {"target": 1000, "max_rounds": 2, "requests_per_round": 6}, sim)
    result = run_recipe(recipe, tmp_path / "run")
    summary = json.loads((result.run_dir.checkpoints / "00-self_instruct.summary.json").read_text())
    accepted = len(read_checkpoint_records(result.run_dir.path, "00-self_instruct"))
    assert summary == {"rounds": 2, "accepted": accepted, "target": 1000, "stopped_by": "max_rounds"}
    reasons = {r["reason"] for r in read_jsonl(result.run_dir.rejects_path)}
    assert {"backend_http_500", "too_few_words"} <= reasons and reasons & {"invalid_json", "schema_mismatch"}
    assert reasons <= REASONS | {"backend_http_500"}
