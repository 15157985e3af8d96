"""Keeps a rewrite only when it still means what it rewrote: the embedding cosine between two fields must
reach a threshold (used to verify reformatted responses, paraphrases and back-translations)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from pydantic import Field

from synthgen.embedding.encoder import DEFAULT_MODEL, Encoder
from synthgen.fields import stage_fields
from synthgen.record import Record
from synthgen.stages.base import Stage, StageParams


class SimilarityParams(StageParams):
    """The rewritten field, the field it must stay close to, and how close."""

    field: str
    reference: str
    min_cosine: float = Field(default=0.8, ge=-1, le=1)
    model: str = DEFAULT_MODEL
    batch_size: int = Field(default=256, ge=1)


class SimilarityFilter(Stage):
    """Rejects records whose `field` drifted from `reference` (cosine below `min_cosine`); the cosine goes to
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
            kept = Record(record.id, record.fields, {**record.meta, "scores": scores})
            if cosine >= p.min_cosine:
                yield kept
            else:
                self.ctx.reject(kept, "drifted_meaning", f"cosine {cosine:.3f} between {p.field} and {p.reference} "
                                                         f"< {p.min_cosine}")
