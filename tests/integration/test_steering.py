"""`target:` end to end on the sim: generate until N records survive, steered away from leaves that repeat
themselves; budget and stall stops; a cut-short run resumes from the cache toward the same target."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.report import build_report
from synthgen.sim import SimConfig, SimServer
from tests.conftest import read_jsonl, synthgen, write
from tests.integration.test_ray_engine import local_ray  # noqa: F401  (a fixture)
from tests.integration.test_report import FakeEncoder

LEAVES = ("loop-a", "loop-b", "fresh-a", "fresh-b")
RATES = {"loop-a": 0.6, "loop-b": 0.6, "fresh-a": 0.05, "fresh-b": 0.05}
SIM = {"latency": 0.0, "duplicate_rate": 0.0, "leaf_duplicate_rates": RATES}

RECIPE = """
name: steered-sim
seed: 7
backend: {backend}
stages:
  - generate:
      template: ask.j2
      taxonomy: tasks.yaml
      count: {count}
      sampling: {{max_tokens: 40}}
      target: {target}
  - exact_dedup: {{fields: [text]}}
  - minhash_dedup: {{fields: [text], threshold: 0.8}}
"""


def _recipe(tmp_path: Path, backend: str, target: str, count: int = 200) -> Path:
    write(tmp_path / "prompts" / "ask.j2", "Task category: {{ leaf }}. Write about {{ topic }}.")
    topics = ", ".join(f"topic{i}" for i in range(50))
    children = ", ".join(f"{{id: {leaf}}}" for leaf in LEAVES)
    write(tmp_path / "tasks.yaml", f"placeholders: {{topic: [{topics}]}}\nchildren: [{children}]\n")
    return write(tmp_path / "recipes" / "r.yaml", RECIPE.format(backend=backend, target=target, count=count))


def _steering(run: Path) -> dict:
    return json.loads((run / "stats.json").read_text())["metrics"]["00-generate"]["steering"]


def test_a_target_is_met_exactly_and_steers_away_from_repeating_leaves(tmp_path: Path) -> None:
    backend = json.dumps({"kind": "sim", "sim": SIM})
    target = "{records: 150, round: 25, novelty: {weight: 0}}"
    result = run_recipe(load_recipe(_recipe(tmp_path, backend, target, count=400)), tmp_path / "run")
    rows = read_jsonl(result.run_dir.dataset_path)
    assert len(rows) == 150 and len({row["fields"]["text"] for row in rows}) == 150
    steering = _steering(tmp_path / "run")
    assert steering["stop"] == "target_reached" and steering["records"] == 150
    rounds = steering["rounds"]
    assert rounds[0]["weights"] == {leaf: 0.25 for leaf in LEAVES}  # the taxonomy's weights first
    later = {leaf: sum(r["weights"][leaf] for r in rounds[2:]) / len(rounds[2:]) for leaf in LEAVES}
    assert max(later["loop-a"], later["loop-b"]) < 0.23 < 0.27 < min(later["fresh-a"], later["fresh-b"])
    assert all(weight >= 0.02 for r in rounds for weight in r["weights"].values())  # the floor: no leaf starves
    rejects = read_jsonl(result.run_dir.rejects_path)
    assert {row["reason"] for row in rejects} <= {"target_reached", "exact_duplicate", "near_duplicate"}
    assert steering["draws"] == sum(r["draws"] for r in rounds) == len(rows) + len(rejects) < 400
    surplus = sum(row["reason"] == "target_reached" for row in rejects)
    assert surplus <= 10 and rounds[-1]["draws"] < 25  # the last round asks about what the target still needs
    page = build_report(tmp_path / "run", encoder=FakeEncoder()).read_text()  # type: ignore[arg-type]
    assert 'alt="Leaf weights per round; 00-generate: target 150, stopped by target_reached' in page


def test_per_leaf_quotas_are_met_beyond_the_total(tmp_path: Path) -> None:
    backend = json.dumps({"kind": "sim", "sim": SIM})
    target = "{records: 20, round: 20, per_leaf: {at_least: 10}, novelty: {weight: 0}}"
    result = run_recipe(load_recipe(_recipe(tmp_path, backend, target)), tmp_path / "run")
    rows = read_jsonl(result.run_dir.dataset_path)
    per_leaf = Counter(row["meta"]["steps"][0]["leaf"] for row in rows)
    assert set(per_leaf) == set(LEAVES) and min(per_leaf.values()) == 10  # the last one needed reached 10 exactly
    steering = _steering(tmp_path / "run")
    assert steering["stop"] == "target_reached" and steering["records"] == len(rows) >= 40
    assert not (tmp_path / "run" / "checkpoints" / "00-generate.steering").exists()


@pytest.mark.slow
def test_candidates_too_close_to_kept_ones_are_rejected_before_later_stages(tmp_path: Path) -> None:
    backend = json.dumps({"kind": "sim", "sim": SIM})
    target = "{records: 40, round: 20, novelty: {reject_within: 0.99}}"
    result = run_recipe(load_recipe(_recipe(tmp_path, backend, target)), tmp_path / "run")
    assert len(read_jsonl(result.run_dir.dataset_path)) == 40
    reasons = [row["reason"] for row in read_jsonl(result.run_dir.rejects_path)]
    assert "too_close" in reasons and "exact_duplicate" not in reasons  # repeats never reach the dedup stage
    rounds = _steering(tmp_path / "run")["rounds"]
    assert set(rounds[-1]["novelty"]) == set(LEAVES) and all(0 < v <= 1 for v in rounds[-1]["novelty"].values())


def test_budget_and_stall_stop_with_their_reason_in_stats_and_summary(tmp_path: Path) -> None:
    backend = json.dumps({"kind": "sim", "sim": SIM})
    path = _recipe(tmp_path, backend, "{records: 500, round: 10, novelty: {weight: 0}}", count=30)
    result = synthgen("run", str(path), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    steering = _steering(tmp_path / "run")
    assert steering["stop"] == "budget" and steering["draws"] == 30
    assert steering["records"] == len(read_jsonl(tmp_path / "run" / "dataset.jsonl")) < 500
    assert "target 500 not reached: budget (" in result.stdout + result.stderr
    assert "30 draws in 3 rounds; the stage's replay of them is among the cache hits" in result.stdout + result.stderr
    one_leaf = {"kind": "sim", "sim": {**SIM, "leaf_duplicate_rates": {"": 1.0}}}  # every answer from 4 texts
    path = _recipe(tmp_path, json.dumps(one_leaf), "{records: 50, round: 10, stall: 20, novelty: {weight: 0}}")
    run_recipe(load_recipe(path), tmp_path / "stalled")
    steering = _steering(tmp_path / "stalled")
    assert steering["stop"] == "stall" and steering["records"] == 4 and steering["draws"] < 200


def test_rounds_grow_with_the_draws_made_so_a_large_budget_takes_few_rounds(tmp_path: Path) -> None:
    backend = json.dumps({"kind": "sim", "sim": SIM})
    path = _recipe(tmp_path, backend, "{records: 5000, round: 4, novelty: {weight: 0}}", count=1200)
    run_recipe(load_recipe(path), tmp_path / "run")
    steering = _steering(tmp_path / "run")
    rounds, made = steering["rounds"], 0
    assert steering["stop"] == "budget" and steering["draws"] == sum(r["draws"] for r in rounds) == 1200
    for entry in rounds[:-1]:
        assert entry["draws"] >= max(4, made // 16)  # never less than `round`, nor than a sixteenth of the draws so far
        made += entry["draws"]
    assert len(rounds) < 80  # 300 rounds of 4 otherwise, each probing every candidate


def test_each_reask_counts_against_its_leaf(tmp_path: Path) -> None:
    backend = json.dumps({"kind": "sim", "sim": {**SIM, "faults": {"empty_content": 0.3}}})
    path = _recipe(tmp_path, backend, "{records: 60, round: 20, novelty: {weight: 0}}")
    result = run_recipe(load_recipe(path), tmp_path / "run")
    rounds = _steering(tmp_path / "run")["rounds"]
    rows = read_jsonl(result.run_dir.dataset_path) + read_jsonl(result.run_dir.rejects_path)
    attempts = Counter()
    for row in rows:  # a draw that failed every attempt is rejected with its leaf and last attempt in meta
        step = row["meta"]["steps"][0] if "steps" in row["meta"] else row["meta"]
        attempts[step["leaf"]] += step.get("attempt", 0)
    reasked = Counter()
    for entry in rounds:
        reasked.update(entry["reasked"])
    assert sum(reasked.values()) > 10 and reasked == +attempts  # every re-ask of every draw, by leaf


def test_a_cut_short_run_resumes_toward_the_same_target_without_resending(tmp_path: Path) -> None:
    with SimServer(SimConfig(**SIM)) as server:
        backend = json.dumps({"kind": "openai", "base_url": server.base_url})
        recipe = load_recipe(_recipe(tmp_path, backend, "{records: 70, round: 20, novelty: {weight: 0}}"))
        out = tmp_path / "run"
        run_recipe(recipe, out, limit=40)  # the budget cut to 40 draws: two rounds, short of the target
        assert _steering(out)["stop"] == "budget" and server.stats()["requests"] == 40
        run_recipe(recipe, out)
        steering = _steering(out)
        assert steering["stop"] == "target_reached" and len(read_jsonl(out / "dataset.jsonl")) == 70
        assert server.stats()["requests"] == steering["draws"]  # the first two rounds came from the cache
        dataset = (out / "dataset.jsonl").read_bytes()
        shutil.rmtree(out / "checkpoints")  # as if killed before the stage finished
        (out / "dataset.jsonl").unlink()
        run_recipe(recipe, out)
        assert server.stats()["requests"] == steering["draws"] and (out / "dataset.jsonl").read_bytes() == dataset


@pytest.mark.slow
@pytest.mark.timeout(300)  # Ray start-up on a loaded 2-core machine
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")
@pytest.mark.usefixtures("local_ray")
def test_on_ray_the_loop_runs_in_the_driver_and_writes_the_local_dataset(tmp_path: Path) -> None:
    from synthgen.engine.ray_engine import RayExecutor, RayOptions

    backend = json.dumps({"kind": "sim", "sim": SIM})
    recipe = load_recipe(_recipe(tmp_path, backend, "{records: 50, round: 20, novelty: {weight: 0}}"))
    local = run_recipe(recipe, tmp_path / "local")
    with RayExecutor(recipe, tmp_path / "ray", None, RayOptions(workers=2, block_size=16)) as executor:
        distributed = run_recipe(recipe, tmp_path / "ray", executor=executor)
    assert distributed.records == local.records == 50
    assert (tmp_path / "ray" / "dataset.jsonl").read_bytes() == (tmp_path / "local" / "dataset.jsonl").read_bytes()
    assert _steering(tmp_path / "ray") == _steering(tmp_path / "local")
