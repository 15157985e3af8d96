"""WRAP, "Rephrasing the Web" (Maini et al. 2024): documents are cut into chunks of at most ~300 tokens
at sentence boundaries, each chunk is rephrased in a style (easy / medium / hard / qa, from
`taxonomies/rephrase.yaml`) by an ordinary generate stage, the model's preambles are stripped, rewrites
that lost content are rejected, chunks are re-assembled per (document, style), and the synthetic text is
mixed with real text (the paper trains on 1:1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from itertools import cycle, groupby, islice

from pydantic import Field

from synthgen.errors import ConfigError
from synthgen.record import Record, make_record_id
from synthgen.stages.base import MapStage, Stage, StageContext, StageParams
from synthgen.stages.source import Source, SourceConfig
from synthgen.taxonomy import Taxonomy
from synthgen.tokens import count_tokens

_SENTENCE_END = re.compile(r"(?<=[.!?][\"'”)\]])\s+|(?<=[.!?])\s+|\n\s*\n|\n(?=\S)")
_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok)[,!.]?\s*)?"
    r"(?:here(?:'s| is| are)|below is|the following is)[^\n]*?"
    r"(?:paraphras|rephras|rewrit|version|conversation|text|explanation)[^\n]*:\s*\n+",
    re.IGNORECASE,
)


def split_sentences(text: str) -> list[str]:
    """Sentences (and paragraphs) of `text`, whitespace-trimmed, none empty."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part and part.strip()]


