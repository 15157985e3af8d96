"""Keeps a rewrite only when it is still a rewrite of its source: the checks below run in order and the first
that fails names the reason (used for reformatted responses, paraphrases and back-translations).

- `rewrite_failed`: no rewrite text (its request failed upstream: `generate` with `on_failure: keep_input`).
- `identical_to_source` (`reject_identical`): normalised text (case, punctuation, spacing) equal to the source, so
  the "rewrite" adds nothing; a back-translation that came back unchanged is the common case.
- `too_short` (`min_length_ratio`): ReAlign's length rule: a rewrite shorter (in characters) than this share of
  the source lost content; cosine alone misses it, because the first 40% of an answer's sentences still embeds
  close to the whole.
- `drifted_meaning` / `too_similar`: the embedding cosine to the source outside [`min_cosine`, `max_cosine`].

`on_fail: reject` (default) drops a failing record; `on_fail: keep_reference` keeps it with the source text in
`field` and the reason in `meta.kept_original` (ReAlign keeps the original answer whenever its rewrite is
unusable, so no instruction is lost to a failed rewrite).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from synthgen.dedup.text import normalize
from synthgen.embedding.encoder import DEFAULT_MODEL, Encoder
from synthgen.fields import stage_fields
from synthgen.record import Record
from synthgen.stages.base import Stage, StageParams


class SimilarityParams(StageParams):
    """The rewritten field, the field it rewrote, the checks to run and what a failure does."""

    field: str
    reference: str
    min_cosine: float = Field(default=0.8, ge=-1, le=1)
    max_cosine: float | None = Field(default=None, ge=-1, le=1)
    min_length_ratio: float | None = Field(default=None, gt=0)
    reject_identical: bool = False
    on_fail: Literal["reject", "keep_reference"] = "reject"
    model: str = DEFAULT_MODEL
    batch_size: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _band(self) -> SimilarityParams:
        if self.max_cosine is not None and self.max_cosine < self.min_cosine:
            raise ValueError(f"max_cosine {self.max_cosine} < min_cosine {self.min_cosine}: the band is empty")
        return self


class SimilarityFilter(Stage):
    """Checks each record's `field` against `reference` (see the module docstring); the cosine goes to
    `meta.scores`. Embeds in batches, through the run's embedding cache."""

    name = "similarity_filter"
    Params = SimilarityParams
    params: SimilarityParams

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        p = self.params
        encoder = self.ctx.encoder(p.model)
        batch: list[Record] = []
        for record in stage_fields(records, self, "field", "reference"):
            batch.append(record)
            if len(batch) == p.batch_size:
                yield from self._judge(batch, encoder)
                batch = []
        yield from self._judge(batch, encoder)

    def _judge(self, batch: list[Record], encoder: Encoder) -> Iterator[Record]:
        if not batch:
            return
        p = self.params
        rewritten = encoder.encode([str(r.fields.get(p.field) or "") for r in batch])
        original = encoder.encode([str(r.fields.get(p.reference) or "") for r in batch])
        for record, cosine in zip(batch, np.sum(rewritten * original, axis=1), strict=True):
            scores = {**record.meta.get("scores", {}), f"cosine_{p.field}_{p.reference}": round(float(cosine), 4)}
            scored = Record(record.id, record.fields, {**record.meta, "scores": scores})
            failed = self._failure(scored, float(cosine))
            if failed is None:
                yield scored
            elif p.on_fail == "keep_reference":
                reason, detail = failed
                meta = {**scored.meta, "kept_original": {"reason": reason, "detail": detail}}
                yield Record(record.id, {**record.fields, p.field: record.fields.get(p.reference)}, meta)
            else:
                self.ctx.reject(scored, *failed)

    def _failure(self, record: Record, cosine: float) -> tuple[str, str] | None:
        """The first failed check's reason and detail, or None."""
        p = self.params
        text, source = record.fields.get(p.field), str(record.fields.get(p.reference) or "")
        if not isinstance(text, str):
            upstream = record.meta.get("failure", {}).get("reason", "no text")
            return "rewrite_failed", f"no {p.field} ({upstream})"
        if p.reject_identical and normalize(text) == normalize(source):
            return "identical_to_source", f"{p.field} equals {p.reference} after normalisation"
        if p.min_length_ratio is not None and len(text.strip()) < p.min_length_ratio * len(source.strip()):
            return "too_short", (f"{p.field} has {len(text.strip())} characters, < {p.min_length_ratio} x "
                                 f"{len(source.strip())} of {p.reference}")
        if cosine < p.min_cosine:
            return "drifted_meaning", f"cosine {cosine:.3f} between {p.field} and {p.reference} < {p.min_cosine}"
        if p.max_cosine is not None and cosine > p.max_cosine:
            return "too_similar", f"cosine {cosine:.3f} between {p.field} and {p.reference} > {p.max_cosine}"
        return None
