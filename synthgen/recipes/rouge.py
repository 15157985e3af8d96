"""ROUGE-L F1 between instructions, and a pool that finds near duplicates without scoring every pair.

Tokens are those of the `rouge_score` package without stemming: the text is lowercased and split on every
run of characters other than a-z and 0-9 ("Don't panic!" -> don, t, panic). ROUGE-L F1 of token lists a, b
is 2·LCS(a, b) / (|a| + |b|), the LCS computed by `rapidfuzz.distance.LCSseq` on the token lists.

Why the pool is fast: LCS(a, b) is at most min(|a|, |b|) and at most the multiset overlap of a and b, so an
entry b can score F1 > t only if it shares at least k(|b|) = ⌊t·(|a| + |b|)/2⌋ + 1 tokens with the query a.
Each entry is indexed by its (token, occurrence) pairs, whose set overlap equals the multiset overlap. An
entry sharing k of the query's n pairs holds one of ANY n - k + 1 of them (pigeonhole), so candidates come
from the posting lists of the query's n - k_min + 1 rarest pairs only: the common words, which have the
longest lists, are never read. A candidate gets the exact LCS (one batched rapidfuzz call per query) only
when its length and its bound (prefix hits + pairs outside the prefix) still allow k(|b|) shared tokens.
Decisions and scores equal the all-pairs ones (tests/unit/test_self_instruct.py, bench/self_instruct_filter.py).
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

_TOKEN = re.compile(r"[a-z0-9]+")
_SLACK = 1e-9  # k(|b|) is rounded down by this much, so float rounding can only add candidates, never drop one


def rouge_tokens(text: str) -> list[str]:
    """The ROUGE tokens of `text`: lowercased runs of a-z and 0-9."""
    return _TOKEN.findall(text.lower())


def rouge_l(a: Sequence[object], b: Sequence[object]) -> float:
    """ROUGE-L F1 of two token sequences (0 when either is empty)."""
    if not a or not b:
        return 0.0
    return 2 * LCSseq.similarity(a, b) / (len(a) + len(b))


class Similar(NamedTuple):
    """The best-matching pool entry (first added on ties) and its ROUGE-L F1."""

    score: float
    entry: int


def naive_most_similar(query: Sequence[str], pool: Sequence[Sequence[str]]) -> Similar:
    """Reference: ROUGE-L F1 against every pool entry; Similar(0.0, -1) for an empty pool."""
    best = Similar(0.0, -1)
    for index, entry in enumerate(pool):
        score = rouge_l(query, entry)
        if score > best.score:
            best = Similar(score, index)
    return best


class RougePool:
    """Token lists added one by one; `most_similar` finds the best entry with ROUGE-L F1 > `threshold`."""

    def __init__(self, threshold: float) -> None:
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold is a ROUGE-L F1 in [0, 1), got {threshold}; 0.7 is Self-Instruct's")
        self.threshold = threshold
        self._vocab: dict[str, int] = {}
        self._entries: list[list[int]] = []
        self._lengths = np.zeros(1024, dtype=np.int64)
        self._postings: dict[tuple[int, int], array[int]] = {}
        self._least_overlap: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, tokens: Sequence[str]) -> int:
        """Index `tokens` as a new entry; returns its index."""
        ids = [self._vocab.setdefault(token, len(self._vocab)) for token in tokens]
        index = len(self._entries)
        self._entries.append(ids)
        if index == len(self._lengths):
            self._lengths = np.concatenate([self._lengths, np.zeros_like(self._lengths)])
        self._lengths[index] = len(ids)
        for pair in _pairs(ids):
            self._postings.setdefault(pair, array("i")).append(index)
        return index

    def most_similar(self, tokens: Sequence[str]) -> Similar | None:
        """The entry with the highest ROUGE-L F1 above the threshold (first added on ties), or None."""
        ids = [self._vocab.get(token, -1) for token in tokens]  # unknown tokens match no entry
        size = len(ids)
        if size == 0 or not self._entries:
            return None
        prefix = size - self._min_overlap(size) + 1
        lists = sorted((self._postings.get(pair) for pair in _pairs(ids)), key=lambda p: len(p) if p else 0)[:prefix]
        arrays = [np.frombuffer(p, dtype=np.int32) for p in lists if p]
        if not arrays:
            return None
        candidates, hits = np.unique(np.concatenate(arrays), return_counts=True)
        del arrays  # release the buffer views so the postings can grow again
        lengths = self._lengths[candidates]
        need = np.maximum(np.floor(self.threshold * (size + lengths) / 2 - _SLACK).astype(np.int64) + 1, 1)
        possible = (np.minimum(lengths, size) >= need) & (hits + (size - prefix) >= need)
        chosen = candidates[possible]
        if not len(chosen):
            return None
        entries = [self._entries[index] for index in chosen.tolist()]
        lcs = process.cdist([ids], entries, scorer=LCSseq.similarity, dtype=np.int64)[0]  # one C++ call for all
        scores = 2 * lcs / (size + lengths[possible])
        best = int(np.argmax(scores))  # the first (earliest added) on ties
        return Similar(float(scores[best]), int(chosen[best])) if scores[best] > self.threshold else None

    def _min_overlap(self, size: int) -> int:
        """The fewest shared tokens any entry length allows for F1 > threshold against a query of `size` tokens."""
        least = self._least_overlap.get(size)
        if least is None:
            least = size
            for length in range(1, size + 1):  # k(length) grows with length: the first feasible length is best
                need = max(math.floor(self.threshold * (size + length) / 2 - _SLACK) + 1, 1)
                if length >= need:
                    least = need
                    break
            self._least_overlap[size] = least
        return least


def _pairs(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Each token with its occurrence number (0 for the first), so set overlap is multiset overlap."""
    seen: dict[int, int] = {}
    pairs = []
    for token in ids:
        occurrence = seen.get(token, 0)
        seen[token] = occurrence + 1
        pairs.append((token, occurrence))
    return pairs
