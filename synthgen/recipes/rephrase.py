"""WRAP, "Rephrasing the Web" (Maini et al. 2024): documents are cut into chunks of at most ~300 tokens
(synthgen.recipes.chunking: paragraphs, lines, sentences, any script), each document is given one style drawn
by weight (easy / medium / hard / qa, from `taxonomies/rephrase.yaml`; as in the paper, `styles_per_doc: all`
for every style), each chunk is rephrased by an ordinary generate stage, the model's preambles are stripped,
rewrites that lost content are marked, chunks are re-assembled per (document, style), and the synthetic text
is mixed with real text (the paper trains on 1:1).

Choices: every (document, style) that reaches wrap_assemble ends as a row or a reject with its reason, and a
lost rewrite is replaced by its original chunk (marked in meta.wrap.kept_original) as long as `min_kept` of
the chunks kept theirs: a pretraining mix holds real text anyway, so one failed chunk of 55 should not
cost the other 54 rewrites. The mix counts unique real documents and never repeats one unless asked
(`repeat_real`): repeated documents would skew a pretraining mix silently, so a shortfall is reported in
stats.metrics instead (real_wanted, real_rows, real_repeated, real_missing).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from itertools import cycle, groupby, islice
from typing import Annotated, Literal

from pydantic import Field

from synthgen.errors import ConfigError
from synthgen.recipes.chunking import chunk_text
from synthgen.record import Record, make_record_id
from synthgen.stages.base import MapStage, Stage, StageContext, StageParams
from synthgen.stages.source import Source, SourceConfig
from synthgen.taxonomy import Taxonomy

_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok)[,!.]?\s*)?"
    r"(?:here(?:'s| is| are)|below is|the following is)[^\n]*?"
    r"(?:paraphras|rephras|rewrit|version|conversation|text|explanation)[^\n]*:\s*\n+",
    re.IGNORECASE,
)


def strip_preamble(text: str) -> str:
    """The rewrite without a leading "Here is a paraphrase of the text:"-style line."""
    return _PREAMBLE.sub("", text, count=1).strip()


class ChunkParams(StageParams):
    """Which text to cut, how finely, and in which styles to rephrase it: `styles_per_doc` styles drawn by
    weight per document (1, as in the paper: one style per document), or `all` of the selected `styles`."""

    text_field: str = "text"
    max_tokens: int = Field(default=300, ge=16, le=4096)
    taxonomy: str = "taxonomies/rephrase.yaml"
    styles: list[str] | None = None
    styles_per_doc: Annotated[int, Field(ge=1)] | Literal["all"] = 1


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
        if wanted == "all" or wanted >= len(styles):
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
    """Strips preambles from rewrites and marks those shorter than `min_ratio` of their chunk as lost
    (field `lost`: why, else None); wrap_assemble decides what a lost chunk costs its document."""

    name = "wrap_clean"
    Params = CleanParams
    params: CleanParams

    def map(self, record: Record) -> Iterator[Record]:
        text = strip_preamble(str(record.fields.get(self.params.field) or ""))
        source = str(record.fields.get(self.params.source_field) or "")
        lost = (f"{len(text)} characters for a {len(source)}-character chunk"
                if len(text) < self.params.min_ratio * len(source) else None)
        yield Record(record.id, {**record.fields, self.params.field: text, "lost": lost}, record.meta)


class AssembleParams(StageParams):
    """`min_kept`: the least share of a document's chunks whose rewrite must survive; `fill_lost`: what stands
    in for a lost rewrite in a kept document, the original chunk (marked in meta.wrap.kept_original) or nothing."""

    field: str = "rephrased"
    source_field: str = "chunk"
    min_kept: float = Field(default=1.0, ge=0.0, le=1.0)
    fill_lost: Literal["original", "omit"] = "original"


class WrapAssemble(Stage):
    """Joins the chunks of each (document, style), in order, into one text record. Every (document, style)
    whose chunks reach it is accounted for: assembled, or rejected as `all_chunks_lost` (no rewrite survived;
    never kept, even with min_kept 0: it would be the real text) or `incomplete_document` (under `min_kept`,
    or chunks that failed before this stage: their own rejects say why). Each lost rewrite is rejected as
    `lost_content`, with the rewrite."""

    name = "wrap_assemble"
    Params = AssembleParams
    params: AssembleParams

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for (doc_id, style), group in groupby(records, key=lambda r: (r.fields["doc_id"], r.fields["style"])):
            chunks = sorted(group, key=lambda r: r.fields["chunk_index"])
            for chunk in chunks:
                if chunk.fields.get("lost"):
                    self.ctx.reject(chunk, "lost_content", chunk.fields["lost"])
            lost = [c.fields["chunk_index"] for c in chunks if c.fields.get("lost")]
            total = chunks[0].fields["chunk_count"]
            missing = sorted(set(range(total)) - {c.fields["chunk_index"] for c in chunks})
            parts = [c.fields[self.params.source_field if c.fields.get("lost") else self.params.field] for c in chunks
                     if not c.fields.get("lost") or self.params.fill_lost == "original"]
            kept = total - len(lost) - len(missing)
            record = Record(make_record_id(doc_id, self.ctx.key, style),
                            {"text": "\n\n".join(parts), "style": style, "doc_id": doc_id},
                            {**chunks[0].meta, "parents": [c.id for c in chunks],
                             "wrap": {"chunks_total": total, "chunks_rewritten": kept,
                                      ("kept_original" if self.params.fill_lost == "original" else "omitted"): lost}})
            # provenance (source, steps) as the first chunk's: same doc and style
            if kept == 0:
                self.ctx.reject(record, "all_chunks_lost", f"none of {total} chunks kept its rewrite")
            elif missing or kept < self.params.min_kept * total:
                self.ctx.reject(record, "incomplete_document",
                                f"{kept} of {total} chunks rewritten; lost {lost}, failed earlier {missing}")
            else:
                yield record


class MixParams(StageParams):
    """Real documents to mix in, the real:synthetic proportion (the paper's is 1:1), and whether real documents
    may repeat when more are wanted than there are (by default each is used once and the mix runs short)."""

    real: SourceConfig
    text_field: str = "text"
    real_parts: float = Field(default=1.0, ge=0.0)
    synthetic_parts: float = Field(default=1.0, gt=0.0)
    repeat_real: bool = False


class MixReal(Stage):
    """Interleaves real documents with the synthetic ones at `real_parts : synthetic_parts`, counting unique
    documents: none repeats unless `repeat_real`. `stats.metrics` (and the card) say how many real rows were
    wanted, how many were written, how many of them are repeats and how many are missing.
    Output fields: text, kind ('real' or 'synthetic'), style."""

    name = "mix_real"
    Params = MixParams
    params: MixParams

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        source = Source(self.params.real, self.ctx.resolve(self.params.real.path))
        real = (cycle(source) if self.params.repeat_real else iter(source)) if self.params.real_parts > 0 else iter(())
        share, owed, wanted, repeats = self.params.real_parts / self.params.synthetic_parts, 0.0, 0, 0
        seen: set[str] = set()
        for record in records:
            yield Record(record.id, {"text": record.fields["text"], "kind": "synthetic",
                                     "style": record.fields.get("style")}, record.meta)
            owed += share
            wanted += int(owed)
            for doc in islice(real, int(owed)):
                repeats += doc.id in seen
                seen.add(doc.id)
                yield Record(make_record_id(record.id, self.ctx.key, "real", len(seen) + repeats),
                             {"text": doc.fields.get(self.params.text_field, ""), "kind": "real", "style": None},
                             {**doc.meta, "parents": [doc.id]})
            owed -= int(owed)
        self.ctx.stats.metrics[self.ctx.label] = {"real_wanted": wanted, "real_rows": len(seen) + repeats,
                                                  "real_unique": len(seen), "real_repeated": repeats,
                                                  "real_missing": wanted - len(seen) - repeats}
