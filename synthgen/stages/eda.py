"""EDA, "Easy Data Augmentation" (Wei & Zou 2019): synonym replacement, random insertion, random swap and
random deletion, each at its own rate, seeded per record.

Synonyms come from the embedding model's nearest neighbours among the words of the input itself (every
distinct word is embedded once, through the run's embedding cache; a neighbour counts as a synonym at cosine
>= `min_similarity`). WordNet would be the paper's source, but nltk's corpus is downloaded at run time and
no registry package ships it, so it is not used.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator

import numpy as np
from pydantic import Field

from synthgen.embedding.encoder import DEFAULT_MODEL
from synthgen.fields import stage_fields
from synthgen.record import Record, make_record_id
from synthgen.stages.base import StageParams, WholeSetStage
from synthgen.stages.spill import Spilled
from synthgen.stopwords import STOP_WORDS

_WORD = re.compile(r"^[A-Za-z][A-Za-z'-]*$")
_BLOCK = 512  # words per similarity block
OPERATIONS = ("synonym_replacement", "random_insertion", "random_swap", "random_deletion")


def synonym_table(words: list[str], vectors: np.ndarray, min_similarity: float, k: int = 5) -> dict[str, list[str]]:
    """word -> its up to k nearest other words at cosine >= min_similarity, most similar first.

    A nearest-neighbour query done `_BLOCK` words at a time: memory is ~16 x _BLOCK x vocabulary bytes
    (165 MB at 20k words), not the vocabulary x vocabulary matrix (1.6 GB at 20k).
    """
    n, take = len(words), min(k, len(words) - 1)
    table: dict[str, list[str]] = {}
    for start in range(0, n, _BLOCK):
        scores = vectors[start:start + _BLOCK] @ vectors.T
        rows = np.arange(len(scores))
        scores[rows, start + rows] = -np.inf  # a word is not its own synonym
        best = np.argpartition(-scores, take - 1, axis=1)[:, :take] if 0 < take < n - 1 else \
            np.broadcast_to(np.arange(n), scores.shape)
        best_scores = np.take_along_axis(scores, best, axis=1)
        order = np.lexsort((best, -best_scores), axis=1)[:, :take]  # by score, then by word order
        for row, (ranked, ranked_scores) in enumerate(zip(np.take_along_axis(best, order, axis=1),
                                                          np.take_along_axis(best_scores, order, axis=1), strict=True)):
            table[words[start + row]] = [words[i] for i, score in zip(ranked, ranked_scores, strict=True)
                                         if score >= min_similarity]
    return table


def augment(words: list[str], operation: str, rate: float, synonyms: dict[str, list[str]], rng: random.Random) -> list[str]:
    """One EDA operation on a word list; n = max(1, rate * len) changes (deletion: each word with p = rate)."""
    words = list(words)
    n = max(1, round(rate * len(words)))
    candidates = [i for i, w in enumerate(words) if w.lower() not in STOP_WORDS and synonyms.get(w.lower())]
    if operation == "synonym_replacement":
        for i in rng.sample(candidates, min(n, len(candidates))):
            words[i] = rng.choice(synonyms[words[i].lower()])
    elif operation == "random_insertion":
        sources = [words[i].lower() for i in candidates]  # words with synonyms, taken before any insertion
        for _ in range(n if sources else 0):
            words.insert(rng.randrange(len(words) + 1), rng.choice(synonyms[rng.choice(sources)]))
    elif operation == "random_swap":
        for _ in range(n if len(words) > 1 else 0):
            a, b = rng.sample(range(len(words)), 2)
            words[a], words[b] = words[b], words[a]
    else:
        kept = [w for w in words if rng.random() >= rate]
        words = kept or [rng.choice(words)]
    return words


class EdaParams(StageParams):
    """`per_operation` new texts per input and operation, each operation at its own rate (the paper's 0.1)."""

    field: str = "text"
    per_operation: int = Field(default=1, ge=0, le=16)
    synonym_replacement: float = Field(default=0.1, ge=0, le=1)
    random_insertion: float = Field(default=0.1, ge=0, le=1)
    random_swap: float = Field(default=0.1, ge=0, le=1)
    random_deletion: float = Field(default=0.1, ge=0, le=1)
    min_similarity: float = Field(default=0.6, ge=-1, le=1)
    model: str = DEFAULT_MODEL
    keep_input: bool = True


class Eda(WholeSetStage):
    """Adds EDA variants of every input (other fields, e.g. the label, copied); needs all inputs for synonyms."""

    name = "eda"
    Params = EdaParams
    params: EdaParams

    def start(self) -> None:
        self.vocabulary: set[str] = set()

    def prepare(self, records: Iterable[Record]) -> Iterable[Record]:
        return stage_fields(records, self, "field")

    def see(self, batch: list[Record]) -> None:
        words = (w for r in batch for w in str(r.fields.get(self.params.field) or "").split())
        self.vocabulary.update(w.lower() for w in words if _WORD.match(w) and w.lower() not in STOP_WORDS)

    def emit(self, records: Spilled) -> Iterator[Record]:
        p = self.params
        vocabulary = sorted(self.vocabulary)
        synonyms: dict[str, list[str]] = {}
        if p.synonym_replacement or p.random_insertion:
            encoder = self.ctx.encoder(p.model)
            synonyms = synonym_table(vocabulary, encoder.encode(vocabulary), p.min_similarity) if vocabulary else {}
        for record in records:
            if p.keep_input:
                yield record
            words = str(record.fields.get(p.field) or "").split()
            if not words:
                continue
            for operation in OPERATIONS:
                rate = getattr(p, operation)
                for copy in range(p.per_operation if rate > 0 else 0):
                    rng = self.rng(record, operation, copy)
                    fields = {**record.fields, p.field: " ".join(augment(words, operation, rate, synonyms, rng)),
                              "operation": operation}
                    yield Record(make_record_id(record.id, self.ctx.key, operation, copy), fields,
                                 {**record.meta, "parents": [record.id], "eda": {"operation": operation, "rate": rate}})
