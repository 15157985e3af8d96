"""Issue 20 item 4: retrieval triplets from a corpus (recipes/corpus_triplets.yaml) on the sim server, and the
BEIR export layout."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from pydantic import ValidationError

from synthgen.export import ExportConfig, export_records
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.record import Record
from tests.conftest import read_jsonl

RECIPE = Path("recipes/corpus_triplets.yaml")


def qrels(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.reader(handle, delimiter="\t"))


def test_beir_layout_writes_corpus_queries_and_qrels(tmp_path: Path) -> None:
    records = [Record(f"q{i}", {"query": f"query {i}", "text": passage, "chunk_id": chunk, "title": "Doc"})
               for i, (passage, chunk) in enumerate([("first passage", "d1#0"), ("first passage", "d1#0"),
                                                     ("second passage", "d1#1"), ("third passage", None)])]
    records.append(Record("bad", {"query": "", "text": "x"}))
    config = ExportConfig(layout="beir", fields={"anchor": "query", "positive": "text"})
    result = export_records(records, config, tmp_path / "beir")
    corpus, queries = read_jsonl(tmp_path / "beir/corpus.jsonl"), read_jsonl(tmp_path / "beir/queries.jsonl")
    assert [row["_id"] for row in corpus][:2] == ["d1#0", "d1#1"] and corpus[2]["_id"].startswith("c-")
    assert corpus[0] == {"_id": "d1#0", "title": "Doc", "text": "first passage"}
    assert queries == [{"_id": f"q{i}", "text": f"query {i}"} for i in range(4)]
    assert qrels(tmp_path / "beir/qrels/test.tsv") == [["query-id", "corpus-id", "score"], ["q0", "d1#0", "1"],
                                                       ["q1", "d1#0", "1"], ["q2", "d1#1", "1"], ["q3", corpus[2]["_id"], "1"]]
    assert result.rows == {"test": 4} and result.skipped == 1
    split = export_records(records, config.model_copy(update={"test_size": 0.5}), tmp_path / "split")
    assert sum(split.rows.values()) == 4 and set(split.rows) <= {"train", "test"}
    assert all(len(qrels(tmp_path / f"split/qrels/{name}.tsv")) == n + 1 for name, n in split.rows.items())
    with pytest.raises(ValidationError, match="format: jsonl"):
        ExportConfig(layout="beir", format="parquet")


@pytest.mark.slow
def test_corpus_triplets_recipe_round_trip_mining_and_exports(tmp_path: Path) -> None:
    """Three mid-sized pages (~1,000 words, 8 passages); top_k 2 and no similarity floor, so that some of the
    sim's random queries pass."""
    pages = Path("recipes/data/dolma_cc_en_head-0091.jsonl").read_text(encoding="utf-8").splitlines()
    data = tmp_path / "pages.jsonl"
    data.write_text("\n".join(pages[i] for i in (5, 8, 9)) + "\n", encoding="utf-8")
    recipe = tmp_path / "recipes" / "ct.yaml"
    recipe.parent.mkdir()
    recipe.write_text(RECIPE.read_text().replace("top_k: 1, min_similarity: 0.3", "top_k: 2").replace(
        "path: data/dolma_cc_en_head-0091.jsonl", f"path: {data}"))
    result = run_recipe(load_recipe(recipe).with_backend(kind="sim", sim={"latency": 0.0}), tmp_path / "run")
    rows, rejects = read_jsonl(result.run_dir.dataset_path), read_jsonl(result.run_dir.rejects_path)
    assert rows and rejects
    assert all(1 <= r["meta"]["scores"]["round_trip_rank"] <= 2 for r in rows)
    failed = [r for r in rejects if r["reason"] == "round_trip_failed"]
    assert failed and all(int(r["detail"].split("ranked ")[1].split(" ")[0]) > 2 for r in failed)
    # negatives come from every passage that got a query, not only from the kept queries' passages
    passages = {r["fields"]["text"] for r in rows}
    negatives = {text for r in rows for text in r["fields"]["mined_negatives"]}
    assert negatives - passages and all(r["fields"]["text"] not in r["fields"]["mined_negatives"] for r in rows)
    assert all(s <= 0.95 * r["meta"]["scores"]["positive_similarity"] + 1e-4
               for r in rows for s in r["meta"]["scores"]["mined_negative_similarity"])
    triplets = read_jsonl(result.run_dir.path / "export/train.jsonl")
    assert triplets and all(set(t) == {"anchor", "positive", "negative_1", "negative_2", "negative_3"} for t in triplets)
    beir = result.run_dir.path / "beir"
    corpus = {row["_id"]: row["text"] for row in read_jsonl(beir / "corpus.jsonl")}
    queries = {row["_id"]: row["text"] for row in read_jsonl(beir / "queries.jsonl")}
    pairs = {(queries[q], corpus[c]) for q, c, _ in qrels(beir / "qrels/test.tsv")[1:]}
    assert pairs == {(r["fields"]["query"], r["fields"]["text"]) for r in rows} and len(queries) == len(rows)
