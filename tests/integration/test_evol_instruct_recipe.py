"""The Evol-Instruct recipe end to end on the simulated server over HTTP: lineage, rejects, cached reruns."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from tests.conftest import REPO, read_checkpoint_records, read_jsonl

SEEDS, ROUNDS = 10, 3
REASONS = {"no_information_gain", "refusal", "stop_words_only", "copies_evolution_prompt"}


def sim_recipe(tmp_path: Path) -> Path:
    """The shipped recipe on the sim with 3 rounds (its relative paths resolve from the repository root, the cwd)."""
    data = yaml.safe_load((REPO / "recipes" / "evol_instruct.yaml").read_text())
    data["backend"] = {"kind": "sim", "sim": {"latency": 0.0}}
    data["stages"][0]["evol_instruct"]["rounds"] = ROUNDS
    path = tmp_path / "evol_instruct.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_evol_instruct_recipe_on_the_sim(tmp_path: Path) -> None:
    path, out = sim_recipe(tmp_path), tmp_path / "run"
    result = run_recipe(load_recipe(path), out, limit=SEEDS)
    assert result.stats.http_requests > 0
    evolved = read_checkpoint_records(out, "00-evol_instruct")
    rejects = [r for r in read_jsonl(out / "rejects.jsonl") if r["stage"] == "00-evol_instruct"]
    assert evolved and rejects
    assert {r["reason"] for r in rejects} <= REASONS | {"evolve_invalid_json", "evolve_schema_mismatch"}

    # each round, every pool member yields one record or one reject
    outcomes: list[tuple[dict[str, Any], bool]] = [(r, True) for r in evolved] + [(r, False) for r in rejects]
    assert Counter(r["meta"]["evol"]["round"] for r, _ in outcomes) == {n: SEEDS for n in range(1, ROUNDS + 1)}

    # lineage: replay the pool; each outcome's parent is its root's current member, a success replaces it
    pool = {r["meta"]["evol"]["root"]: (r["meta"]["evol"]["root"], 0) for r, _ in outcomes}
    assert len(pool) == SEEDS
    for record, kept in sorted(outcomes, key=lambda item: item[0]["meta"]["evol"]["round"]):
        lineage = record["meta"]["evol"]
        parent_id, depth = pool[lineage["root"]]
        assert lineage["parent"] == parent_id and lineage["depth"] == depth + 1
        assert lineage["operation"].startswith(("in_depth/", "in_breadth/"))
        if kept:
            assert set(record["fields"]) == {"instruction", "response"} and record["meta"]["parents"] == [parent_id]
            assert len(record["meta"]["steps"]) == depth + 1
            pool[lineage["root"]] = (record["id"], depth + 1)

    dataset = read_jsonl(out / "dataset.jsonl")
    assert 0 < len(dataset) <= len(evolved) and {r["id"] for r in dataset} <= {r["id"] for r in evolved}

    # a second run into the same directory: finished stages come back from their checkpoints
    before = (out / "dataset.jsonl").read_bytes()
    again = run_recipe(load_recipe(path), out, limit=SEEDS)
    assert again.stats.http_requests == 0 and (out / "dataset.jsonl").read_bytes() == before

    # without checkpoints every round re-runs, and every request is replayed from the cache
    shutil.rmtree(out / "checkpoints")
    replay = run_recipe(load_recipe(path), out, limit=SEEDS)
    assert replay.stats.http_requests == 0 and replay.stats.cache_hits == result.stats.http_requests
    assert (out / "dataset.jsonl").read_bytes() == before
