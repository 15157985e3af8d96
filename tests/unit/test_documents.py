"""Documents in, chunks out: readers per format with page and section offsets, named rejects for unreadable
files, the `files` source, extraction in worker processes, and chunk spans that slice the document exactly."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from docx import Document as DocxDocument
from fpdf import FPDF

from synthgen.documents.stages import Chunk, ChunkParams, ExtractParams, ExtractText
from synthgen.errors import InputError
from synthgen.recipes.chunking import chunk_spans, chunk_text
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.source import Source, SourceConfig
from synthgen.tokens import count_tokens
from tests.conftest import write

PROSE = ("The river bank was crowded with small boats painted in bright colours. Fishermen mended their nets "
         "while children ran along the path, shouting to one another. By noon the market had opened. ")
MARKDOWN = ("# Guide\n\nWhat this guide covers.\n\n## Install\n\n" + PROSE * 3 + "\n\n### On Linux\n\nUse apt.\n\n"
            "```\n# not a heading\n```\n\n## Use\n\n" + PROSE + "\n")
Rejects = list[tuple[Record, str, str | None]]


def make_pdf(path: Path, pages: int, paragraphs: int = 2, password: str | None = None) -> Path:
    """A PDF of `pages` pages, each opening with "Page N marker." and then `paragraphs` paragraphs of prose."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    if password:
        pdf.set_encryption(owner_password="owner", user_password=password)
    for number in range(1, pages + 1):
        pdf.add_page()
        pdf.multi_cell(0, 6, f"Page {number} marker.", new_x="LMARGIN", new_y="NEXT")
        for _ in range(paragraphs):
            pdf.multi_cell(0, 6, PROSE, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


def make_docx(path: Path) -> Path:
    document = DocxDocument()
    document.add_heading("Field manual", level=0)
    document.add_heading("Boats", level=1)
    document.add_paragraph(PROSE)
    document.add_heading("Nets", level=2)
    document.add_paragraph("Mend them each evening.")
    document.add_heading("Markets", level=1)
    document.add_paragraph(PROSE)
    document.save(str(path))
    return path


HTML = ("<html><head><title>Harbour notes</title></head><body><nav><a href='/'>Home</a></nav><article>"
        f"<h1>Harbour</h1><p>{PROSE * 2}</p><h2>Tides</h2><p>{PROSE * 2}</p></article></body></html>")


def context(tmp_path: Path, rejects: Rejects) -> StageContext:
    return StageContext(label="02-docs", index=2, seed=1, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                        resolve=lambda name: tmp_path / name, reject=lambda r, reason, detail: rejects.append((r, reason, detail)))


def listed(path: Path, **config: Any) -> list[Record]:
    return list(Source(SourceConfig(path=str(path), **config), path))


def extract(tmp_path: Path, path: Path, rejects: Rejects, workers: int = 1) -> list[Record]:
    stage = ExtractText(ExtractParams(workers=workers), context(tmp_path, rejects))
    return list(stage.run(listed(path)))


def chunks_of(tmp_path: Path, documents: list[Record], rejects: Rejects | None = None, **params: Any) -> list[dict[str, Any]]:
    stage = Chunk(ChunkParams(**params), context(tmp_path, rejects if rejects is not None else []))
    return [record.fields for record in stage.run(documents)]


def test_chunk_spans_slice_the_text_and_overlap_within_the_cap() -> None:
    text = "\n\n".join(PROSE * (i % 3 + 1) for i in range(12))
    plain = chunk_spans(text, 60)
    assert [text[a:b] for a, b in plain] == chunk_text(text, 60)
    overlapped = chunk_spans(text, 60, overlap=15)
    assert len(overlapped) > 2 and max(count_tokens([text[a:b] for a, b in overlapped])) <= 60
    for (_, end), (next_start, _) in zip(overlapped, overlapped[1:]):
        assert next_start < end and 0 < count_tokens([text[next_start:end]])[0] <= 15  # shared words, not more
        assert next_start == 0 or text[next_start - 1].isspace()  # whole words
    with pytest.raises(ValueError, match="overlap"):
        chunk_spans(text, 60, overlap=60)


def test_each_format_gives_text_title_pages_and_sections(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    make_pdf(folder.mkdir() or folder / "report.pdf", pages=3)
    make_docx(folder / "manual.docx")
    write(folder / "harbour.html", HTML)
    write(folder / "guide.md", MARKDOWN)
    write(folder / "notes.txt", PROSE)
    rejects: Rejects = []
    docs = {Path(r.fields["path"]).name: r.fields for r in extract(tmp_path, folder, rejects)}
    assert not rejects and set(docs) == {"report.pdf", "manual.docx", "harbour.html", "guide.md", "notes.txt"}

    pdf = docs["report.pdf"]
    assert [page["page"] for page in pdf["pages"]] == [1, 2, 3]
    for page in pdf["pages"]:
        assert pdf["text"][page["start"]:page["end"]].startswith(f"Page {page['page']} marker.")
    guide = docs["guide.md"]
    assert guide["title"] == "Guide" and guide["text"] == MARKDOWN
    headings = [(s["heading"], s["level"]) for s in guide["sections"]]
    assert headings == [("Guide", 1), ("Install", 2), ("On Linux", 3), ("Use", 2)]  # the fenced `#` line is code
    install = guide["sections"][1]
    assert guide["text"][install["start"]:install["end"]].startswith("## Install") and "Use apt." in \
        guide["text"][install["start"]:install["end"]] and "## Use" not in guide["text"][install["start"]:install["end"]]
    manual = docs["manual.docx"]
    assert manual["title"] == "Field manual"
    assert [(s["heading"], s["level"]) for s in manual["sections"]] == [("Boats", 1), ("Nets", 2), ("Markets", 1)]
    nets = manual["sections"][1]
    assert manual["text"][nets["start"]:nets["end"]] == "Nets\n\nMend them each evening."
    harbour = docs["harbour.html"]
    assert harbour["title"] == "Harbour" and "Home" not in harbour["text"]
    assert [s["heading"] for s in harbour["sections"]] == ["Harbour", "Tides"]
    assert docs["notes.txt"]["title"] == "notes" and docs["notes.txt"]["text"] == PROSE


def test_unreadable_files_are_rejects_with_named_reasons(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    make_pdf(folder / "locked.pdf", pages=1, password="secret")
    whole = make_pdf(tmp_path / "whole.pdf", pages=2).read_bytes()
    (folder / "cut.pdf").write_bytes(whole[: len(whole) // 3])
    (folder / "fake.docx").write_bytes(b"this is not a zip archive")
    (folder / "latin.txt").write_bytes("Caf\xe9 au lait".encode("latin-1"))
    write(folder / "empty.md", "\n   \n")
    write(folder / "nav.html", "<html><head><script>var x = 1;</script></head><body><div></div></body></html>")
    write(folder / "table.xyz", "a,b\n")
    write(folder / "good.md", "# Fine\n\n" + PROSE)
    rejects: Rejects = []
    kept = extract(tmp_path, folder, rejects)
    assert [Path(r.fields["path"]).name for r in kept] == ["good.md"]
    reasons = {Path(record.fields["path"]).name: reason for record, reason, _ in rejects}
    assert reasons == {"locked.pdf": "encrypted", "cut.pdf": "unreadable", "fake.docx": "unreadable", "latin.txt": "not_utf8",
                       "empty.md": "no_text", "nav.html": "no_text", "table.xyz": "unsupported_type"}
    detail = next(d for r, reason, d in rejects if reason == "not_utf8")
    assert detail is not None and "0xe9" in detail


def test_files_source_lists_folders_and_globs_with_stable_ids(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "docs"
    write(folder / "b.md", "# B\n")
    write(folder / "sub" / "a.md", "# A\n")
    write(folder / "sub" / "c.txt", "c")
    write(folder / ".hidden" / "x.md", "# X\n")
    write(folder / ".DS_Store", "junk")
    rows = listed(folder)
    assert [r.fields["name"] for r in rows] == ["b.md", "sub/a.md", "sub/c.txt"]
    assert rows[1].fields == {"path": str(folder / "sub" / "a.md"), "name": "sub/a.md", "type": "md", "bytes": 4}
    assert [r.fields["name"] for r in listed(folder / "**" / "*.md")] == ["b.md", "sub/a.md"]
    assert Source(SourceConfig(path=str(folder / "**" / "*.md")), folder / "**" / "*.md").estimate() == 2
    with pytest.raises(InputError, match="no records"):
        listed(folder / "**" / "*.pdf")
    with pytest.raises(InputError, match="not found"):
        listed(tmp_path / "missing" / "*.pdf")
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)
    assert [r.id for r in listed(moved)] == [r.id for r in rows]  # ids do not depend on where the folder lies


def test_workers_extract_the_same_documents_as_one_process(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for number in range(9):  # with the broken one, more than POOL_FROM (8): the workers start
        make_pdf(folder / f"doc{number}.pdf", pages=2 + number % 2)
    (folder / "doc9.pdf").write_bytes(b"%PDF-1.4 broken")
    alone: Rejects = []
    pooled: Rejects = []
    one = extract(tmp_path, folder, alone, workers=1)
    two = extract(tmp_path, folder, pooled, workers=2)
    assert [(r.id, r.fields) for r in one] == [(r.id, r.fields) for r in two] and len(one) == 9
    assert [(r.id, reason) for r, reason, _ in alone] == [(r.id, reason) for r, reason, _ in pooled] != []
    assert len({r.fields["doc_id"] for r in one}) == 9


@pytest.mark.parametrize("method", ["tokens", "sections", "paragraphs"])
def test_every_chunk_is_the_exact_span_of_its_document(tmp_path: Path, method: str) -> None:
    folder = tmp_path / "docs"
    make_pdf(folder.mkdir() or folder / "report.pdf", pages=4, paragraphs=3)
    write(folder / "guide.md", MARKDOWN)
    make_docx(folder / "manual.docx")
    docs = extract(tmp_path, folder, [])
    chunks = chunks_of(tmp_path, docs, method=method, max_tokens=60)
    by_doc = {doc.fields["doc_id"]: doc.fields for doc in docs}
    assert {c["doc_id"] for c in chunks} == set(by_doc)
    for chunk in chunks:
        doc = by_doc[chunk["doc_id"]]
        assert doc["text"][chunk["start"]:chunk["end"]] == chunk["text"] and chunk["text"].strip()
        assert count_tokens([chunk["text"]])[0] <= 60
        assert (chunk["path"], chunk["title"]) == (doc["path"], doc["title"]) and "pages" not in chunk
    assert len({c["chunk_id"] for c in chunks}) == len(chunks)
    assert chunks == chunks_of(tmp_path, docs, method=method, max_tokens=60)  # stable ids
    pdf_chunks = [c for c in chunks if c["path"].endswith(".pdf")]
    assert all(f"Page {c['page']} marker." in c["text"] or not c["text"].startswith("Page ") for c in pdf_chunks)
    assert {c["page"] for c in pdf_chunks} == {1, 2, 3, 4}
    guide = [c for c in chunks if c["path"].endswith(".md")]
    linux = next(c for c in guide if "Use apt." in c["text"])
    assert linux["section"] in ("Guide > Install > On Linux", "Guide > Install")  # the chunk starts in one of them
    if method == "sections":
        assert linux["section"] == "Guide > Install > On Linux" and linux["text"].startswith("### On Linux")
        assert [c["section"] for c in guide][-1] == "Guide > Use"


def test_min_tokens_merges_tiny_chunks_and_field_text_works_on_any_record(tmp_path: Path) -> None:
    text = "# A\n\n## Tiny\n\nshort.\n\n## Long\n\n" + PROSE * 2
    record = Record("r1", {"text": text, "id": "web-1"})
    rejects: Rejects = []
    loose = chunks_of(tmp_path, [record], method="sections", max_tokens=200)
    merged = chunks_of(tmp_path, [record], rejects, method="sections", max_tokens=200, min_tokens=5)
    assert [c["section"] for c in loose] == ["A", "A > Tiny", "A > Long"]
    assert [c["section"] for c in merged] == ["A", "A > Long"] and merged[0]["text"].endswith("short.")
    assert all(c["doc_id"] == "r1" and text[c["start"]:c["end"]] == c["text"] for c in merged) and not rejects
    alone = chunks_of(tmp_path, [Record("r2", {"text": "Hi.\n\n" + PROSE * 3})], rejects, method="paragraphs",
                      max_tokens=50, min_tokens=10)
    assert rejects and rejects[0][1] == "short_chunk" and all(c["text"] != "Hi." for c in alone)
    assert chunks_of(tmp_path, [Record("r3", {"body": ""})], rejects, field="body") == [] and rejects[-1][1] == "no_text"
    nothing: Rejects = []
    assert list(ExtractText(ExtractParams(), context(tmp_path, nothing)).run([Record("r4", {"file": "a.md"})])) == []
    assert [reason for _, reason, _ in nothing] == ["missing_field"]
