"""Moving in embedding space: each operation is a small function on unit vectors that returns targets.

The vectors are what to aim for; `realise` (LLM write-and-verify) or `nearest` (an existing text) turn
them back into text. All functions take an explicit `numpy.random.Generator`, so results are seeded.
`gaps` aims at the holes of a set rather than at its records; `fills_gap` checks that a realised text filled one.
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


def nearest(targets: np.ndarray, corpus: np.ndarray, exclude: np.ndarray | None = None,
            block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Index and cosine of each target's nearest corpus vector; `exclude` (per target, -1 for none) is skipped.
    Scored `block` targets at a time: no targets x corpus matrix."""
    best, cosines = np.zeros(len(targets), dtype=np.int64), np.zeros(len(targets), dtype=np.result_type(targets, corpus))
    for start in range(0, len(targets), block):
        scores = targets[start : start + block] @ corpus.T
        if exclude is not None:
            rows = np.flatnonzero(exclude[start : start + block] >= 0)
            scores[rows, exclude[start + rows]] = -np.inf
        best[start : start + block] = scores.argmax(axis=1)
        cosines[start : start + block] = scores[np.arange(len(scores)), best[start : start + block]]
    return best, cosines


def intrusion(vector: np.ndarray, corpus: np.ndarray, labels: np.ndarray, parents: set[object], k: int = 5) -> object | None:
    """Manifold intrusion: the class dominating the k nearest labelled neighbours of `vector`, if it is
    neither parent's class (None when the neighbourhood agrees with a parent)."""
    order = np.argsort(-(corpus @ vector))[:k]
    values, counts = np.unique(labels[order], return_counts=True)
    dominant = values[counts.argmax()]
    return None if dominant in parents else dominant.item() if hasattr(dominant, "item") else dominant


def emptiness(targets: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """Cosine distance from each target to its nearest corpus vector: 0 on a record, large inside a hole."""
    return 1.0 - nearest(targets, corpus)[1]


def nearest_neighbour_distances(vectors: np.ndarray) -> np.ndarray:
    """Each row's cosine distance to its nearest other row."""
    return (1.0 - nearest(vectors, vectors, np.arange(len(vectors)))[1]).astype(np.float64)


def _far_pairs(members: np.ndarray, vectors: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `limit` (a, b) row pairs of `members`, the farthest apart of all pairs of a small group or of
    4 x `limit` random pairs; nearly opposite pairs (cosine <= -0.5) are left out: they have no one midpoint."""
    m = members.size
    if m * (m - 1) // 2 <= 4 * limit:
        a, b = np.triu_indices(m, 1)
    else:
        a, b = rng.integers(0, m, size=(2, 4 * limit))
        a, b = a[a != b], b[a != b]
    cosines = np.sum(vectors[members[a]] * vectors[members[b]], axis=1)
    valid = np.flatnonzero(cosines > -0.5)
    order = valid[np.argsort(cosines[valid], kind="stable")[:limit]]
    return np.stack([members[a[order]], members[b[order]]], axis=1)


def _sparse_cells(members: np.ndarray, vectors: np.ndarray, ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Centroids of the k-means cells (k ~ sqrt(m / 2)) of `members` holding fewer than `ratio` x the mean
    cell's members, each with its two nearest members as anchors."""
    from synthgen.embedding.diversity import _kmeans  # scikit-learn is slow to import

    if members.size < 4:
        return np.zeros((0, vectors.shape[1])), np.zeros((0, 2), dtype=int)
    model = _kmeans(vectors[members], max(2, round(np.sqrt(members.size / 2))), seed, n_init=1)
    counts = np.bincount(model.labels_, minlength=len(model.cluster_centers_))
    targets = unit(model.cluster_centers_[counts < ratio * counts.mean()])
    anchors = np.argsort(-(targets @ vectors[members].T), axis=1, kind="stable")[:, :2]
    return targets, members[anchors]


def gaps(vectors: np.ndarray, groups: np.ndarray, count: int, rng: np.random.Generator,
         cell_ratio: float = 0.5, pair_budget: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The `count` emptiest gap targets among (i) midpoints of far-apart pairs within each group and (ii)
    centroids of each group's sparse k-means cells, ranked by `emptiness` to `vectors`; after each pick the
    pick counts as occupied, so two targets never share one hole. Returns (targets, anchor row pairs,
    emptiness of each target, kind "pair" or "cell")."""
    targets, anchors, kinds = [], [], []
    labels = np.unique(groups)
    for label in labels:
        members = np.flatnonzero(groups == label)
        if members.size < 2:
            continue
        pairs = _far_pairs(members, vectors, max(16, pair_budget // len(labels)), rng)
        cells, cell_anchors = _sparse_cells(members, vectors, cell_ratio, int(rng.integers(2**31)))
        targets += [interpolate(vectors[pairs[:, 0]], vectors[pairs[:, 1]], 0.5), cells]
        anchors += [pairs, cell_anchors]
        kinds += ["pair"] * len(pairs) + ["cell"] * len(cells)
    if not kinds:
        return np.zeros((0, vectors.shape[1])), np.zeros((0, 2), dtype=int), np.zeros(0), []
    candidates, candidate_anchors = np.vstack(targets), np.vstack(anchors)
    before = emptiness(candidates, vectors)
    left, picked = before.copy(), []
    for _ in range(min(count, len(candidates))):
        best = int(np.argmax(left))
        if left[best] <= 0:
            break
        picked.append(best)
        left = np.minimum(left, 1.0 - candidates @ candidates[best])
        left[best] = -np.inf
    return candidates[picked], candidate_anchors[picked], before[picked], [kinds[i] for i in picked]


def fills_gap(vector: np.ndarray, target: np.ndarray, corpus: np.ndarray, median_distance: float,
              margin: float) -> str | None:
    """None when `vector` fills its gap: its cosine to the target beats its cosine to every corpus row by
    `margin`, or it lies farther from the corpus than `median_distance` (the corpus's median nearest-neighbour
    distance); otherwise the measured values."""
    to_target, to_corpus = float(vector @ target), float((corpus @ vector).max())
    if to_target >= to_corpus + margin or 1.0 - to_corpus >= median_distance:
        return None
    return (f"cosine {to_target:.3f} to the target < {to_corpus:.3f} to the nearest kept record + margin {margin}, "
            f"and distance {1.0 - to_corpus:.3f} to the kept set < median nearest-neighbour distance {median_distance:.3f}")
