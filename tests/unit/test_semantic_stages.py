"""semantic_dedup and diversity_select on a few real texts with the packaged MiniLM (loaded once per module)."""

from __future__ import annotations

import sys
import tracemalloc
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synthgen.embedding.encoder import Encoder
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.semantic import DiversitySelect, DiversitySelectParams, SemanticDedup, SemanticDedupParams
from synthgen.stats import RunStats

TEXTS = [
    ("How do I reset my password?", "account"),
    ("What is the capital of France?", "geography"),
    ("How can I reset my password?", "account"),  # paraphrase of 0: cosine 0.99
    ("Best recipe for banana bread", "cooking"),
    ("how do i reset my password", "account"),  # near copy of 0: 0.99
    ("What time does the store open on Sundays?", "shopping"),
    ("I forgot my password, how do I reset it?", "account"),  # related, below 0.95
    ("The weather is nice today.", "weather"),
]
METRICS = {"n", "vendi", "mean_pairwise_distance", "cluster_entropy"}


@pytest.fixture(scope="module", autouse=True)
def encoder() -> Encoder:
    """Loads the model once; the stages' encoders reuse it."""
    return Encoder()


def context(tmp_path: Path, rejects: list[tuple[Record, str, str | None]]) -> StageContext:
    return StageContext(label="04-semantic", index=4, seed=0, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                        resolve=lambda name: tmp_path / name, stats=RunStats(),
                        reject=lambda r, reason, detail: rejects.append((r, reason, detail)), workdir=tmp_path)


def records() -> list[Record]:
    return [Record(f"r{i}", {"question": text, "topic": topic}, {"scores": {"rating": i % 3}}) for i, (text, topic) in enumerate(TEXTS)]


def test_semantic_dedup_drops_paraphrases_and_names_the_kept_record(tmp_path: Path) -> None:
    rejects: list[tuple[Record, str, str | None]] = []
    ctx = context(tmp_path, rejects)
    kept = list(SemanticDedup(SemanticDedupParams(fields=["question"]), ctx).run(records()))
    assert [r.id for r in kept] == ["r0", "r1", "r3", "r5", "r6", "r7"]
    assert [(r.id, reason, r.meta["duplicate_of"]) for r, reason, _ in rejects] == [
        ("r2", "semantic_duplicate", "r0"), ("r4", "semantic_duplicate", "r0")]
    assert all(0.95 <= r.meta["similarity"] <= 1.0 for r, _, _ in rejects)
    assert kept[0].fields == {"question": TEXTS[0][0], "topic": "account"} and "duplicate_of" not in kept[0].meta
    metrics = ctx.stats.metrics["04-semantic"]
    assert set(metrics) == {"before", "after", "dropped"} and metrics["dropped"] == 2
    assert set(metrics["before"]) == set(metrics["after"]) == METRICS
    assert (metrics["before"]["n"], metrics["after"]["n"]) == (8, 6)
    assert metrics["after"]["mean_pairwise_distance"] > metrics["before"]["mean_pairwise_distance"]
    assert not list(tmp_path.iterdir())  # the spill file is gone


def test_semantic_dedup_threshold_is_the_knob(tmp_path: Path) -> None:
    rejects: list[tuple[Record, str, str | None]] = []
    kept = list(SemanticDedup(SemanticDedupParams(fields=["question"], threshold=0.9), context(tmp_path, rejects)).run(records()))
    assert "r6" not in {r.id for r in kept} and {r.id for r, _, _ in rejects} == {"r2", "r4", "r6"}
    assert not list(SemanticDedup(SemanticDedupParams(), context(tmp_path, rejects)).run([]))


@pytest.mark.parametrize("method", ["kmeans_medoids", "k_center", "random"])
def test_diversity_select_keeps_k_and_rejects_the_rest(tmp_path: Path, method: str) -> None:
    rejects: list[tuple[Record, str, str | None]] = []
    ctx = context(tmp_path, rejects)
    params = DiversitySelectParams(fields=["question"], k=5, method=method, label_field="topic")  # type: ignore[arg-type]
    kept = list(DiversitySelect(params, ctx).run(records()))
    assert len(kept) == 5 and [r.id for r in kept] == sorted(r.id for r in kept)  # input order
    assert len(rejects) == 3 and {(reason, detail) for _, reason, detail in rejects} == {("not_selected", method)}
    metrics = ctx.stats.metrics["04-semantic"]
    assert metrics["method"] == method and metrics["before"]["labels"] == 5 and metrics["after"]["n"] == 5
    if method != "random":  # five picks, five topics: never two of the four password questions
        assert len({r.fields["topic"] for r in kept}) == 5 == metrics["after"]["labels"]


