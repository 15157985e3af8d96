"""The grounded Q&A recipe end to end on the sim server, over chunks of real web pages."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from rapidfuzz import fuzz

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.recipes.chunking import chunk_text
from tests.conftest import REPO, read_jsonl

REASONS = {"not_a_question", "empty_quote", "quote_too_short", "quote_not_in_source", "answer_refuses", "answer_unsupported",
           "answer_copies_quote", "unanswerable_with_quote", "unanswerable_not_refused"}


def chunks_of_dolma(path: Path, pages: int) -> dict[str, str]:
    """The first `pages` dolma pages cut into chunk records (the `chunk` stage's fields) in `path`; their texts by id."""
    documents: dict[str, str] = {}
    with path.open("wb") as out:
        for line in (REPO / "recipes/data/dolma_cc_en_head-0091.jsonl").read_bytes().splitlines()[5:5 + pages]:
            page = orjson.loads(line)
            documents[page["id"]] = text = page["text"]
            position = 0
            for index, piece in enumerate(chunk_text(text, 120)):
                start = text.index(piece, position)
                position = start + len(piece)
                row = {"doc_id": page["id"], "chunk_id": f"{page['id']}#{index}", "chunk_index": index, "text": piece,
                       "start": start, "end": position, "page": None, "section": None, "path": page["id"], "title": None}
                out.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
    return documents


def recipe_over(tmp_path: Path, chunks: Path, judge: bool = False) -> Path:
    text = (REPO / "recipes/doc_qa.yaml").read_text().replace("path: data/doc_qa_chunks.jsonl", f"path: {chunks}")
    if judge:
        block = re.search(r"^  # - judge:\n(?:  #     .*\n)+", text, flags=re.MULTILINE)
        assert block is not None
        text = text.replace(block[0], block[0].replace("  # ", "  "))
    recipe = tmp_path / "recipes" / "doc_qa.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(text.replace("taxonomies/", f"{REPO}/taxonomies/"))
    return recipe


@pytest.mark.slow
def test_grounded_rows_point_back_to_their_document_and_export_for_sft_and_rag_eval(tmp_path: Path) -> None:
    documents = chunks_of_dolma(tmp_path / "chunks.jsonl", 3)
    chunks = read_jsonl(tmp_path / "chunks.jsonl")
    result = run_recipe(load_recipe(recipe_over(tmp_path, tmp_path / "chunks.jsonl")).with_backend(kind="sim", sim={"latency": 0.0}),
                        tmp_path / "run")
    rows, rejects = read_jsonl(result.run_dir.dataset_path), read_jsonl(result.run_dir.rejects_path)
    single = sum(1 for c in chunks if sum(d["doc_id"] == c["doc_id"] for d in chunks) == 1)
    assert len(rows) + len(rejects) == 4 * len(chunks) - single  # a one-chunk document gets no comparison question
    assert {r["reason"] for r in rejects} <= REASONS and {"unanswerable_not_refused"} <= {r["reason"] for r in rejects}
    kinds = {row["fields"]["kind"] for row in rows}
    assert {"factual", "explanatory", "comparison"} <= kinds
    for row in rows:
        fields = row["fields"]
        span = fields["quote_span"]
        source = next(c for c in chunks if c["chunk_id"] == span["source_id"])
        assert span["source_id"] in fields["source_ids"] and source["doc_id"] == fields["doc_id"]
        in_document = documents[fields["doc_id"]][span["doc_start"]:span["doc_end"]]
        assert in_document == source["text"][span["start"]:span["end"]]
        assert fuzz.ratio(in_document.lower(), fields["quote"].strip().lower()) >= 90
    rag = read_jsonl(result.run_dir.path / "export" / "rag_eval" / "train.jsonl")
    sft = read_jsonl(result.run_dir.path / "export" / "sft" / "train.jsonl")
    assert len(rag) == len(sft) == len(rows)
    assert all(set(r) == {"question", "answer", "contexts", "source_ids"} and len(r["contexts"]) == len(r["source_ids"]) for r in rag)
    assert all(r["contexts"][0] in s["messages"][0]["content"] for r, s in zip(rag, sft))


def test_the_faithfulness_judge_variant_runs(tmp_path: Path) -> None:
    chunks_of_dolma(tmp_path / "chunks.jsonl", 1)
    recipe = load_recipe(recipe_over(tmp_path, tmp_path / "chunks.jsonl", judge=True)).with_backend(kind="sim", sim={"latency": 0.0})
    result = run_recipe(recipe, tmp_path / "run")
    judged = read_jsonl(result.run_dir.dataset_path) + \
             [r for r in read_jsonl(result.run_dir.rejects_path) if r["reason"] == "judge_below_threshold"]
    assert judged and all({"faithfulness", "relevance"} <= set(r["meta"]["scores"]["judge"]) for r in judged)
    assert all(r["meta"]["steps"][-1]["template"] == "judge/faithfulness.j2" for r in judged)
