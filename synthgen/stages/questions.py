"""One question task per (chunk, question kind): what a grounded Q&A recipe asks the generator for.

Each chunk record ({doc_id, chunk_id, text, start, ...}, as the `chunk` stage writes them) becomes one record per
kind in `kinds`, with the kind in `kind_field` and the passages the question is about in `contexts` (texts),
`source_ids` (their chunk ids) and `source_starts` (their character offsets in the document, None where unknown).
A kind in `paired_kinds` (comparison questions) gets a second passage: another chunk of the same document, drawn
seeded; a document of one chunk has no such question. Chunks of one document must come one after another (as
the chunker writes them): the stage holds one document at a time, so it streams any corpus size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import groupby

from pydantic import Field, model_validator

from synthgen.fields import stage_fields
from synthgen.record import Record, make_record_id
from synthgen.stages.base import Stage, StageParams


class ChunkQuestionsParams(StageParams):
    """The kinds to ask per chunk and the chunk records' field names."""

    kinds: list[str] = Field(default_factory=lambda: ["factual", "explanatory", "comparison", "unanswerable"], min_length=1)
    paired_kinds: list[str] = Field(default_factory=lambda: ["comparison"], description="kinds about two chunks of a document")
    kind_field: str = "kind"
    text_field: str = "text"
    id_field: str = "chunk_id"
    doc_field: str = "doc_id"
    start_field: str = "start"

    @model_validator(mode="after")
    def _known_pairs(self) -> ChunkQuestionsParams:
        if unknown := sorted(set(self.paired_kinds) - set(self.kinds)):
            raise ValueError(f"paired_kinds {unknown} are not in kinds {self.kinds}")
        return self


class ChunkQuestions(Stage):
    """Fans each chunk out to its question kinds, pairing chunks of one document for the paired kinds."""

    name = "chunk_questions"
    Params = ChunkQuestionsParams
    params: ChunkQuestionsParams

    def outputs(self, inputs: int) -> int:
        return inputs * len(self.params.kinds)  # at most: a document of one chunk gets no paired kinds

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        p = self.params
        checked = stage_fields(records, self, "text_field", "id_field", "doc_field")
        for _doc, chunks in groupby(checked, key=lambda r: r.fields.get(p.doc_field)):
            document = list(chunks)
            for record in document:
                others = [r for r in document if r.id != record.id]
                for kind in p.kinds:
                    passages = [record]
                    if kind in p.paired_kinds:
                        if not others:
                            continue
                        passages.append(self.rng(record, kind).choice(others))
                    yield self._task(record, kind, passages)

    def _task(self, record: Record, kind: str, passages: list[Record]) -> Record:
        p = self.params
        fields = {**record.fields, p.kind_field: kind,
                  "contexts": [r.fields[p.text_field] for r in passages],
                  "source_ids": [r.fields[p.id_field] for r in passages],
                  "source_starts": [r.fields.get(p.start_field) for r in passages]}
        meta = {**record.meta, "parents": [r.id for r in passages]}
        return Record(make_record_id(record.id, self.ctx.key, kind), fields, meta)
