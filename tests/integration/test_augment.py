"""Embedding augmentation through the sim: realise-and-verify accepts and rejects by cosine; nearest decoding."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from tests.conftest import read_jsonl, write

RECIPE = """
name: augment
seed: 2
source: {{path: {data}}}
backend: {{kind: sim, sim: {{latency: 0.0}}}}
stages:
  - embed_augment:
      label_field: category
      operation: {operation}
      count: 6
      decode: {decode}
      tau: {tau}
      max_attempts: 2
      classes: [exchange_rate]
"""


def run(tmp_path: Path, operation: str = "mixup", decode: str = "llm", tau: float = 0.8) -> tuple[list[dict], list[dict]]:
    data = Path("recipes/data/banking77_sample.csv").resolve()
    text = RECIPE.format(data=data, operation=operation, decode=decode, tau=tau)
    path = write(tmp_path / "recipes" / "r.yaml", text.replace("source:", f"prompts_dir: {Path('prompts').resolve()}\nsource:"))
    result = run_recipe(load_recipe(path), tmp_path / "run")
    metrics = result.stats.metrics["00-embed_augment"]
    assert metrics["before"]["n"] == 160 and metrics["after"]["n"] == 160 + metrics["accepted"]
    rows = [r for r in read_jsonl(result.run_dir.dataset_path) if "operation" in r["fields"]]
    return rows, read_jsonl(result.run_dir.rejects_path)


@pytest.mark.slow
def test_realise_and_verify_by_cosine(tmp_path: Path) -> None:
    accepted, rejects = run(tmp_path / "loose", tau=-1.0)  # any text that is no copy or intruder lands
    strict, strict_rejects = run(tmp_path / "strict", tau=0.99)
    assert strict == [] and len(strict_rejects) == 6
    assert {r["reason"] for r in strict_rejects} == {"off_target"} and all("cosine" in r["detail"] for r in strict_rejects)
    assert len(accepted) + len(rejects) == 6 and accepted
    assert {r["reason"] for r in rejects} <= {"manifold_intrusion", "near_copy"}
    for row in accepted:
        soft = row["fields"]["soft_labels"]
        assert abs(sum(soft.values()) - 1.0) < 1e-3 and row["fields"]["category"] in soft
        assert len(row["meta"]["parents"]) == 2 and -1.0 <= row["meta"]["scores"]["target_cosine"] <= 1.0
    nearest, _ = run(tmp_path / "nearest", operation="smote", decode="nearest")
    assert len(nearest) == 6 and all(r["meta"]["decoded_from"] for r in nearest)
    assert all(r["meta"]["scores"]["target_cosine"] > 0.5 for r in nearest)
