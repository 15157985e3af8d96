"""Embedding-space operations: the arithmetic, SMOTE, nearest-neighbour decoding and the intrusion guard."""

from __future__ import annotations

import numpy as np
import pytest

from synthgen.embedding.interpolate import add_noise, analogy, attribute_vector, interpolate, intrusion, nearest, smote, unit

E = np.eye(4)


def test_interpolation_and_extrapolation() -> None:
    mid = interpolate(E[:1], E[1:2], 0.5)
    assert np.allclose(mid, unit(np.array([[0.5, 0.5, 0, 0]])))
    assert np.allclose(interpolate(E[:1], E[1:2], 0.0), E[:1]) and np.allclose(interpolate(E[:1], E[1:2], 1.0), E[1:2])
    beyond = interpolate(E[:1], E[1:2], 1.5)  # past b, away from a
    assert beyond[0, 0] < 0 and beyond[0, 1] > 0.9
    rows = interpolate(np.stack([E[0], E[2]]), np.stack([E[1], E[3]]), np.array([0.25, 0.75]))
    assert rows[0, 0] > rows[0, 1] and rows[1, 3] > rows[1, 2]


def test_analogy_moves_along_the_attribute_direction() -> None:
    vectors = unit(np.array([[1, 0, 0.1, 0], [1, 0, -0.1, 0], [0, 1, 0.1, 0], [0, 1, -0.1, 0.0]]))
    labels = np.array(["formal", "formal", "casual", "casual"])
    direction = attribute_vector(vectors, labels, "formal", "casual")
    moved = analogy(vectors[:1], direction)
    assert moved[0, 1] > moved[0, 0]  # a formal point moved to the casual side
    assert np.isclose(np.linalg.norm(moved), 1.0)


def test_smote_points_lie_between_same_class_neighbours() -> None:
    rng = np.random.default_rng(0)
    vectors = unit(rng.normal(size=(30, 8)))
    labels = np.array(["a"] * 10 + ["b"] * 20)
    targets, anchors, partners = smote(vectors, labels, "a", 50, 3, rng)
    assert targets.shape == (50, 8) and set(labels[anchors]) == set(labels[partners]) == {"a"}
    assert (anchors != partners).all()
    for t, a, b in zip(targets, anchors, partners):  # t is a non-negative mix of its two parents
        coefficients, residual, *_ = np.linalg.lstsq(np.stack([vectors[a], vectors[b]]).T, t, rcond=None)
        assert (coefficients >= -1e-9).all() and (residual.size == 0 or residual[0] < 1e-10)
    with pytest.raises(ValueError, match="at least two"):
        smote(vectors, np.array(["a"] + ["b"] * 29), "a", 5, 3, rng)


def test_noise_is_relative_to_the_spread_and_seeded() -> None:
    vectors = unit(np.random.default_rng(1).normal(size=(50, 16)))
    small = add_noise(vectors, 0.05, np.random.default_rng(2))
    large = add_noise(vectors, 2.0, np.random.default_rng(2))
    assert np.mean(np.sum(small * vectors, axis=1)) > 0.99 > np.mean(np.sum(large * vectors, axis=1))
    assert np.array_equal(small, add_noise(vectors, 0.05, np.random.default_rng(2)))


def test_nearest_skips_the_excluded_row() -> None:
    corpus = unit(np.array([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 1, 0.0]]))
    best, cosines = nearest(corpus[:1], corpus, np.array([0]))
    assert best.tolist() == [1] and 0.99 < cosines[0] < 1.0


def test_intrusion_guard_on_a_labelled_set() -> None:
    corpus = unit(np.array([[1, 0.1, 0], [1, -0.1, 0], [1, 0, 0.1], [0, 1, 0], [0.1, 1, 0], [0, 0, 1.0]]))
    labels = np.array(["c", "c", "c", "a", "a", "b"])
    lands_in_c = unit(np.array([1.0, 0.05, 0.02]))
    assert intrusion(lands_in_c, corpus, labels, {"a", "b"}, k=3) == "c"  # parents a and b, neighbours all c
    assert intrusion(lands_in_c, corpus, labels, {"c", "a"}, k=3) is None
