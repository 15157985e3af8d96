"""Retrieval data after E5 (Wang et al. 2024): validators, the (anchor, positive, negative) mapping, and
hard-negative mining by embedding similarity with a false-negative guard.

The generation itself is two ordinary generate stages over `taxonomies/e5.yaml` (see
`recipes/e5_retrieval.yaml`); what is here is what a template cannot do.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydantic import Field

from synthgen.dedup.text import normalize
from synthgen.embedding.encoder import DEFAULT_MODEL
from synthgen.record import Record
from synthgen.stages.base import Filter, MapStage, StageParams, WholeSetStage
from synthgen.stages.source import Source, SourceConfig
from synthgen.stages.spill import Spilled

# task kind (last segment of the leaf path) -> (query field, positive field, negative field or None)
TASK_FIELDS: dict[str, tuple[str, str, str | None]] = {
    "short-long": ("user_query", "positive_document", "hard_negative_document"),
    "long-short": ("input_text", "label", "misleading_label"),
    "short-short": ("input", "positive_document", None),
    "long-long": ("input", "positive_document", None),
    "sts": ("S1", "S2", "S3"),
    "bitext": ("S1", "S2", "S3"),
}
SYMMETRIC_INSTRUCTIONS = {
    "sts": "Retrieve semantically similar text.",
    "bitext": "Retrieve parallel sentences.",
}
_SPAN_CHECKED = {"short-long", "short-short", "long-long"}  # kinds whose query must not be copied from the positive


class TaskParams(StageParams):
    """`type_field` holds the taxonomy leaf path (written by generate's `leaf_field`)."""

    type_field: str = "task_type"


def task_kind(record: Record, type_field: str) -> str:
    """'short-long', 'sts', ... from a leaf path such as 'asymmetric/short-long'."""
    return str(record.fields.get(type_field, "")).rsplit("/", 1)[-1]


class E5Validate(Filter):
    """The paper's checks: every field non-empty, positive differs from negative, and the query is not a
    verbatim span of the positive."""

    name = "e5_validate"
    Params = TaskParams
    params: TaskParams

    def keep(self, record: Record) -> str | None:
        kind = task_kind(record, self.params.type_field)
        if kind not in TASK_FIELDS:
            return "unknown_task_type"
        query, positive, negative = TASK_FIELDS[kind]
        for name in (query, positive, negative):
            if name is not None and not (isinstance(record.fields.get(name), str) and record.fields[name].strip()):
                return f"empty_{name}"
        query_text, positive_text = normalize(record.fields[query]), normalize(record.fields[positive])
        negative_text = normalize(record.fields[negative]) if negative is not None else None
        if positive_text == negative_text:
            return "positive_equals_negative"
        if kind in ("sts", "bitext") and query_text in (positive_text, negative_text):
            return "duplicate_sentences"
        if kind in _SPAN_CHECKED and query_text and query_text in positive_text:
            return "query_copied_from_positive"
        return None


class E5Triplets(MapStage):
    """Maps every task kind onto {instruction, anchor, positive, negative, task_type} for contrastive training
    (sentence-transformers reads anchor/positive/negative); `negative` is null where the task has none."""

    name = "e5_triplets"
    Params = TaskParams
    params: TaskParams

    def map(self, record: Record) -> Iterator[Record]:
        kind = task_kind(record, self.params.type_field)
        if kind not in TASK_FIELDS:
            detail = f"{self.params.type_field}={record.fields.get(self.params.type_field)!r}"
            self.ctx.reject(record, "unknown_task_type", detail)
            return
        query, positive, negative = TASK_FIELDS[kind]
        fields = {
            "instruction": record.fields.get("task") or SYMMETRIC_INSTRUCTIONS.get(kind, ""),
            "anchor": record.fields[query],
            "positive": record.fields[positive],
            "negative": record.fields[negative] if negative else None,
            "task_type": record.fields[self.params.type_field],
        }
        yield Record(record.id, fields, record.meta)


class MiningParams(StageParams):
    """Hard negatives for `query_field` from the other records' positives and an optional extra corpus."""

    query_field: str = "anchor"
    positive_field: str = "positive"
    negative_field: str = "negative"
    corpus: SourceConfig | None = None
    corpus_field: str = "text"
    k: int = Field(default=3, ge=1, le=100)
    margin: float = Field(default=0.0, ge=0.0, le=1.0, description="a negative must be this much less similar than the positive")
    fill_negative: bool = True
    model: str = DEFAULT_MODEL
    batch_size: int = Field(default=64, ge=1)


class MineHardNegatives(WholeSetStage):
    """Adds `mined_negatives` (most similar corpus texts that are not the record's own positive).

    False-negative guard: a candidate at least as similar to the query as the record's positive (minus
    `margin`) is probably relevant too, so it is skipped rather than used as a negative. Needs every
    record before it can mine (the corpus includes all positives).
    """

    name = "mine_hard_negatives"
    Params = MiningParams
    params: MiningParams

    def start(self) -> None:
        self.queries: list[str] = []
        self.positives: list[str] = []

    def see(self, batch: list[Record]) -> None:
        self.queries.extend(str(r.fields.get(self.params.query_field) or "") for r in batch)
        self.positives.extend(str(r.fields.get(self.params.positive_field) or "") for r in batch)

    def emit(self, records: Spilled) -> Iterator[Record]:
        if not self.queries:
            return
        p = self.params
        corpus = list(dict.fromkeys(self.positives))
        if p.corpus is not None:
            source = Source(p.corpus, self.ctx.resolve(p.corpus.path))
            corpus.extend(str(row.fields.get(p.corpus_field) or "") for row in source)
        corpus = [text for text in dict.fromkeys(corpus) if text.strip()]
        encoder = self.ctx.encoder(p.model, p.batch_size)
        queries, positives = encoder.encode(self.queries), encoder.encode(self.positives)
        corpus_vectors = encoder.encode(corpus)
        for row, record in enumerate(records):
            positive_score = float(queries[row] @ positives[row])
            scores = corpus_vectors @ queries[row]
            own = {normalize(str(record.fields.get(name) or "")) for name in (p.positive_field, p.negative_field)}
            mined: list[str] = []
            mined_scores: list[float] = []
            guarded = 0
            for index in np.argsort(-scores):
                text = corpus[int(index)]
                if normalize(text) in own:
                    continue
                if scores[index] >= positive_score - p.margin:
                    guarded += 1
                    continue
                mined.append(text)
                mined_scores.append(round(float(scores[index]), 4))
                if len(mined) == p.k:
                    break
            fields = {**record.fields, "mined_negatives": mined}
            if p.fill_negative and not fields.get(p.negative_field) and mined:
                fields[p.negative_field] = mined[0]
            scores_meta = {**record.meta.get("scores", {}), "positive_similarity": round(positive_score, 4),
                           "mined_negative_similarity": mined_scores, "false_negatives_skipped": guarded}
            yield Record(record.id, fields, {**record.meta, "scores": scores_meta})
