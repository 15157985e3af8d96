"""With 20% injected faults of every kind the run finishes, and every requested record is accounted for."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.sim import FAULT_KINDS
from tests.conftest import read_jsonl, write

RECIPE = """
name: faults
seed: 3
backend:
  kind: sim
  model: sim-model
  max_concurrency: 64
  timeout: 0.4
  hard_timeout: 1.5  # the soft deadline grows with the measured pace on a loaded machine: a 2 s hang must still time out
  max_attempts: 4
  retry_initial: 0.02
  retry_max: 0.2
  sim:
    latency: 0.005
    hang_seconds: 2.0
    retry_after: 0.02
    faults: {FAULTS}
stages:
  - generate:
      taxonomy: taxonomies/quickstart.yaml
      count: 400
      max_retries: 1
      schema:
        type: object
        properties: {instruction: {type: string}, input: {type: string}}
        required: [instruction, input]
  - generate:
      template: quickstart/response.j2
      output: response
      max_retries: 1
"""


@pytest.mark.slow
def test_every_record_is_in_the_dataset_or_in_rejects_with_a_reason(tmp_path: Path) -> None:
    faults = {kind: 0.2 / len(FAULT_KINDS) for kind in FAULT_KINDS}
    recipe = load_recipe(write(tmp_path / "recipes" / "r.yaml", RECIPE.replace("{FAULTS}", str(faults))))
    result = run_recipe(recipe, tmp_path / "run")

    dataset = read_jsonl(result.run_dir.dataset_path)
    rejects = read_jsonl(result.run_dir.rejects_path)
    first = [r for r in rejects if r["stage"] == "00-generate"]
    second = [r for r in rejects if r["stage"] == "01-generate"]
    stages = result.stats.stages
    assert stages["00-generate"].records_out + len(first) == 400
    assert len(dataset) + len(second) == stages["00-generate"].records_out
    assert len(dataset) > 300
    assert all(r["reason"] and r["detail"] for r in rejects)
    assert {r["reason"] for r in rejects} <= {
        "truncated", "invalid_json", "schema_mismatch", "backend_http_429", "backend_http_500",
        "backend_http_503", "backend_timeout", "backend_disconnect", "backend_malformed", "backend_oversized",
        "empty_output",
    }
    retried = set(result.stats.retries)
    assert {"http_429", "http_500", "http_503", "timeout", "disconnect", "malformed"} <= retried
    assert len({row["id"] for row in dataset}) == len(dataset)
