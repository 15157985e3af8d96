"""Embedding stages: semantic dedup (SemDeDup's rule) and diversity selection of k of N, each measuring the
set's diversity before and after itself in `stats.metrics[<stage label>]`.

Both need every record before they decide (whole-set stages): records are spilled to Parquet in the run
directory while their texts are embedded in chunks, so only the vectors (one n x 384 float32 array for MiniLM:
1,536 bytes per record) and the ids (a list of str, ~80 bytes each) stay in memory, plus for diversity_select a
float64 score and an int32 label code per record; the survivors are then read back and emitted in input order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from synthgen.dedup.index import Match
from synthgen.dedup.text import field_text
from synthgen.embedding import approximate, diversity
from synthgen.embedding.encoder import DEFAULT_MODEL, Encoder
from synthgen.embedding.rows import Rows
from synthgen.errors import ConfigError
from synthgen.fields import stage_fields
from synthgen.record import Record
from synthgen.stages.base import StageParams, WholeSetStage
from synthgen.stages.dedup import reject_duplicate
from synthgen.stages.spill import Spilled


class EmbeddingParams(StageParams):
    """Which fields, joined, are embedded, and by which sentence-transformers model."""

    fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    model: str = DEFAULT_MODEL
    batch_size: int = Field(default=64, ge=1)


class EmbeddingStage(WholeSetStage):
    """Base of the stages that need every record's embedding: each spilled chunk is embedded on the way, then
    the stage decides over `vectors()` and `ids`."""

    params: EmbeddingParams

    def embedded_texts(self) -> tuple[str, int, list[str]]:
        return self.params.model, self.params.batch_size, self.params.fields

    def start(self) -> None:
        self.ids: list[str] = []
        self._vectors = Rows(np.float32)
        self._encoder: Encoder | None = None

    def prepare(self, records: Iterable[Record]) -> Iterable[Record]:
        return stage_fields(records, self, "fields")

    def see(self, batch: list[Record]) -> None:
        self.ids.extend(record.id for record in batch)
        self._encoder = self._encoder or self.ctx.encoder(self.params.model, self.params.batch_size)
        self._vectors.append(self._encoder.encode([field_text(r.fields, self.params.fields) for r in batch]))

    def vectors(self) -> np.ndarray:
        """The (n, d) unit vectors of the input, in order."""
        return self._vectors.trim()


class SemanticDedupParams(EmbeddingParams):
    """`threshold`: the cosine at or above which a record duplicates one kept before it."""

    threshold: float = Field(default=diversity.DEFAULT_THRESHOLD, gt=0, le=1)
    exact_limit: int = Field(default=diversity.EXACT_LIMIT, ge=1,
                             description="above this many records, find the duplicate pairs approximately")
    approximate: Literal["auto", "faiss", "kmeans"] = Field(
        default="auto", description="past exact_limit: a FAISS IVF index (auto: when installed) or k-means partitions")


class SemanticDedup(EmbeddingStage):
    """Drops records whose embedding is within `threshold` cosine of a record kept before it (SemDeDup).

    Each reject names the kept record it duplicates (`meta.duplicate_of`) and their cosine (`meta.similarity`).
    Needs all records (spilled to disk); past `exact_limit` records the pairs are found approximately
    (`synthgen.embedding.approximate`) and the metrics add the backend and `approx_recall`, measured on a sample.
    """

    name = "semantic_dedup"
    Params = SemanticDedupParams
    params: SemanticDedupParams

    def emit(self, records: Spilled) -> Iterator[Record]:
        vectors, ids = self.vectors(), self.ids
        if not ids:
            return
        p = self.params
        found = diversity.semantic_duplicates(vectors, p.threshold, p.exact_limit, self.ctx.seed, p.approximate)
        duplicates = {dropped: (kept, similarity) for dropped, kept, similarity in found}
        keep = np.ones(len(ids), dtype=bool)
        keep[list(duplicates)] = False
        metrics = self.ctx.stats.metrics[self.ctx.label] = {
            "before": diversity.diversity_metrics(vectors, self.ctx.seed),
            "after": diversity.diversity_metrics(vectors[keep], self.ctx.seed),
            "dropped": len(duplicates),
        }
        if len(ids) > p.exact_limit:
            metrics["approximate"] = approximate.backend(p.approximate)
            metrics["approx_recall"] = approximate.sampled_recall(vectors, ~keep, p.threshold, self.ctx.seed)
        for position, record in enumerate(records):
            if position in duplicates:
                kept, similarity = duplicates[position]
                reject_duplicate(self.ctx, record, "semantic_duplicate", Match(ids[kept], similarity), "cosine")
            else:
                yield record


class DiversitySelectParams(EmbeddingParams):
    """Keep `k` records (or a `fraction` of them) chosen by `method`; see `synthgen.embedding.diversity`."""

    k: int | None = Field(default=None, ge=1)
    fraction: float | None = Field(default=None, gt=0, le=1)
    method: Literal["kmeans_medoids", "k_center", "mmr", "random"] = "kmeans_medoids"
    score: str | None = Field(default=None, description="mmr's relevance: a meta.scores key or a field name")
    lambda_: float = Field(default=0.5, ge=0, le=1,
                           description="mmr: 1 ranks by score alone, 0 by novelty alone (scores are min-max scaled to [0, 1])")
    seed: int | None = Field(default=None, description="default: the run's seed")
    label_field: str | None = Field(default=None, description="a field whose distinct values count as coverage")

    @model_validator(mode="after")
    def _one_size(self) -> DiversitySelectParams:
        if (self.k is None) == (self.fraction is None):
            raise ValueError("give exactly one of `k` (records to keep) or `fraction` (of the input)")
        if self.method == "mmr" and not self.score:
            raise ValueError("method: mmr needs `score`: the meta.scores key or field to rank by")
        return self


class DiversitySelect(EmbeddingStage):
    """Keeps k records spread over the embedding space; the others are rejected as `not_selected`.

    Needs all records (spilled to disk). The default method, k-means medoids, keeps one typical record per
    mode of the data, which covers more of its real categories than random or farthest-point picks.
    """

    name = "diversity_select"
    Params = DiversitySelectParams
    params: DiversitySelectParams

    def start(self) -> None:
        super().start()
        self.scores = Rows(np.float64)  # NaN where a record has no numeric score
        self.labels = Rows(np.int32)  # each record's label as a code: its label's index in `_codes`
        self._codes: dict[str, int] = {}

    def prepare(self, records: Iterable[Record]) -> Iterable[Record]:
        return super().prepare(stage_fields(records, self, "label_field"))

    def see(self, batch: list[Record]) -> None:
        p = self.params
        if p.score:
            values = (record.meta.get("scores", {}).get(p.score, record.fields.get(p.score)) for record in batch)
            self.scores.append(np.array([float(v) if isinstance(v, (int, float)) else np.nan for v in values]))
        if p.label_field:
            keys = (repr(record.fields.get(p.label_field)) for record in batch)
            self.labels.append(np.array([self._codes.setdefault(key, len(self._codes)) for key in keys]))
        super().see(batch)

    def emit(self, records: Spilled) -> Iterator[Record]:
        vectors = self.vectors()
        if not self.ids:
            return
        chosen = self._select(vectors, self.scores.trim())
        keep = np.zeros(len(self.ids), dtype=bool)
        keep[chosen] = True
        self._measure(vectors, keep, self.labels.trim())
        for position, record in enumerate(records):
            if keep[position]:
                yield record
            else:
                self.ctx.reject(record, "not_selected", self.params.method)

    def _select(self, vectors: np.ndarray, scores: np.ndarray) -> np.ndarray:
        p = self.params
        k = p.k if p.k is not None else max(1, round((p.fraction or 1.0) * len(vectors)))
        seed = self.ctx.seed if p.seed is None else p.seed
        if p.method == "mmr":
            if np.isnan(scores).all():
                raise ConfigError(str(self.ctx.recipe_path), f"stages[{self.ctx.index}].diversity_select.score",
                                  f"no record has a numeric {p.score!r} in meta.scores or its fields")
            low, high = np.nanmin(scores), np.nanmax(scores)
            scaled = (np.nan_to_num(scores, nan=low) - low) / (high - low or 1.0)  # [0, 1], like the cosine; unscored last
            return diversity.mmr(vectors, k, scaled, p.lambda_)
        select = {"kmeans_medoids": diversity.kmeans_medoids, "k_center": diversity.k_center,
                  "random": diversity.random_subset}[p.method]
        return select(vectors, k, seed)

    def _measure(self, vectors: np.ndarray, keep: np.ndarray, labels: np.ndarray) -> None:
        before = diversity.diversity_metrics(vectors, self.ctx.seed)
        after = diversity.diversity_metrics(vectors[keep], self.ctx.seed)
        if self.params.label_field:
            before["labels"] = len(self._codes)
            after["labels"] = len(np.unique(labels[keep]))
        self.ctx.stats.metrics[self.ctx.label] = {"before": before, "after": after, "method": self.params.method}
