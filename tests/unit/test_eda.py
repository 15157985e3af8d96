"""EDA operations with a fixed seed: deterministic, rates respected, labels preserved."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.eda import Eda, EdaParams, augment, synonym_table

WORDS = "the quick brown fox jumps over the lazy dog near the quiet river bank today".split()
SYNONYMS = {"quick": ["fast", "rapid"], "lazy": ["idle"], "river": ["stream"], "dog": ["hound"], "quiet": ["calm"]}


def test_synonym_replacement_changes_the_rate_of_words() -> None:
    out = augment(WORDS, "synonym_replacement", 0.2, SYNONYMS, random.Random(1))
    changed = [(a, b) for a, b in zip(WORDS, out) if a != b]
    assert len(out) == len(WORDS) and len(changed) == 3  # round(0.2 * 15)
    assert all(b in SYNONYMS[a] for a, b in changed)
    assert out == augment(WORDS, "synonym_replacement", 0.2, SYNONYMS, random.Random(1))


def test_insertion_swap_and_deletion() -> None:
    inserted = augment(WORDS, "random_insertion", 0.2, SYNONYMS, random.Random(2))
    extra = Counter(inserted) - Counter(WORDS)
    assert len(inserted) == len(WORDS) + 3 and set(extra) <= {s for v in SYNONYMS.values() for s in v}
    swapped = augment(WORDS, "random_swap", 0.1, SYNONYMS, random.Random(3))
    assert sorted(swapped) == sorted(WORDS) and swapped != WORDS
    deleted = [augment(WORDS, "random_deletion", 0.3, SYNONYMS, random.Random(seed)) for seed in range(200)]
    mean_kept = np.mean([len(d) for d in deleted]) / len(WORDS)
    assert 0.6 < mean_kept < 0.8 and all(d and set(d) <= set(WORDS) for d in deleted)
    assert augment(["alone"], "random_deletion", 1.0, {}, random.Random(0)) == ["alone"]


def test_synonym_table_from_vectors() -> None:
    words = ["car", "automobile", "banana"]
    vectors = np.array([[1.0, 0.0], [0.95, 0.31], [0.0, 1.0]])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert synonym_table(words, vectors, 0.9) == {"car": ["automobile"], "automobile": ["car"], "banana": []}


def test_the_stage_keeps_labels_and_is_deterministic(tmp_path: Path) -> None:
    ctx = StageContext(label="01-eda", index=1, seed=9, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                       resolve=lambda name: tmp_path / name)
    rows = [Record("a", {"text": "my card payment was declined at the shop", "label": "declined"}),
            Record("b", {"text": "how do I top up my card with cash", "label": "top_up"})]
    params = EdaParams(synonym_replacement=0.0, random_insertion=0.0, per_operation=2)
    out = list(Eda(params, ctx).run(rows))
    again = list(Eda(params, ctx).run(rows))
    assert [r.fields for r in out] == [r.fields for r in again]
    assert len(out) == 2 + 2 * 2 * 2  # inputs + 2 operations x 2 copies each
    for record in out[1:]:
        if "operation" in record.fields:
            parent = rows[0] if record.meta["parents"] == ["a"] else rows[1]
            assert record.fields["label"] == parent.fields["label"]
            assert record.fields["operation"] in ("random_swap", "random_deletion")


def full_matrix_table(words: list[str], vectors: np.ndarray, min_similarity: float, rows: range | np.ndarray,
                      k: int = 5) -> dict[str, list[str]]:
    """The reference: each row's ranking over its full similarity row (what the vocabulary^2 matrix held)."""
    table = {}
    for row in rows:
        scores = vectors @ vectors[row]
        scores[row] = -np.inf
        best = np.argsort(-scores, kind="stable")[:k]
        table[words[row]] = [words[i] for i in best if scores[i] >= min_similarity]
    return table


@pytest.mark.slow
def test_blocked_synonym_table_equals_the_full_matrix_on_a_real_vocabulary(monkeypatch: pytest.MonkeyPatch) -> None:
    from synthgen.embedding.encoder import Encoder
    from synthgen.stages import eda

    text = " ".join(["my card payment was declined at the shop how do I top up with cash transfer money account",
                     "balance refund charge fee exchange rate travel abroad pin blocked lost stolen phone app verify",
                     "identity passport address change cancel order delivery arrive late wrong item return policy"])
    words = sorted(set(text.lower().split()))
    vectors = Encoder().encode(words)
    expected = full_matrix_table(words, vectors, 0.3, range(len(words)))
    assert any(expected.values())
    monkeypatch.setattr(eda, "_BLOCK", 7)  # several blocks, the last one partial
    assert synonym_table(words, vectors, 0.3) == expected


@pytest.mark.slow
def test_synonym_table_of_20k_words_stays_in_blocks() -> None:
    import tracemalloc

    n = 20_000
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n // 4, 16)).astype(np.float32)  # 4 noisy copies of each centre: real neighbours
    vectors = np.repeat(vectors, 4, axis=0) + 0.3 * rng.normal(size=(n, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = [f"w{i}" for i in range(n)]
    tracemalloc.start()
    try:
        table = synonym_table(words, vectors, 0.8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < n * n * 4 / 4  # a quarter of the vocabulary^2 float32 matrix the query must not build
    sample = rng.choice(n, 300, replace=False)
    assert {words[i]: table[words[i]] for i in sample} == full_matrix_table(words, vectors, 0.8, sample)
    assert sum(map(len, table.values())) > n  # most words found their planted neighbours
