"""The shipped E5 and WRAP recipes end to end over real HTTP against the sim, with provenance and caching."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from tests.conftest import read_jsonl


def run_twice(recipe_path: str, out: Path, limit: int | None = None) -> tuple[list[dict], list[dict]]:
    recipe = load_recipe(recipe_path).with_backend(kind="sim", sim={"latency": 0.0})
    first = run_recipe(recipe, out, limit=limit)
    dataset = first.run_dir.dataset_path.read_bytes()
    for path in first.run_dir.checkpoints.iterdir():  # force every stage to run again, from the cache
        path.unlink()
    second = run_recipe(recipe, out, limit=limit)
    assert second.stats.http_requests == 0 and second.run_dir.dataset_path.read_bytes() == dataset
    return read_jsonl(first.run_dir.dataset_path), read_jsonl(first.run_dir.rejects_path)


@pytest.mark.slow
def test_e5_retrieval_recipe(tmp_path: Path) -> None:
    rows, rejects = run_twice("recipes/e5_retrieval.yaml", tmp_path / "run", limit=3)
    assert len(rows) > 5
    for row in rows:
        fields = row["fields"]
        assert {"instruction", "anchor", "positive", "negative", "task_type", "mined_negatives"} <= set(fields)
        assert fields["anchor"] and fields["positive"] and fields["instruction"]
        brainstorm, example = row["meta"]["steps"]
        assert brainstorm["template"] == "e5/brainstorm.j2" and brainstorm["leaf"] == fields["task_type"]
        assert example["template"].startswith("e5/") and example["leaf"] == fields["task_type"]
        wanted = {"asymmetric/short-long": {"query_type", "query_length", "clarity", "num_words", "difficulty"},
                  "asymmetric/long-short": {"num_words", "clarity", "difficulty"}}  # the paper's; languages: e5_languages
        assert set(example["placeholders"]) == wanted.get(fields["task_type"], set())
        assert example["sampling"]["temperature"] == 1.0 and example["sampling"]["top_p"] == 1.0
    assert all(r["reason"] for r in rejects)


def test_e5_symmetric_recipe(tmp_path: Path) -> None:
    rows, _ = run_twice("recipes/e5_symmetric.yaml", tmp_path / "run", limit=20)
    assert Counter(r["fields"]["task_type"] for r in rows).keys() <= {"symmetric/sts", "symmetric/bitext"}
    assert len(rows) >= 15 and all(r["fields"]["negative"] for r in rows)


def test_wrap_rephrase_recipe(tmp_path: Path) -> None:
    rows, rejects = run_twice("recipes/wrap_rephrase.yaml", tmp_path / "run", limit=4)
    kinds = Counter(r["fields"]["kind"] for r in rows)
    assert kinds["real"] == kinds["synthetic"] > 0
    synthetic = [r for r in rows if r["fields"]["kind"] == "synthetic"]
    assert {r["fields"]["style"] for r in synthetic} <= {"easy", "medium", "hard", "qa"}
    for row in synthetic:
        wrap = row["meta"]["wrap"]
        assert wrap["chunks_rewritten"] + len(wrap["kept_original"]) == wrap["chunks_total"]
    assert {r["reason"] for r in rejects} <= {"lost_content", "incomplete_document", "all_chunks_lost"}
    pair_rejects = [r for r in rejects if r["reason"] != "lost_content"]
    assert len(synthetic) + len(pair_rejects) == 4  # one style per document, every document accounted for
    assert len({r["fields"]["text"] for r in rows if r["fields"]["kind"] == "real"}) == kinds["real"]  # no repeats
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["stages"]["00-wrap_chunk"]["records_in"] == 4
