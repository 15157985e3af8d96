"""A recipe from the user's files to chunks: a folder of PDF / DOCX / Markdown / broken files through
extract_text and chunk, and web pages from JSONL through chunk alone; every chunk points back to its text."""

from __future__ import annotations

import json
from pathlib import Path

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from tests.conftest import read_jsonl, write
from tests.unit.test_documents import MARKDOWN, make_docx, make_pdf

FILES_RECIPE = """
name: docs-to-chunks
seed: 3
source: {path: ../docs}
stages:
  - extract_text: {workers: 2}
  - chunk: {method: sections, max_tokens: 80, min_tokens: 4}
"""

DOLMA = Path(__file__).resolve().parents[2] / "recipes" / "data" / "dolma_cc_en_head-0091.jsonl"  # shipped with the repo


def test_a_folder_of_files_becomes_chunks_and_rejects(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "reports").mkdir(parents=True)
    for number in range(3):
        make_pdf(docs / "reports" / f"r{number}.pdf", pages=3)
    (docs / "reports" / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj <<")
    make_docx(docs / "manual.docx")
    write(docs / "guide.md", MARKDOWN)
    (docs / "old.txt").write_bytes("na\xefve".encode("cp1252"))
    recipe = load_recipe(write(tmp_path / "recipes" / "r.yaml", FILES_RECIPE))
    result = run_recipe(recipe, tmp_path / "run")
    rows = [row["fields"] for row in read_jsonl(result.run_dir.dataset_path)]
    rejects = {Path(r["fields"]["path"]).name: r["reason"] for r in read_jsonl(result.run_dir.rejects_path)}
    assert rejects == {"broken.pdf": "unreadable", "old.txt": "not_utf8"}
    texts = {}
    for name in ["guide.md", "manual.docx", "r0.pdf", "r1.pdf", "r2.pdf"]:
        mine = [row for row in rows if row["path"].endswith(name)]
        assert mine and [row["chunk_index"] for row in mine] == list(range(len(mine)))
        texts[name] = mine
    assert {row["page"] for row in texts["r1.pdf"]} == {1, 2, 3} and all(row["section"] is None for row in texts["r1.pdf"])
    # the title paragraph (2 tokens, under min_tokens) joins the first section; a chunk's section is where it starts
    assert [row["section"] for row in texts["manual.docx"]] == [None, "Boats > Nets", "Markets"]
    assert texts["manual.docx"][0]["text"].startswith("Field manual\n\nBoats\n\n")
    assert "Guide > Install > On Linux" in {row["section"] for row in texts["guide.md"]}
    guide = (docs / "guide.md").read_text()
    assert all(guide[row["start"]:row["end"]] == row["text"] for row in texts["guide.md"])
    stats = json.loads(result.run_dir.stats_path.read_text())
    assert stats["rejects_by_reason"] == {"unreadable": 1, "not_utf8": 1}

    again = run_recipe(load_recipe(tmp_path / "recipes" / "r.yaml"), tmp_path / "run2")
    assert [r["fields"]["chunk_id"] for r in read_jsonl(again.run_dir.dataset_path)] == [row["chunk_id"] for row in rows]


def test_web_pages_in_jsonl_are_chunked_by_their_text_field(tmp_path: Path) -> None:
    pages = [json.loads(line) for line in DOLMA.read_text().splitlines()]  # 10 web pages, 0.4 to 66 kB
    write(tmp_path / "pages.jsonl", "".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in pages))
    recipe = load_recipe(write(tmp_path / "recipes" / "r.yaml", """
name: web-chunks
source: {path: ../pages.jsonl}
stages:
  - chunk: {field: text, max_tokens: 120, overlap: 20}
"""))
    rows = [row["fields"] for row in read_jsonl(run_recipe(recipe, tmp_path / "run").run_dir.dataset_path)]
    by_doc: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_doc.setdefault(str(row["doc_id"]), []).append(row)
    assert len(by_doc) == len(pages) and len(rows) > 3 * len(pages)
    for page, chunks in zip(pages, by_doc.values()):
        assert all(page["text"][c["start"]:c["end"]] == c["text"] for c in chunks)  # type: ignore[index,misc]
        assert all(a["end"] > b["start"] for a, b in zip(chunks, chunks[1:]))  # type: ignore[operator]
