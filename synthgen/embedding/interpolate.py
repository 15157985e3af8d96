"""Moving in embedding space: each operation is a small function on unit vectors that returns targets.

The vectors are what to aim for; `realise` (LLM write-and-verify) or `nearest` (an existing text) turn
them back into text. All functions take an explicit `numpy.random.Generator`, so results are seeded.
"""

from __future__ import annotations

import numpy as np


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def add_noise(vectors: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """e + eps, eps ~ N(0, sigma^2) with sigma = `scale` times the data's per-dimension spread."""
    spread = vectors.std(axis=0) if len(vectors) > 1 else np.full(vectors.shape[1], 1.0 / np.sqrt(vectors.shape[1]))
    return unit(vectors + rng.normal(size=vectors.shape) * spread * scale)


def interpolate(a: np.ndarray, b: np.ndarray, alpha: float | np.ndarray) -> np.ndarray:
    """(1 - alpha) a + alpha b: between the two for alpha in [0, 1], beyond b for alpha > 1 (extrapolation),
    beyond a for alpha < 0."""
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim == 1:
        alpha = alpha[:, None]
    return unit((1.0 - alpha) * a + alpha * b)


def attribute_vector(vectors: np.ndarray, labels: np.ndarray, source: object, target: object) -> np.ndarray:
    """mean(target group) - mean(source group): the direction from one attribute to another."""
    return vectors[labels == target].mean(axis=0) - vectors[labels == source].mean(axis=0)


def analogy(vectors: np.ndarray, direction: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """e + strength * (v_target - v_source): move records along an attribute direction."""
    return unit(vectors + strength * direction)


def smote(vectors: np.ndarray, labels: np.ndarray, label: object, count: int, k: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SMOTE for class `label`: `count` points, each on the segment between a random member and one of its
    k nearest same-class neighbours. Returns (targets, anchor indices, neighbour indices) into `vectors`."""
    members = np.flatnonzero(labels == label)
    if members.size < 2:
        raise ValueError(f"SMOTE needs at least two records of class {label!r}, found {members.size}")
    k = min(k, members.size - 1)
    similarity = vectors[members] @ vectors[members].T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = np.argsort(-similarity, axis=1)[:, :k]
    anchors = rng.integers(0, members.size, size=count)
    partners = neighbours[anchors, rng.integers(0, k, size=count)]
    gaps = rng.random(count)
    targets = interpolate(vectors[members[anchors]], vectors[members[partners]], gaps)
    return targets, members[anchors], members[partners]


def nearest(targets: np.ndarray, corpus: np.ndarray, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index and cosine of each target's nearest corpus vector; `exclude` (per target, -1 for none) is skipped."""
    scores = targets @ corpus.T
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        scores[rows, exclude[rows]] = -np.inf
    best = scores.argmax(axis=1)
    return best, scores[np.arange(len(targets)), best]


def intrusion(vector: np.ndarray, corpus: np.ndarray, labels: np.ndarray, parents: set[object], k: int = 5) -> object | None:
    """Manifold intrusion: the class dominating the k nearest labelled neighbours of `vector`, if it is
    neither parent's class (None when the neighbourhood agrees with a parent)."""
    order = np.argsort(-(corpus @ vector))[:k]
    values, counts = np.unique(labels[order], return_counts=True)
    dominant = values[counts.argmax()]
    return None if dominant in parents else dominant.item() if hasattr(dominant, "item") else dominant
