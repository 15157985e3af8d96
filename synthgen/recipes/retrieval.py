"""Retrieval data after E5 (Wang et al. 2024): the sampled languages, validators, the (anchor, positive,
negative) mapping, and hard-negative mining by embedding similarity with a false-negative guard.

The generation itself is two ordinary generate stages over `taxonomies/e5.yaml` (see
`recipes/e5_retrieval.yaml`); what is here is what a template cannot do.

Why the copy check is token-level and for long queries only: the paper states "avoid copying the query
verbatim" as a prompt guideline, not a filter. A relevant document naturally contains a short query's words
("tax", "sourdough starter"), and a character test matches inside words ("cat" in "domesticated"), so a check
on every query rejects good pairs. A long query (`copy_min_words`, default 8, above the paper's "5 to 15 words"
median) found as a run of whole words in the positive is a copied span that makes the pair trivial: that one
is still rejected.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydantic import Field

from synthgen.dedup.text import normalize
from synthgen.embedding.encoder import DEFAULT_MODEL
from synthgen.errors import ConfigError
from synthgen.record import Record
from synthgen.stages.base import Filter, MapStage, StageContext, StageParams, TextPairStage
from synthgen.stages.source import Source, SourceConfig
from synthgen.stages.spill import Spilled
from synthgen.taxonomy import Taxonomy

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


class ValidateParams(TaskParams):
    """A query of at least `copy_min_words` words must not appear word for word in the positive."""

    copy_min_words: int = Field(default=8, ge=1, description="shorter queries are not checked for copying")


def contains_words(text: str, span: str) -> bool:
    """Whether the normalized words of `span` occur as a contiguous run of whole words in `text`."""
    words = normalize(span)
    return bool(words) and f" {words} " in f" {normalize(text)} "


def task_kind(record: Record, type_field: str) -> str:
    """'short-long', 'sts', ... from a leaf path such as 'asymmetric/short-long'."""
    return str(record.fields.get(type_field, "")).rsplit("/", 1)[-1]


class LanguageParams(StageParams):
    """One language per field in `fields`, all different, drawn by weight from the `languages` taxonomy (each leaf
    a language: its weight, and its name in a `language` placeholder)."""

    languages: str = "taxonomies/e5_languages.yaml"
    fields: list[str] = Field(default_factory=lambda: ["language"], min_length=1)


class E5Languages(MapStage):
    """Adds the languages a record's prompt asks for, as the paper samples them: from XLM-R's language list,
    weighted towards high-resource languages (the weights and their source are in the taxonomy file)."""

    name = "e5_languages"
    Params = LanguageParams
    params: LanguageParams

    def __init__(self, params: LanguageParams, ctx: StageContext) -> None:
        super().__init__(params, ctx)
        self.languages = Taxonomy.load(ctx.resolve(params.languages))
        unnamed = [leaf.path for leaf in self.languages.leaves if "language" not in leaf.placeholders]
        if unnamed or len(self.languages.leaves) < len(params.fields):
            problem = f"leaf {unnamed[0]!r} has no `language` placeholder" if unnamed else \
                f"has {len(self.languages.leaves)} languages, fewer than the {len(params.fields)} fields"
            raise ConfigError(params.languages, None, problem)

    def map(self, record: Record) -> Iterator[Record]:
        rng = self.rng(record)
        names: dict[str, str] = {}
        for field in self.params.fields:
            language = self.languages.sample(rng)[1]["language"]
            while language in names.values():  # a different language for each field (bitext: source != target)
                language = self.languages.sample(rng)[1]["language"]
            names[field] = language
        yield Record(record.id, {**record.fields, **names}, record.meta)


class E5Validate(Filter):
    """The paper's checks: every field non-empty, positive differs from negative, a long query is not copied
    from the positive, and a classification text does not contain its labels."""

    name = "e5_validate"
    Params = ValidateParams
    params: ValidateParams

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
        if kind in _SPAN_CHECKED and len(query_text.split()) >= self.params.copy_min_words \
                and contains_words(positive_text, query_text):
            return "query_copied_from_positive"
        if kind == "long-short":  # the paper: "avoid including the values of the label fields in the input_text"
            for name in ("label", "misleading_label"):
                if contains_words(query_text, record.fields[name]):
                    return f"{name}_in_input"
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
    max_positive_fraction: float | None = Field(
        default=None, gt=0.0, le=1.0, description="also skip candidates above this share of the positive's similarity "
                                                  "(NV-Retriever's TopK-PercPos: 0.95)")
    fill_negative: bool = True
    model: str = DEFAULT_MODEL
    batch_size: int = Field(default=64, ge=1)


class MineHardNegatives(TextPairStage):
    """Adds `mined_negatives` (most similar corpus texts that are not the record's own positive).

    False-negative guard: a candidate at least as similar to the query as the record's positive (minus
    `margin`) is probably relevant too, so it is skipped rather than used as a negative; with
    `max_positive_fraction` (positive-aware, as NV-Retriever's TopK-PercPos, Moreira et al. 2024, whose best
    setting is 0.95) so is one scoring above that fraction of the positive's similarity. Needs every
    record before it can mine (the corpus includes all positives): the records are spilled and replayed; per
    record it holds the query and positive texts and their float32 vectors (3 KB for MiniLM), plus the corpus.
    """

    name = "mine_hard_negatives"
    Params = MiningParams
    params: MiningParams

    def pair_fields(self) -> tuple[str, str]:
        return self.params.query_field, self.params.positive_field

    def emit(self, records: Spilled) -> Iterator[Record]:
        if not self.queries:
            return
        p = self.params
        corpus = list(dict.fromkeys(self.passages))
        if p.corpus is not None:
            source = Source(p.corpus, self.ctx.resolve(p.corpus.path))
            corpus.extend(str(row.fields.get(p.corpus_field) or "") for row in source)
        corpus = [text for text in dict.fromkeys(corpus) if text.strip()]
        encoder = self.ctx.encoder(p.model, p.batch_size)
        queries, positives = encoder.encode(self.queries), encoder.encode(self.passages)
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
                if scores[index] >= positive_score - p.margin or (
                        p.max_positive_fraction is not None and scores[index] > p.max_positive_fraction * positive_score):
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