def chunk_text(text: str, max_tokens: int) -> list[str]:
    """Consecutive sentences packed into chunks of at most `max_tokens`; a longer sentence is halved by words
    until each piece fits (a single word longer than the limit stays whole)."""
    sentences = split_sentences(text)
    pieces = list(zip(sentences, count_tokens(sentences), strict=True))
    while any(tokens > max_tokens and " " in piece for piece, tokens in pieces):
        split: list[str] = []
        for piece, tokens in pieces:
            words = piece.split(" ")
            if tokens > max_tokens and len(words) > 1:
                split += [" ".join(words[: len(words) // 2]), " ".join(words[len(words) // 2 :])]
            else:
                split.append(piece)
        pieces = list(zip(split, count_tokens(split), strict=True))
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for sentence, tokens in pieces:
        if current and size + tokens > max_tokens:
            chunks.append(" ".join(current))
            current, size = [], 0
        current.append(sentence)
        size += tokens
    if current:
        chunks.append(" ".join(current))
    return chunks


def strip_preamble(text: str) -> str:
    """The rewrite without a leading "Here is a paraphrase of the text:"-style line."""
    return _PREAMBLE.sub("", text, count=1).strip()


class ChunkParams(StageParams):
    """Which text to cut, how finely, and in which styles to rephrase it."""

    text_field: str = "text"
    max_tokens: int = Field(default=300, ge=16, le=4096)
    taxonomy: str = "taxonomies/rephrase.yaml"
    styles: list[str] | None = None
    styles_per_doc: int | None = Field(default=None, ge=1)


class WrapChunk(MapStage):
    """One record per (document, style, chunk): fields doc_id, style, chunk_index, chunk_count, chunk."""

    name = "wrap_chunk"
    Params = ChunkParams
    params: ChunkParams

    def __init__(self, params: ChunkParams, ctx: StageContext) -> None:  # type: ignore[override]
        super().__init__(params, ctx)
        leaves = {leaf.path: leaf.probability for leaf in Taxonomy.load(ctx.resolve(params.taxonomy)).leaves}
        unknown = sorted(set(params.styles or ()) - set(leaves))
        if unknown:
            raise ConfigError(str(ctx.recipe_path), f"stages[{ctx.index}].wrap_chunk.styles",
                              f"unknown style(s) {unknown}; {params.taxonomy} has {sorted(leaves)}")
        self.weights = {style: leaves[style] for style in params.styles or leaves}

    def map(self, record: Record) -> Iterator[Record]:
        text = record.fields.get(self.params.text_field)
        if not isinstance(text, str) or not text.strip():
            self.ctx.reject(record, "empty_document", f"no text in field {self.params.text_field!r}")
            return
        chunks = chunk_text(text, self.params.max_tokens)
        for style in self._styles(record):
            for index, chunk in enumerate(chunks):
                fields = {"doc_id": record.id, "style": style, "chunk_index": index, "chunk_count": len(chunks),
                          "chunk": chunk}
                meta = {**record.meta, "parents": [record.id]}
                yield Record(make_record_id(record.id, self.ctx.key, style, index), fields, meta)

    def _styles(self, record: Record) -> list[str]:
        """Every selected style, or `styles_per_doc` of them drawn by weight without replacement."""
        styles = list(self.weights)
        wanted = self.params.styles_per_doc
        if wanted is None or wanted >= len(styles):
            return styles
        rng = self.rng(record)
        keys = {style: rng.random() ** (1.0 / self.weights[style]) for style in styles}  # weighted sampling
        return sorted(styles, key=lambda style: -keys[style])[:wanted]


class CleanParams(StageParams):
    """The rewrite's field, the chunk it rewrote, and the least share of its length it must keep."""

    field: str = "rephrased"
    source_field: str = "chunk"
    min_ratio: float = Field(default=0.5, ge=0.0, le=10.0)


class WrapClean(MapStage):
    """Strips preambles from rewrites and rejects those shorter than `min_ratio` of their chunk (lost content)."""

    name = "wrap_clean"
    Params = CleanParams
    params: CleanParams

    def map(self, record: Record) -> Iterator[Record]:
        text = strip_preamble(str(record.fields.get(self.params.field) or ""))
        source = str(record.fields.get(self.params.source_field) or "")
        if len(text) < self.params.min_ratio * len(source):
            self.ctx.reject(record, "lost_content", f"{len(text)} characters for a {len(source)}-character chunk")
            return
        yield Record(record.id, {**record.fields, self.params.field: text}, record.meta)


class AssembleParams(StageParams):
    """`min_kept`: the least share of a document's chunks that must survive for it to be assembled."""

    field: str = "rephrased"
    min_kept: float = Field(default=1.0, ge=0.0, le=1.0)


class WrapAssemble(Stage):
    """Joins the surviving chunks of each (document, style), in order, into one text record."""

    name = "wrap_assemble"
    Params = AssembleParams
    params: AssembleParams

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for (doc_id, style), group in groupby(records, key=lambda r: (r.fields["doc_id"], r.fields["style"])):
            chunks = sorted(group, key=lambda r: r.fields["chunk_index"])
            total = chunks[0].fields["chunk_count"]
            record = Record(make_record_id(doc_id, self.ctx.key, style),
                            {"text": "\n\n".join(c.fields[self.params.field] for c in chunks), "style": style,
                             "doc_id": doc_id},
                            {**chunks[0].meta, "parents": [c.id for c in chunks], "chunks_kept": len(chunks),
                             "chunks_total": total})  # provenance (source, steps) as the first chunk's: same doc and style
            if len(chunks) < self.params.min_kept * total:
                self.ctx.reject(record, "incomplete_document", f"{len(chunks)} of {total} chunks survived")
                continue
            yield record


class MixParams(StageParams):
    """Real documents to mix in, and the real:synthetic proportion (the paper's is 1:1)."""

    real: SourceConfig
    text_field: str = "text"
    real_parts: float = Field(default=1.0, ge=0.0)
    synthetic_parts: float = Field(default=1.0, gt=0.0)


class MixReal(Stage):
    """Interleaves real documents with the synthetic ones at `real_parts : synthetic_parts`; real documents
    are cycled when more are needed than there are. Output fields: text, kind ('real' or 'synthetic'), style."""

    name = "mix_real"
    Params = MixParams
    params: MixParams

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        source = Source(self.params.real, self.ctx.resolve(self.params.real.path))
        real = cycle(source) if self.params.real_parts > 0 else iter(())
        share, owed = self.params.real_parts / self.params.synthetic_parts, 0.0
        for record in records:
            yield Record(record.id, {"text": record.fields["text"], "kind": "synthetic",
                                     "style": record.fields.get("style")}, record.meta)
            owed += share
            for doc in islice(real, int(owed)):
                yield Record(make_record_id(record.id, self.ctx.key, "real", owed),
                             {"text": doc.fields.get(self.params.text_field, ""), "kind": "real", "style": None},
                             {**doc.meta, "parents": [doc.id]})
                owed -= 1
