"""similarity_filter's checks (identity, ReAlign's length rule, cosine band) and its keep-the-original policy,
with the packaged MiniLM, on the shipped reformat and back-translation recipes' own settings."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthgen.embedding.encoder import Encoder
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.similarity import SimilarityFilter, SimilarityParams
from tests.conftest import REPO, read_jsonl, write

Rejects = list[tuple[Record, str, str | None]]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@pytest.fixture(scope="module", autouse=True)
def encoder() -> Encoder:
    """Loads the model once; the stage's encoders reuse it."""
    return Encoder()


def recipe_params(name: str) -> dict[str, Any]:
    """The similarity_filter parameters of a shipped recipe."""
    stages = yaml.safe_load((REPO / "recipes" / f"{name}.yaml").read_text())["stages"]
    return next(stage["similarity_filter"] for stage in stages if "similarity_filter" in stage)


def judged(tmp_path: Path, params: dict[str, Any], records: list[Record]) -> tuple[list[Record], Rejects]:
    rejects: Rejects = []
    ctx = StageContext(label="02-similarity_filter", index=2, seed=0, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                       resolve=lambda name: tmp_path / name, reject=lambda r, reason, detail: rejects.append((r, reason, detail)))
    return list(SimilarityFilter(SimilarityParams.model_validate(params), ctx).run(records)), rejects


@pytest.mark.slow
def test_reformat_keeps_the_original_for_truncated_rewrites_that_cosine_alone_passes(tmp_path: Path) -> None:
    """Rewrites that keep only the first 40% of an answer's sentences: 21 of 36 pass cosine >= 0.8, the recipe's
    checks catch 35 and keep the original answer instead."""
    pairs = [json.loads(line) for line in (REPO / "recipes/data/answers.jsonl").read_text().splitlines()]
    records = []
    for i, pair in enumerate(pairs):
        sentences = [s for s in _SENTENCE_END.split(pair["response"].strip()) if s.strip()]
        if len(sentences) >= 3:
            truncated = " ".join(sentences[: max(1, math.floor(0.4 * len(sentences)))])
            records.append(Record(f"r{i}", {**pair, "reformatted": truncated}, {}))
    assert len(records) >= 20
    cosine_only, _ = judged(tmp_path, {"field": "reformatted", "reference": "response", "min_cosine": 0.8}, records)
    kept, rejects = judged(tmp_path, recipe_params("reformat"), records)
    assert len(cosine_only) >= 0.3 * len(records)  # the defect: a third or more of the truncations pass cosine alone
    assert rejects == [] and len(kept) == len(records)  # no pair is lost ...
    caught = [r for r in kept if "kept_original" in r.meta]
    assert len(caught) >= 0.9 * len(records)  # ... and nearly every truncation is replaced by the original
    assert all(r.fields["reformatted"] == r.fields["response"] for r in caught)
    assert {r.meta["kept_original"]["reason"] for r in caught} <= {"too_short", "drifted_meaning"}
    assert sum(r.meta["kept_original"]["reason"] == "too_short" for r in caught) >= len(cosine_only) // 2


def test_back_translation_rejects_identical_outputs_and_keeps_the_band(tmp_path: Path) -> None:
    source = "How do I reset my card PIN?"
    cases = {
        "same": "how do I reset my card PIN",  # the input again, re-cased and re-punctuated
        "swap": "How do I reset my PIN card?",  # an adjacent-word swap: no new wording
        "paraphrase": "What are the steps to change the PIN of my card?",
        "other": "The weather in Lisbon is lovely in May.",
    }
    records = [Record(key, {"text": source, "back_translated": text}, {}) for key, text in cases.items()]
    kept, rejects = judged(tmp_path, recipe_params("back_translation"), records)
    assert [r.id for r in kept] == ["paraphrase"]
    assert {r.id: reason for r, reason, _ in rejects} == {"same": "identical_to_source", "swap": "too_similar",
                                                          "other": "drifted_meaning"}
    assert all("cosine_back_translated_text" in r.meta["scores"] for r, _, _ in rejects)


def test_an_empty_band_is_refused() -> None:
    with pytest.raises(ValueError, match="band is empty"):
        SimilarityParams.model_validate({"field": "a", "reference": "b", "min_cosine": 0.9, "max_cosine": 0.8})


def test_a_failed_rewrite_request_keeps_the_original_answer(tmp_path: Path) -> None:
    """generate `on_failure: keep_input` + similarity_filter `on_fail: keep_reference`: every request truncated,
    every pair still in the dataset with its original answer and the failure named."""
    write(tmp_path / "answers.jsonl", "".join(json.dumps({"instruction": f"Q{i}?", "response": f"Answer number {i}."}) + "\n"
                                              for i in range(4)))
    write(tmp_path / "prompts/rewrite.j2", "{% block user %}Rewrite: {{ record.response }}{% endblock %}")
    similarity = recipe_params("reformat")
    path = write(tmp_path / "r.yaml", f"""
name: reformat_failures
seed: 1
source: {{path: answers.jsonl}}
backend: {{kind: sim, sim: {{latency: 0.0, faults: {{truncated: 1.0}}}}, max_attempts: 1}}
stages:
  - generate: {{template: rewrite.j2, output: reformatted, max_retries: 0, on_failure: keep_input}}
  - similarity_filter: {json.dumps(similarity)}
""")
    result = run_recipe(load_recipe(path), tmp_path / "run")
    rows = read_jsonl(result.run_dir.dataset_path)
    assert read_jsonl(result.run_dir.rejects_path) == []
    assert sorted(r["fields"]["reformatted"] for r in rows) == [f"Answer number {i}." for i in range(4)]
    assert {r["meta"]["kept_original"]["reason"] for r in rows} == {"rewrite_failed"}
    assert all(r["meta"]["failure"]["reason"] == "truncated" for r in rows)
