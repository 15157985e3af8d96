"""Ingest and chunking throughput: pages/s extracting a generated 200-page PDF (alone, and 16 copies of it over 1
and 2 worker processes, the workers' start included), docs/s extracting the dolma web pages written as text files, and docs/s
and chunks/s of the `chunk` stage (each method, 300 tokens) on the PDF's text and on the dolma pages.

    python bench/ingest.py [--pages 200] [--files 16] [--copies 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from fpdf import FPDF

from synthgen.documents.stages import Chunk, ChunkParams, ExtractParams, ExtractText
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.source import Source, SourceConfig

DOLMA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dolma_cc_en_head-0091.jsonl"
PARAGRAPH = ("Section {n}.{p}: the committee reviewed the harbour accounts for the quarter and found that fees from "
             "visiting boats had risen while repairs to the northern pier ran over budget. It asked the treasurer to "
             "publish a breakdown by vessel class before the next meeting, and to compare it with last year's figures.")


def make_pdf(path: Path, first: int, pages: int) -> None:
    """`pages` pages numbered from `first`, each a heading line and four paragraphs."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    for n in range(first, first + pages):
        pdf.add_page()
        pdf.multi_cell(0, 5, f"Chapter {n}", new_x="LMARGIN", new_y="NEXT")
        for p in range(4):
            pdf.multi_cell(0, 5, PARAGRAPH.format(n=n, p=p), new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


def context(folder: Path) -> StageContext:
    return StageContext(label="01-bench", index=1, seed=0, recipe_path=folder / "r.yaml", prompts_dir=folder,
                        resolve=lambda name: folder / name)


def timed(run: Callable[[], list[Record]]) -> tuple[list[Record], float]:
    began = time.perf_counter()
    out = run()
    return out, time.perf_counter() - began


def extract(folder: Path, workers: int) -> tuple[list[Record], float]:
    source = list(Source(SourceConfig(path=str(folder)), folder))
    stage = ExtractText(ExtractParams(workers=workers), context(folder))
    return timed(lambda: list(stage.run(source)))


def chunk(folder: Path, docs: list[Record], method: str) -> tuple[list[Record], float]:
    stage = Chunk(ChunkParams(method=method, max_tokens=300), context(folder))  # type: ignore[arg-type]
    return timed(lambda: list(stage.run(docs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--files", type=int, default=16, help="copies of the PDF extracted by 1 and 2 workers")
    parser.add_argument("--copies", type=int, default=20, help="times the 10 dolma pages are written as files")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "one").mkdir()
        make_pdf(root / "one" / "book.pdf", 1, args.pages)
        (root / "many").mkdir()
        for copy in range(args.files):
            shutil.copy(root / "one" / "book.pdf", root / "many" / f"copy{copy:02d}.pdf")
        docs, seconds = extract(root / "one", 1)
        pages = len(docs[0].fields["pages"])
        print(f"PDF, 1 file of {pages} pages          {seconds:6.2f} s  {pages / seconds:7.1f} pages/s")
        for workers in (1, 2):
            copies, seconds = extract(root / "many", workers)
            count = sum(len(d.fields["pages"]) for d in copies)
            label = f"PDF, {len(copies)} files of {pages} pages, {workers} worker(s)"
            print(f"{label:38s} {seconds:6.2f} s  {count / seconds:7.1f} pages/s")
        web = [orjson.loads(line) for line in DOLMA.read_bytes().splitlines() if line.strip()]
        (root / "web").mkdir()
        for copy in range(args.copies):
            for number, page in enumerate(web):
                (root / "web" / f"{copy:03d}-{number:02d}.txt").write_text(f"{page['text']}\n<{copy}>")
        for workers in (1, 2):
            texts, seconds = extract(root / "web", workers)
            print(f"dolma as {len(texts)} .txt files, {workers} worker(s) {seconds:6.2f} s  {len(texts) / seconds:7.1f} docs/s")
        megabytes = sum(len(d.fields["text"]) for d in texts) / 1e6
        for name, corpus in [(f"PDF text ({pages} pages)", docs), (f"dolma ({len(texts)} docs, {megabytes:.1f} MB)", texts)]:
            for method in ("tokens", "paragraphs", "sections"):
                chunks, seconds = chunk(root, corpus, method)
                print(f"chunk {method:10s} {name:28s} {seconds:6.2f} s  {len(corpus) / seconds:7.1f} docs/s  "
                      f"{len(chunks) / seconds:7.1f} chunks/s  ({len(chunks)} chunks)")


if __name__ == "__main__":
    main()
