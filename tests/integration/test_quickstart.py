"""The quickstart recipe end to end over real HTTP, the cache on a second run, and the inspection commands."""

from __future__ import annotations

import json
from pathlib import Path

from synthgen.sim import SimServer
from tests.conftest import read_jsonl, synthgen


def test_quickstart_with_builtin_sim_then_cached_rerun(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = synthgen("run", "recipes/quickstart.yaml", "--backend", "sim", "--limit", "30", "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert f"dataset: {out / 'dataset.jsonl'}" in first.stdout
    rows = read_jsonl(out / "dataset.jsonl")
    rejects = read_jsonl(out / "rejects.jsonl")
    assert len(rows) + len(rejects) == 30
    for row in rows:
        assert {"instruction", "input", "response"} <= set(row["fields"])
        first_step, second_step = row["meta"]["steps"]
        assert first_step["leaf"].count("/") == 1 and second_step["template"] == "quickstart/response.j2"
        assert row["meta"]["parents"]
    assert len({row["id"] for row in rows}) == len(rows)
    stats = json.loads((out / "stats.json").read_text())
    unique_instructions = stats["stages"]["02-minhash_dedup"]["records_out"]
    assert stats["requests"]["http_ok"] == 30 + unique_instructions and stats["requests"]["cache_hits"] == 0
    assert stats["stages"]["00-generate"]["records_out"] == 30
    assert stats["tokens"]["prompt"] > 0 and stats["tokens"]["completion"] > 0

    dataset_before = (out / "dataset.jsonl").read_bytes()
    second = synthgen("run", "recipes/quickstart.yaml", "--backend", "sim", "--limit", "30", "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert "requests 0 (http 0," in second.stderr  # nothing sent; a finished run's stats.json is left as it was
    assert json.loads((out / "stats.json").read_text()) == stats
    assert (out / "dataset.jsonl").read_bytes() == dataset_before


def test_quickstart_against_a_separate_server_by_base_url(tmp_path: Path, sim: SimServer) -> None:
    out = tmp_path / "run"
    result = synthgen("run", "recipes/quickstart.yaml", "--base-url", sim.base_url, "--limit", "10", "--out", str(out),
                      "--fresh")
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(out / "dataset.jsonl")) + len(read_jsonl(out / "rejects.jsonl")) == 10
    assert sim.stats()["requests"] >= 20
    frozen = (out / "recipe.yaml").read_text()
    assert "limit: 10" in frozen and "kind: openai" in frozen


def test_cached_rerun_survives_a_changed_stage_downstream(tmp_path: Path, sim: SimServer) -> None:
    """Editing a later stage re-runs only that stage; generation replays from the checkpoints and cache."""
    recipe = (Path("recipes/quickstart.yaml").read_text()).replace("min_chars: 40", "min_chars: 400000")
    path = tmp_path / "r.yaml"
    path.write_text(recipe.replace("taxonomies/", str(Path.cwd() / "taxonomies") + "/"))
    out = tmp_path / "run"
    assert synthgen("run", "recipes/quickstart.yaml", "--base-url", sim.base_url, "--limit", "5", "--out", str(out)).returncode == 0
    sent = sim.stats()["requests"]
    result = synthgen("run", str(path), "--base-url", sim.base_url, "--limit", "5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sim.stats()["requests"] == sent
    assert read_jsonl(out / "dataset.jsonl") == []
    assert {r["reason"] for r in read_jsonl(out / "rejects.jsonl")} == {"too_short"}


def test_render_prints_prompts_without_a_backend() -> None:
    result = synthgen("render", "recipes/quickstart.yaml", "-n", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("--- prompt") == 3
    assert result.stdout.count("[system]") == 3 and "Task category:" in result.stdout


def test_taxonomy_show_prints_leaf_probabilities() -> None:
    result = synthgen("taxonomy", "show", "taxonomies/quickstart.yaml")
    assert result.returncode == 0, result.stderr
    assert "creative" in result.stdout and "%" in result.stdout
