"""Approximate SemDeDup for sets too large for the exact O(n^2 d) rule, and its recall measured on a sample.

Two backends find the candidate pairs; the SemDeDup rule (a row is dropped when a row kept before it is within
`threshold`) is then applied to them exactly, so every drop is a true duplicate and only recall is approximate:
- `faiss` (`pip install 'synthgen[faiss]'`, used when installed): an inverted-file index (`IndexIVFFlat`,
  ~sqrt(n) k-means lists, inner product) range-searched at the threshold, each row probing `PROBES` lists.
  The usual choice of distilabel / NeMo Curator users for SemDeDup at scale; probing several lists finds the
  pairs that straddle a list boundary, which a plain partition misses.
- `kmeans` (the fallback, numpy + scikit-learn only): rows partitioned by mini-batch k-means into ~sqrt(n)
  clusters, the exact rule within each (`diversity.semantic_duplicates`).

`sampled_recall` checks a sample of rows against the whole set: a sampled row that was kept although a kept row
before it is within the threshold is a missed duplicate. Figures: bench/semantic_recall.py and the README.
"""

from __future__ import annotations

import math
from importlib.util import find_spec

import numpy as np

from synthgen.errors import ConfigError

PROBES = 8  # lists each row searches: recall 0.998 of exact's drops at 100k (bench/semantic_recall.py, README)
SAMPLE = 2000  # rows checked against the whole set for `approx_recall`: +-1.5 points at 95% recall
_COLUMNS = 8192  # kept rows per block of the recall check: SAMPLE x _COLUMNS float32 = 64 MiB


def backend(choice: str) -> str:
    """The backend `choice` ("auto", "faiss" or "kmeans") means here: auto is faiss when it is installed."""
    installed = find_spec("faiss") is not None
    if choice == "faiss" and not installed:
        raise ConfigError("semantic_dedup", "approximate", "faiss is not installed: pip install 'synthgen[faiss]'")
    return "faiss" if choice == "faiss" or (choice == "auto" and installed) else "kmeans"


def faiss_duplicates(x: np.ndarray, threshold: float, seed: int = 0,
                     probes: int = PROBES) -> list[tuple[int, int, float]]:
    """(dropped, kept, cosine) triples of the SemDeDup rule over the pairs an IVF range search finds."""
    import faiss

    n, d = x.shape
    x = np.ascontiguousarray(x, dtype=np.float32)
    lists = max(1, min(round(math.sqrt(n)), n // 39))  # faiss wants >= 39 training rows per list
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(x)
    index.add(x)
    index.nprobe = min(probes, lists)
    limits, similarities, neighbours = index.range_search(x, float(np.nextafter(np.float32(threshold), -np.inf)))
    counts: np.ndarray = np.diff(np.asarray(limits, dtype=np.int64))
    rows = np.repeat(np.arange(n), counts)
    earlier = (neighbours < rows) & (similarities >= threshold)  # only rows before each row count
    rows, neighbours, similarities = rows[earlier], neighbours[earlier], similarities[earlier]
    return greedy_rule(n, rows, neighbours, similarities)


def greedy_rule(n: int, rows: np.ndarray, earlier: np.ndarray, similarities: np.ndarray) -> list[tuple[int, int, float]]:
    """The SemDeDup rule over candidate pairs (row, an earlier row, cosine >= threshold), in input order."""
    order = np.lexsort((earlier, rows))
    rows, earlier, similarities = rows[order], earlier[order], similarities[order]
    kept = np.ones(n, dtype=bool)
    found: list[tuple[int, int, float]] = []
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, dtype=np.int64)
    for start, end in zip(starts, np.r_[starts[1:], len(rows)], strict=True):
        alive = kept[earlier[start:end]]
        if alive.any():
            best = start + np.flatnonzero(alive)[similarities[start:end][alive].argmax()]
            kept[rows[start]] = False
            found.append((int(rows[start]), int(earlier[best]), min(1.0, float(similarities[best]))))
    return found


def sampled_recall(x: np.ndarray, dropped: np.ndarray, threshold: float, seed: int = 0,
                   sample: int = SAMPLE) -> float | None:
    """Of the sampled rows the exact rule would drop given the kept set, the share the approximation dropped.

    `dropped` is a boolean mask of the approximate decisions. A sampled kept row is a miss when some kept row
    before it has cosine >= threshold; a dropped row always is a true duplicate (its pair was verified).
    None when the sample holds no duplicate.
    """
    n = len(x)
    rows = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    candidates = rows[~dropped[rows]]
    missed = np.zeros(len(candidates), dtype=bool)
    kept = np.flatnonzero(~dropped)
    for start in range(0, len(kept), _COLUMNS):
        columns = kept[start:start + _COLUMNS]
        similar = (x[candidates] @ x[columns].T >= threshold) & (columns[None, :] < candidates[:, None])
        missed |= similar.any(axis=1)
    found = int(dropped[rows].sum())
    return round(found / (found + int(missed.sum())), 4) if found + missed.sum() else None
