"""Diversity metrics, semantic duplicates (exact and k-means partitioned) and the selection methods, on synthetic vectors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from synthgen.embedding import approximate
from synthgen.embedding.diversity import (
    cluster_entropy,
    diversity_metrics,
    k_center,
    kmeans_medoids,
    mean_pairwise_distance,
    mmr,
    random_subset,
    semantic_duplicates,
    vendi_score,
)


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def blobs(centers: int = 8, per: int = 30, dim: int = 32, spread: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs on the sphere (orthogonal centres) and each row's blob."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(centers), per)
    return unit(np.eye(dim)[labels] + rng.normal(scale=spread, size=(len(labels), dim))), labels


def greedy_reference(x: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """The SemDeDup rule one row at a time."""
    kept: list[int] = []
    found = []
    for i in range(len(x)):
        sims = x[kept] @ x[i] if kept else np.zeros(0)
        if len(sims) and sims.max() >= threshold:
            found.append((i, kept[int(sims.argmax())], float(sims.max())))
        else:
            kept.append(i)
    return found


def test_vendi_is_one_for_identical_and_n_for_orthogonal() -> None:
    row = unit(np.ones((1, 16)))
    assert vendi_score(np.repeat(row, 50, axis=0)) == pytest.approx(1.0)
    assert vendi_score(np.eye(10, dtype=np.float32)) == pytest.approx(10.0)
    assert vendi_score(np.eye(64, dtype=np.float32)[:40]) == pytest.approx(40.0)  # n < d: the n x n kernel
    mixture = np.concatenate([np.repeat(np.eye(8)[:1], 8, axis=0), np.eye(8)[1:]])  # one repeated + 7 distinct
    assert 1.0 < vendi_score(mixture) < 8.0
    x, _ = blobs(centers=4, per=100)  # n > d: computed from the d x d matrix
    assert vendi_score(x) == pytest.approx(float(np.exp(-sum(p * np.log(p) for p in np.linalg.eigvalsh(x.astype(float) @ x.T.astype(float) / len(x)) if p > 1e-12))))
    assert 4.0 < vendi_score(x) < 8.0  # four blobs, plus the spread within them


def test_mean_pairwise_distance_equals_brute_force() -> None:
    x = unit(np.random.default_rng(1).normal(size=(60, 8)))
    sims = x.astype(float) @ x.T.astype(float)
    brute = np.mean([1 - sims[i, j] for i in range(60) for j in range(60) if i != j])
    assert mean_pairwise_distance(x) == pytest.approx(brute)
    assert mean_pairwise_distance(np.repeat(x[:1], 5, axis=0)) == pytest.approx(0.0, abs=1e-6)
    assert mean_pairwise_distance(x[:1]) == 0.0


def test_cluster_entropy_and_metrics() -> None:
    x, _ = blobs(centers=4, per=50)
    assert cluster_entropy(x, 4) == pytest.approx(1.0)
    assert cluster_entropy(np.repeat(x[:1], 30, axis=0), 20) == 0.0  # no warning although 1 distinct row < k
    metrics = diversity_metrics(x, seed=3)
    assert set(metrics) == {"n", "vendi", "mean_pairwise_distance", "cluster_entropy"} and metrics["n"] == 200
    assert diversity_metrics(x[:0])["n"] == 0


def planted(seed: int = 0) -> tuple[np.ndarray, dict[int, int]]:
    """40 random directions and, after them in shuffled order, 20 near copies (cosine >= 0.95): copy -> original."""
    rng = np.random.default_rng(seed)
    originals = unit(rng.normal(size=(40, 64)))
    sources = rng.choice(40, 20, replace=False)
    copies = unit(originals[sources] + rng.normal(scale=0.02, size=(20, 64)))
    return np.concatenate([originals, copies]), {40 + i: int(source) for i, source in enumerate(sources)}


@pytest.mark.parametrize(("exact_limit", "approximate"), [(100_000, "auto"), (30, "kmeans"), (30, "faiss")])
def test_semantic_duplicates_drop_exactly_the_planted(exact_limit: int, approximate: str) -> None:
    if approximate == "faiss":
        pytest.importorskip("faiss")
    x, truth = planted()  # 60 rows: past an exact_limit of 30, the approximate paths
    found = semantic_duplicates(x, 0.95, exact_limit=exact_limit, approximate=approximate)
    assert {dropped: kept for dropped, kept, _ in found} == truth
    for dropped, kept, similarity in found:
        assert similarity == pytest.approx(float(x[dropped] @ x[kept]), abs=1e-6) and similarity >= 0.95


def test_semantic_duplicates_follow_the_greedy_rule_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chains (a~b, b~c, a!~c) resolve in input order, and small blocks give the same answer as one block."""
    rng = np.random.default_rng(2)
    base = unit(rng.normal(size=(60, 16)))
    x = unit(np.concatenate([base, base[rng.integers(0, 60, 200)] + rng.normal(scale=0.1, size=(200, 16))]))
    x = x[rng.permutation(len(x))]
    reference = greedy_reference(x, 0.9)
    assert len(reference) > 50
    import synthgen.embedding.diversity as diversity

    for rows, columns in [(2048, 16384), (16, 7)]:
        monkeypatch.setattr(diversity, "_ROWS", rows)
        monkeypatch.setattr(diversity, "_COLUMNS", columns)
        found = semantic_duplicates(x, 0.9)
        assert [(d, k) for d, k, _ in found] == [(d, k) for d, k, _ in reference]
        assert np.allclose([s for *_, s in found], [s for *_, s in reference], atol=1e-5)


