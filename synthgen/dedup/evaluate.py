"""Measuring near-dedup quality on a corpus with planted near duplicates whose exact Jaccard is known.

The truth is computed exactly: every pair that shares a shingle gets its exact Jaccard (over shingle
strings, not hashes), and the greedy rule the stage applies ("drop a record whose Jaccard with an
earlier kept record is >= threshold") is replayed on those exact values.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from synthgen.dedup.minhash import Shingling
from synthgen.dedup.text import normalize


def planted_corpus(families: int, seed: int = 0, words: tuple[int, int] = (60, 200),
                   edits: tuple[float, float] = (0.05, 0.5), max_variants: int = 3) -> list[str]:
    """Base texts of random Zipf-distributed words, each with up to `max_variants` copies in which a share of
    the words drawn from `edits` is substituted, inserted or deleted, all shuffled together."""
    rng = random.Random(seed)
    vocabulary = [f"{rng.choice('bcdfghjklmnpqrstvwz')}{rng.choice('aeiou')}{rng.choice('lmnrst')}{i}" for i in range(8000)]
    weights = [1.0 / (rank + 1) for rank in range(len(vocabulary))]
    texts = []
    for _ in range(families):
        base = rng.choices(vocabulary, weights, k=rng.randint(*words))
        texts.append(" ".join(base))
        for _ in range(rng.randint(0, max_variants)):
            variant = list(base)
            for _ in range(max(1, round(len(base) * rng.uniform(*edits)))):
                position, edit = rng.randrange(len(variant)), rng.random()
                if edit < 0.6:
                    variant[position] = rng.choice(vocabulary)
                elif edit < 0.8:
                    variant.insert(position, rng.choice(vocabulary))
                elif len(variant) > 1:
                    del variant[position]
            texts.append(" ".join(variant))
    rng.shuffle(texts)
    return texts


def exact_greedy_drops(texts: Sequence[str], shingling: Shingling, threshold: float) -> set[int]:
    """Indices the greedy rule drops when every Jaccard is computed exactly."""
    sets = [set(shingling.shingles(normalize(text))) for text in texts]
    postings: dict[str, list[int]] = defaultdict(list)
    kept: list[int] = []
    dropped = set()
    for i, shingles in enumerate(sets):
        overlaps: dict[int, int] = defaultdict(int)
        for shingle in shingles:
            for j in postings.get(shingle, ()):
                overlaps[j] += 1
        if any(common / (len(shingles) + len(sets[j]) - common) >= threshold for j, common in overlaps.items()):
            dropped.add(i)
            continue
        kept.append(i)
        for shingle in shingles:
            postings[shingle].append(i)
    return dropped


@dataclass(frozen=True)
class Quality:
    """Precision and recall of dropped-as-duplicate against the exact truth."""

    precision: float
    recall: float
    dropped: int
    truth: int


def quality(dropped: set[int], truth: set[int]) -> Quality:
    """Compare a dedup's dropped indices with the exact ones."""
    hits = len(dropped & truth)
    return Quality(hits / len(dropped) if dropped else 1.0, hits / len(truth) if truth else 1.0, len(dropped), len(truth))