def test_diversity_select_fraction_and_mmr_score(tmp_path: Path) -> None:
    rejects: list[tuple[Record, str, str | None]] = []
    ctx = context(tmp_path, rejects)
    params = DiversitySelectParams(fields=["question"], fraction=0.25, method="mmr", score="rating", lambda_=1.0)
    kept = list(DiversitySelect(params, ctx).run(records()))
    assert [r.id for r in kept] == ["r2", "r5"]  # the two records rated 2
    assert "labels" not in ctx.stats.metrics["04-semantic"]["after"]


def test_diversity_select_params_are_checked() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        DiversitySelectParams(k=3, fraction=0.5)
    with pytest.raises(ValueError, match="exactly one of"):
        DiversitySelectParams()
    with pytest.raises(ValueError, match="needs `score`"):
        DiversitySelectParams(k=3, method="mmr")


class HashEncoder:
    """A fake sentence encoder: a fixed random unit vector per text (no model)."""

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=384) for t in texts])
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class FakeEncoderContext(StageContext):
    def encoder(self, model: str, batch_size: int = 64) -> Any:
        return HashEncoder()


def test_diversity_select_holds_one_float32_array_and_compact_per_record_state(tmp_path: Path) -> None:
    n = 3 * DiversitySelect.chunk
    ctx = FakeEncoderContext(label="04-semantic", index=4, seed=0, recipe_path=tmp_path / "r.yaml",
                             prompts_dir=tmp_path, resolve=lambda name: tmp_path / name, workdir=tmp_path)
    stage = DiversitySelect(DiversitySelectParams(fields=["q"], k=5, method="mmr", score="rating",
                                                  label_field="topic"), ctx)
    batches = [[Record(f"r{i}", {"q": f"question {i}", "topic": f"topic {i % 50}"}, {"scores": {"rating": i % 7}})
                for i in range(start, start + DiversitySelect.chunk)] for start in range(0, n, DiversitySelect.chunk)]
    stage.start()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for batch in batches:
            stage.see(batch)
        vectors, scores = stage.vectors(), stage.scores.trim()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert vectors.shape == (n, 384) and vectors.dtype == np.float32 and scores.dtype == np.float64
    assert scores[:8].tolist() == [0, 1, 2, 3, 4, 5, 6, 0]
    ids = sum(sys.getsizeof(i) + 8 for i in stage.ids)
    assert held < 1.2 * (vectors.nbytes + ids + n * (8 + 4))  # vectors once, ids, a float64 score, an int32 label


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["kmeans", "faiss"])
def test_semantic_dedup_past_exact_limit_reports_its_sampled_recall(tmp_path: Path, backend: str) -> None:
    if backend == "faiss":
        pytest.importorskip("faiss")
    rejects: list[tuple[Record, str, str | None]] = []
    ctx = FakeEncoderContext(label="04-semantic", index=4, seed=0, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                             resolve=lambda name: tmp_path / name, workdir=tmp_path,
                             reject=lambda r, reason, detail: rejects.append((r, reason, detail)))
    rows = [Record(f"r{i}", {"q": f"question {i % 400}"}) for i in range(500)]  # 100 exact repeats of earlier rows
    params = SemanticDedupParams(fields=["q"], exact_limit=100, approximate=backend)  # type: ignore[arg-type]
    kept = list(SemanticDedup(params, ctx).run(rows))
    assert [r.id for r in kept] == [f"r{i}" for i in range(400)]
    assert {r.meta["duplicate_of"] for r, _, _ in rejects} == {f"r{i}" for i in range(100)}
    metrics = ctx.stats.metrics["04-semantic"]
    assert metrics["approximate"] == backend and metrics["approx_recall"] == 1.0 and metrics["dropped"] == 100
    ctx.stats.metrics.clear()
    list(SemanticDedup(SemanticDedupParams(fields=["q"]), ctx).run(rows))  # under exact_limit: exact, no estimate
    assert "approx_recall" not in ctx.stats.metrics["04-semantic"]
