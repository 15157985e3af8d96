"""Round-trip consistency (Promptagator, Dai et al. 2022): a generated query is kept only if the passage it was
generated from ranks in the top `top_k` for it among all passages of the run under the embedding model.

Why `top_k: 1` by default: it is the paper's setting, and it is the one that makes the query identify its
passage. A query whose passage ranks second has a passage that the retriever finds more relevant; training on
it teaches the model to push that passage down as a negative, though it is often just as good an answer (the
false negatives that mining's guard tries to catch afterwards). With many near-duplicate passages (chunks of one
long page) `top_k: 3` keeps more queries at that risk; bench/corpus_triplets.py measures both.

Beyond the paper, `min_similarity` (off by default): a rank among a small corpus is won by default when no
passage matches the query at all. A small model copies its few-shot examples ("replace bike inner tube" for a
passage about teleconferences); among 22 dolma passages such copies ranked first at cosine 0.07-0.24, while the
kept queries about their passages scored 0.62-0.75 (SmolLM2-135M; the shipped recipe sets 0.3).

The corpus is every distinct passage among the input records (the passages that got queries); the records are
spilled and replayed, and per passage and query the stage holds the text and its float32 vector.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydantic import Field

from synthgen.embedding.encoder import DEFAULT_MODEL
from synthgen.record import Record
from synthgen.stages.base import StageParams, TextPairStage
from synthgen.stages.spill import Spilled


class RoundTripParams(StageParams):
    """Keep a query (`query_field`) whose own passage (`passage_field`) ranks within `top_k` among the passages."""

    query_field: str = "query"
    passage_field: str = "text"
    top_k: int = Field(default=1, ge=1, le=100, description="1: the passage must be the query's best match (Promptagator)")
    min_similarity: float = Field(default=-1.0, ge=-1.0, le=1.0, description="and its cosine to the query at least this")
    model: str = DEFAULT_MODEL
    batch_size: int = Field(default=64, ge=1)


class RoundTripFilter(TextPairStage):
    """Drops queries whose passage is not retrieved (reason `round_trip_failed`, the rank in the detail) or is
    retrieved at a cosine under `min_similarity` (`round_trip_low_similarity`); a kept
    record gets meta.scores.round_trip_rank (1 = first) and round_trip_similarity."""

    name = "round_trip_filter"
    Params = RoundTripParams
    params: RoundTripParams

    def pair_fields(self) -> tuple[str, str]:
        return self.params.query_field, self.params.passage_field

    def emit(self, records: Spilled) -> Iterator[Record]:
        if not self.queries:
            return
        p = self.params
        corpus = list(dict.fromkeys(text for text in self.passages if text.strip()))
        position = {text: index for index, text in enumerate(corpus)}
        encoder = self.ctx.encoder(p.model, p.batch_size)
        scores = encoder.encode(self.queries) @ encoder.encode(corpus).T
        for row, record in enumerate(records):
            own = position.get(self.passages[row])
            if own is None or not self.queries[row].strip():
                self.ctx.reject(record, "round_trip_empty", f"no {p.query_field if own is not None else p.passage_field}")
                continue
            own_score = scores[row, own]
            rank = 1 + int(np.count_nonzero(scores[row] > own_score))
            if rank > p.top_k:
                self.ctx.reject(record, "round_trip_failed", f"own passage ranked {rank} of {len(corpus)} (top_k={p.top_k})")
                continue
            if own_score < p.min_similarity:
                detail = f"own passage ranked {rank}, cosine {own_score:.3f} < {p.min_similarity}"
                self.ctx.reject(record, "round_trip_low_similarity", detail)
                continue
            scores_meta = {**record.meta.get("scores", {}), "round_trip_rank": rank,
                           "round_trip_similarity": round(float(own_score), 4)}
            yield Record(record.id, record.fields, {**record.meta, "scores": scores_meta})