def test_k_center_covers_every_blob_first() -> None:
    x, labels = blobs(centers=8, per=30)
    for seed in range(5):
        chosen = k_center(x, 8, seed)
        assert len(chosen) == 8 and sorted(set(labels[chosen])) == list(range(8))


def test_kmeans_medoids_are_the_members_nearest_the_centroids() -> None:
    x, labels = blobs(centers=8, per=30)
    chosen = kmeans_medoids(x, 8, seed=0)
    assert sorted(set(labels[chosen])) == list(range(8))
    for index in chosen:
        members = np.flatnonzero(labels == labels[index])
        centroid = x[members].mean(axis=0)
        assert index == members[(x[members] @ centroid).argmax()]
    # fewer distinct rows than k: still k distinct indices, and no k-means warning
    assert len(set(kmeans_medoids(np.repeat(x[:3], 4, axis=0), 5, seed=0))) == 5


def test_mmr_trades_score_against_redundancy() -> None:
    x, labels = blobs(centers=4, per=10)
    scores = np.where(labels == 0, 1.0, 0.5) + np.arange(len(x)) * 1e-4  # blob 0 scores highest
    assert mmr(x, 4, scores, lambda_=1.0).tolist() == sorted(np.argsort(-scores)[:4].tolist())
    assert set(labels[mmr(x, 4, scores, lambda_=1.0)]) == {0}
    assert sorted(set(labels[mmr(x, 4, scores, lambda_=0.0)])) == [0, 1, 2, 3]
    assert sorted(set(labels[mmr(x, 4, scores, lambda_=0.5)])) == [0, 1, 2, 3]


@pytest.mark.parametrize("select", [lambda x, k: kmeans_medoids(x, k, 1), lambda x, k: k_center(x, k, 1),
                                    lambda x, k: random_subset(x, k, 1), lambda x, k: mmr(x, k, np.zeros(len(x)))])
def test_selections_return_k_sorted_distinct_indices(select: Callable[[np.ndarray, int], np.ndarray]) -> None:
    x, _ = blobs(centers=3, per=20)
    chosen = select(x, 7)
    assert len(chosen) == 7 and list(chosen) == sorted(set(chosen.tolist()))
    assert list(select(x, 100)) == list(range(60))


def near_duplicate_set(n: int, dim: int, seed: int) -> np.ndarray:
    """n rows, a fifth of them noisy copies (cosine ~0.97-0.99) of earlier rows, shuffled."""
    rng = np.random.default_rng(seed)
    originals = unit(rng.normal(size=(n - n // 5, dim)))
    copies = unit(originals[rng.integers(0, len(originals), n // 5)] + rng.normal(scale=0.03, size=(n // 5, dim)))
    return unit(np.concatenate([originals, copies])[rng.permutation(n)])


def test_faiss_duplicates_are_verified_pairs_with_high_recall_and_exact_when_probing_every_list() -> None:
    pytest.importorskip("faiss")
    x = near_duplicate_set(6000, 32, seed=5)
    exact = semantic_duplicates(x, 0.95)
    assert len(exact) > 1000
    every_list = approximate.faiss_duplicates(x, 0.95, probes=10_000)
    assert every_list == [(d, k, pytest.approx(s, abs=1e-5)) for d, k, s in exact]
    found = approximate.faiss_duplicates(x, 0.95, probes=2)
    dropped = np.zeros(len(x), dtype=bool)
    dropped[[d for d, _, _ in found]] = True
    for d, k, s in found:  # every drop names an earlier kept row within the threshold
        assert k < d and not dropped[k] and s >= 0.95 and s == pytest.approx(float(x[d] @ x[k]), abs=1e-5)
    recall = approximate.sampled_recall(x, dropped, 0.95, sample=len(x))
    assert recall is not None and 0.9 < recall <= 1.0
    assert semantic_duplicates(x, 0.95, exact_limit=1000, approximate="faiss") == approximate.faiss_duplicates(x, 0.95)


def test_sampled_recall_counts_kept_rows_with_a_kept_duplicate_before_them() -> None:
    x, truth = planted()
    dropped = np.zeros(len(x), dtype=bool)
    dropped[list(truth)] = True
    assert approximate.sampled_recall(x, dropped, 0.95) == 1.0
    missed = dropped.copy()
    missed[list(truth)[:5]] = False  # five planted copies kept: each has its kept original before it
    assert approximate.sampled_recall(x, missed, 0.95) == round(15 / 20, 4)
    assert approximate.sampled_recall(x, np.zeros(len(x), dtype=bool), 0.95) == 0.0
    assert approximate.sampled_recall(x[:40], np.zeros(40, dtype=bool), 0.95) is None  # originals only: no duplicate


def test_greedy_rule_resolves_chains_in_input_order() -> None:
    rows, earlier, similarities = np.array([2, 1, 3, 3]), np.array([1, 0, 0, 2]), np.array([0.97, 0.96, 0.95, 0.99])
    # 1 ~ 0: dropped; 2 ~ 1 only, and 1 is gone: kept; 3 ~ 0 and ~ 2, both kept: its most similar, 2
    assert approximate.greedy_rule(4, rows, earlier, similarities) == [(1, 0, 0.96), (3, 2, 0.99)]
