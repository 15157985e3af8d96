"""The progress line of `synthgen run` tells the truth: stage, its done/total, retries by cause, cost, 100% at the end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import synthgen, write

RECIPE = """
name: progress
seed: 5
backend:
  kind: sim
  max_concurrency: 16
  retry_initial: 0.01
  retry_max: 0.05
  sim:
    latency: 0.002
    retry_after: 0.01
    duplicate_rate: 0.3
    faults: {rate_limit: 0.06, server_error: 0.03}
stages:
  - generate:
      taxonomy: taxonomies/quickstart.yaml
      count: 80
      schema:
        type: object
        properties: {instruction: {type: string}, input: {type: string}}
        required: [instruction, input]
  - exact_dedup:
      fields: [instruction]
  - generate:
      template: quickstart/response.j2
      output: response
  - semantic_dedup:
      fields: [response]
"""


@pytest.mark.slow
def test_the_last_line_reaches_100_percent_names_retry_causes_and_prices_the_tokens(tmp_path: Path) -> None:
    recipe = write(tmp_path / "recipes" / "progress.yaml", RECIPE)
    result = synthgen("run", str(recipe), "--out", str(tmp_path / "run"), "--price-in", "1.5", "--price-out", "4",
                      env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("progress ")]
    last = lines[-1]
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["stages"]["01-exact_dedup"]["rejected"] > 0  # records were dropped on the way
    done, total = map(int, re.search(r"progress 100% ([\d,]+)/([\d,]+)", last).groups())  # type: ignore[union-attr]
    assert done == total == stats["requests"]["finished"]
    stage_done, stage_total = map(int, re.search(r"stage 4/4 03-semantic_dedup (\d+)/(\d+)", last).groups())  # type: ignore[union-attr]
    assert stage_done == stage_total == stats["stages"]["03-semantic_dedup"]["records_in"]
    retries = stats["requests"]["retries_by_cause"]
    assert retries.get("http_429") and retries.get("http_500")
    assert f"retries {sum(retries.values())} (" in last
    assert f"429: {retries['http_429']}" in last and f"500: {retries['http_500']}" in last
    tokens = stats["tokens"]
    assert f"cost ${(tokens['prompt'] * 1.5 + tokens['completion'] * 4) / 1e6:,.4f}" in last
    assert re.search(r"embedded [1-9]", last)  # the embedding stage's encode progress
    assert "ETA 0:00:00" in last and "in flight 0" in last


def test_no_price_no_cost(tmp_path: Path) -> None:
    recipe = write(tmp_path / "recipes" / "progress.yaml", RECIPE.replace("count: 80", "count: 5").split("  - exact")[0])
    result = synthgen("run", str(recipe), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    last = [line for line in result.stderr.splitlines() if line.startswith("progress ")][-1]
    assert "progress 100% 5/5 | stage 1/1 00-generate 5/5" in last
    assert "cost" not in last
