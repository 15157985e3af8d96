"""Documents in, chunks out: `extract_text` reads each listed file (source format `files`) into a document record;
`chunk` cuts any record's text into chunk records that point back to their exact span, page and section.

A document is {doc_id, path, title, text, pages, sections}; a chunk is {doc_id, chunk_id, chunk_index, text,
start, end, page, section, path, title}, flat fields as a seed dataset (DataDesigner) or a distilabel column
expects, with `doc.text[start:end] == chunk.text`. The document's text is not copied into its chunks (a 300-page
PDF would be stored once per chunk). `doc_id` hashes the file's name and content, `chunk_id` the doc_id and the
span: both stay the same across runs, machines and recipe edits that do not change the text or the cut.

Choices: `tokens` with 300 tokens and no overlap by default (the WRAP chunk size, within the 256-512 range RAG
pipelines use; overlap repeats text in every prompt built on the chunks, so it is asked for, not assumed); a
chunk's `page` and `section` are those where it starts; a tiny chunk is kept unless `min_tokens` is set.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from synthgen.documents.pool import extract_many
from synthgen.documents.readers import Document, markdown_sections
from synthgen.documents.spans import Method, merge_short, page_at, section_path, split_document
from synthgen.record import Record, make_record_id
from synthgen.stages.base import MapStage, Stage, StageParams


class ExtractParams(StageParams):
    """`field` holds each file's path; `workers` processes extract when there are more than a few files
    (default: min(4, CPUs), taken when the stage runs, so the recipe's fingerprint does not depend on the machine:
    PDF parsing is CPU-bound and each worker holds one document)."""

    field: str = "path"
    workers: int | None = Field(default=None, ge=1, le=64)


class ExtractText(Stage):
    """One document record per readable file; unreadable ones are rejects with the reason (see documents.readers)."""

    name = "extract_text"
    row_wise = True
    Params = ExtractParams
    params: ExtractParams

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        waiting: deque[Record] = deque()  # records whose files are being read, in order

        def paths() -> Iterator[str]:
            for record in records:
                if self._has_path(record):
                    waiting.append(record)
                    yield str(record.fields[self.params.field])

        for outcome in extract_many(paths(), self.params.workers or min(4, os.cpu_count() or 1)):
            record = waiting.popleft()
            if isinstance(outcome, Document):
                yield self._document(record, outcome)
            else:
                self.ctx.reject(record, outcome[0], outcome[1])

    def _has_path(self, record: Record) -> bool:
        if isinstance(record.fields.get(self.params.field), str) and record.fields[self.params.field]:
            return True
        self.ctx.reject(record, "missing_field", f"no file path in field {self.params.field!r}")
        return False

    def _document(self, record: Record, document: Document) -> Record:
        path = str(record.fields[self.params.field])
        name = record.fields.get("name") or Path(path).name
        doc_id = make_record_id("document", name, document.sha256)
        fields = {"doc_id": doc_id, "path": path, "title": document.title, "text": document.text,
                  "pages": document.pages, "sections": document.sections}
        return Record(make_record_id(record.id, self.ctx.key), fields, {**record.meta, "parents": [record.id]})


class ChunkParams(StageParams):
    """How to cut `field`: `method` tokens (greedy, at the most natural boundary), sections (at headings) or
    paragraphs; at most `max_tokens` each (300: the WRAP and RAG-eval default size), `overlap` tokens shared by
    consecutive pieces of one cut, and chunks under `min_tokens` merged into a neighbour (0: none)."""

    field: str = "text"
    method: Method = "tokens"
    max_tokens: int = Field(default=300, ge=16, le=8192)
    overlap: int = Field(default=0, ge=0)
    min_tokens: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _sizes(self) -> ChunkParams:
        if self.overlap >= self.max_tokens // 2:
            raise ValueError(f"overlap ({self.overlap}) must be under half of max_tokens ({self.max_tokens})")
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})")
        return self


class Chunk(MapStage):
    """One record per chunk of each record's text; a record without text is a reject (`no_text`)."""

    name = "chunk"
    predictable = False
    Params = ChunkParams
    params: ChunkParams

    def map(self, record: Record) -> Iterator[Record]:
        p = self.params
        text = record.fields.get(p.field)
        if not isinstance(text, str) or not text.strip():
            self.ctx.reject(record, "no_text", f"no text in field {p.field!r}")
            return
        pages: list[dict[str, Any]] = record.fields.get("pages") or []
        sections: list[dict[str, Any]] = record.fields.get("sections") or []
        if p.method == "sections" and not sections and "sections" not in record.fields:
            sections = markdown_sections(text)  # a record from elsewhere (JSONL): its Markdown headings
        spans, dropped = merge_short(text, split_document(text, p.method, p.max_tokens, p.overlap, sections),
                                     p.min_tokens, p.max_tokens)
        doc_id = record.fields.get("doc_id") or record.id
        base = {"path": record.fields.get("path"), "title": record.fields.get("title")}
        for start, end in dropped:
            self.ctx.reject(record, "short_chunk", f"chars {start}-{end} are under min_tokens and fit no neighbour")
        for index, (start, end) in enumerate(spans):
            fields = {"doc_id": doc_id, "chunk_id": make_record_id("chunk", doc_id, start, end), "chunk_index": index,
                      "text": text[start:end], "start": start, "end": end, "page": page_at(pages, start),
                      "section": section_path(sections, start), **base}
            yield Record(make_record_id(record.id, self.ctx.key, index), fields, {**record.meta, "parents": [record.id]})
