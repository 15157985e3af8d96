"""Gap filling in embedding space: targets land in holes, are seeded, and a text that lands on a record is refused."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from synthgen.embedding.interpolate import fills_gap, gaps, nearest_neighbour_distances, unit
from synthgen.stages.augment import AugmentParams


def circle(degrees: np.ndarray) -> np.ndarray:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def angle(vectors: np.ndarray) -> np.ndarray:
    return np.rad2deg(np.arctan2(vectors[:, 1], vectors[:, 0])) % 360


def test_targets_lie_inside_the_hole_of_a_circle() -> None:
    kept = np.r_[np.arange(0, 100, 5), np.arange(160, 360, 5)]  # every 5 degrees but (100, 160): a 60-degree hole
    targets, anchors, empty, kinds = gaps(circle(kept), np.zeros(len(kept)), 2, np.random.default_rng(0))
    assert ((angle(targets) > 100) & (angle(targets) < 160)).all()
    assert (empty > 1 - np.cos(np.deg2rad(5))).all() and empty[0] >= empty[1]  # emptiest first, both far from any record
    assert abs(angle(targets[:1])[0] - 130) < 3  # the first sits in the middle of the hole
    assert set(kinds) <= {"pair", "cell"} and anchors.shape == (2, 2)


def test_targets_lie_inside_a_hole_on_the_sphere_and_never_share_it() -> None:
    rng = np.random.default_rng(3)
    points = unit(rng.normal(size=(600, 3)))
    hole = unit(np.array([1.0, 1.0, 1.0]))
    kept = points[points @ hole < 0.9]  # a cap of ~26 degrees radius around `hole` is empty
    labels = np.where(kept[:, 2] > 0, "up", "down")  # two groups: pairs are drawn within each
    targets, anchors, empty, _ = gaps(kept, labels, 3, np.random.default_rng(0))
    assert (targets @ hole > 0.9).all()  # every target inside the cap
    assert (labels[anchors[:, 0]] == labels[anchors[:, 1]]).all()
    assert (1 - targets @ targets.T)[np.triu_indices(3, 1)].min() > 0.02  # three different spots, not one hole thrice
    assert empty.min() > np.median(nearest_neighbour_distances(kept))


def test_sparse_cells_are_candidates_beside_pairs() -> None:
    rng = np.random.default_rng(1)
    dense = unit(np.array([1.0, 0, 0, 0]) + 0.05 * rng.normal(size=(60, 4)))
    thin = unit(np.array([[0, 1.0, 0.3, 0], [0, 1.0, -0.3, 0], [0, 1.0, 0, 0.3]]))  # three spread-out points
    vectors = np.vstack([dense, thin])
    _, anchors, _, kinds = gaps(vectors, np.zeros(len(vectors)), 40, np.random.default_rng(0), pair_budget=16)
    assert "cell" in kinds and "pair" in kinds


def test_gaps_are_seeded() -> None:
    vectors = unit(np.random.default_rng(5).normal(size=(300, 16)))  # 44,850 pairs: sampled, not enumerated
    groups = np.arange(300) % 3
    first = gaps(vectors, groups, 10, np.random.default_rng(7), pair_budget=300)
    again = gaps(vectors, groups, 10, np.random.default_rng(7), pair_budget=300)
    other = gaps(vectors, groups, 10, np.random.default_rng(8), pair_budget=300)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[3] == again[3]
    assert not np.array_equal(first[1], other[1])


def test_a_text_on_an_existing_record_fills_no_gap() -> None:
    kept = circle(np.r_[np.arange(0, 100, 5), np.arange(160, 360, 5)])
    target = circle(np.array([130.0]))[0]
    median = float(np.median(nearest_neighbour_distances(kept)))
    on_a_record = kept[3]
    detail = fills_gap(on_a_record, target, kept, median, 0.0)
    assert detail is not None and "nearest kept record" in detail and f"{median:.3f}" in detail
    assert fills_gap(circle(np.array([128.0]))[0], target, kept, median, 0.0) is None  # in the hole
    assert fills_gap(circle(np.array([128.0]))[0], target, kept, median, 1.5) is None  # far from all: fills it anyway
    near_the_edge = circle(np.array([118.0]))[0]  # 12 degrees from the target, 23 from the nearest record (95)
    assert fills_gap(near_the_edge, target, kept, 0.5, 0.0) is None  # nearer the target than any record
    assert fills_gap(near_the_edge, target, kept, 0.5, 0.1) is not None  # ... but not by the margin


def test_gaps_refuse_nearest_decoding_and_lower_tau() -> None:
    with pytest.raises(ValidationError, match="gaps needs decode: llm"):
        AugmentParams(operation="gaps", decode="nearest")
    assert AugmentParams(operation="gaps").tau == 0.6 and AugmentParams(operation="gaps", tau=0.8).tau == 0.8
    assert AugmentParams(operation="mixup").tau == 0.8
