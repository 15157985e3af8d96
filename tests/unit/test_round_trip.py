"""Issue 20 item 4: the round-trip consistency filter (Promptagator) and the positive-aware false-negative guard
(NV-Retriever's TopK-PercPos) of hard-negative mining."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthgen.embedding.encoder import DEFAULT_MODEL, Encoder
from synthgen.recipes.retrieval import MineHardNegatives, MiningParams
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.round_trip import RoundTripFilter, RoundTripParams

SOURDOUGH = "Sourdough bread rises because wild yeast and lactic acid bacteria ferment the flour over many hours."
SHOES = "Stability running shoes support flat feet with firm midsoles and a wide base."
PUPPY = "Teach a puppy to sit with small treats and short training sessions every day."


def context(tmp_path: Path, rejects: list[tuple[Record, str, str | None]]) -> StageContext:
    return StageContext(label="05-round_trip_filter", index=5, seed=0, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                        resolve=lambda name: tmp_path / name, workdir=tmp_path,
                        reject=lambda r, reason, detail: rejects.append((r, reason, detail)))


def query(id_: str, text: str, passage: str) -> Record:
    return Record(id_, {"query": text, "text": passage})


QUERIES = [
    query("good-1", "why does sourdough bread rise", SOURDOUGH),
    query("good-2", "running shoes for flat feet", SHOES),
    query("good-3", "how to teach my puppy to sit", PUPPY),
    query("wrong", "best shoes for runners with flat feet", PUPPY),  # generated for PUPPY, answered by SHOES
    query("empty", "  ", SOURDOUGH),
]


@pytest.mark.slow
def test_round_trip_keeps_queries_whose_passage_ranks_first(tmp_path: Path) -> None:
    rejects: list[tuple[Record, str, str | None]] = []
    kept = list(RoundTripFilter(RoundTripParams(), context(tmp_path, rejects)).run(QUERIES))
    assert [r.id for r in kept] == ["good-1", "good-2", "good-3"]
    assert all(r.meta["scores"]["round_trip_rank"] == 1 for r in kept)
    reasons = {r.id: (reason, detail) for r, reason, detail in rejects}
    assert reasons["wrong"][0] == "round_trip_failed" and "ranked 3 of 3" in str(reasons["wrong"][1])
    assert reasons["empty"][0] == "round_trip_empty"
    # a looser top_k keeps the query once its passage's rank is within it
    assert "wrong" not in {r.id for r in RoundTripFilter(RoundTripParams(top_k=2), context(tmp_path, [])).run(QUERIES)}
    loose = {r.id: r for r in RoundTripFilter(RoundTripParams(top_k=3), context(tmp_path, [])).run(QUERIES)}
    assert loose["wrong"].meta["scores"]["round_trip_rank"] == 3 and len(loose) == 4


@pytest.mark.slow
def test_positive_aware_guard_skips_candidates_near_the_positive(tmp_path: Path) -> None:
    paraphrase = "Wild yeast and lactic acid bacteria make sourdough rise by slowly fermenting the flour."
    rows = [Record("a", {"anchor": "why does sourdough bread rise", "positive": SOURDOUGH, "negative": None}),
            Record("b", {"anchor": "sourdough", "positive": paraphrase, "negative": None}),
            Record("c", {"anchor": "running shoes", "positive": SHOES, "negative": None}),
            Record("d", {"anchor": "puppy training", "positive": PUPPY, "negative": None})]
    encoder = Encoder(DEFAULT_MODEL, 8)
    q, pos, para = encoder.encode([rows[0].fields["anchor"], SOURDOUGH, paraphrase])
    positive_score, paraphrase_score = float(q @ pos), float(q @ para)
    assert 0.85 * positive_score < paraphrase_score < positive_score  # below the positive: the margin rule keeps it

    def mine(**extra: float) -> Record:
        params = MiningParams.model_validate({"k": 2, **extra})
        return next(iter(MineHardNegatives(params, context(tmp_path, [])).run(rows)))

    plain, guarded = mine(), mine(max_positive_fraction=0.85)
    assert plain.fields["mined_negatives"][0] == paraphrase and plain.meta["scores"]["false_negatives_skipped"] == 0
    assert paraphrase not in guarded.fields["mined_negatives"] and len(guarded.fields["mined_negatives"]) == 2
    assert guarded.meta["scores"]["false_negatives_skipped"] == 1
    assert all(s <= 0.85 * positive_score + 1e-4 for s in guarded.meta["scores"]["mined_negative_similarity"])


@pytest.mark.slow
def test_similarity_floor_drops_queries_that_win_by_default(tmp_path: Path) -> None:
    """One passage: every query ranks it first; an unrelated one (a copied few-shot example) is caught by the floor."""
    rows = [query("on-topic", "why does sourdough bread rise", SOURDOUGH), query("echo", "replace bike inner tube", SOURDOUGH)]
    assert len(list(RoundTripFilter(RoundTripParams(), context(tmp_path, [])).run(rows))) == 2
    rejects: list[tuple[Record, str, str | None]] = []
    kept = list(RoundTripFilter(RoundTripParams(min_similarity=0.3), context(tmp_path, rejects)).run(rows))
    assert [r.id for r in kept] == ["on-topic"] and kept[0].meta["scores"]["round_trip_similarity"] >= 0.3
    assert [(r.id, reason) for r, reason, _ in rejects] == [("echo", "round_trip_low_similarity")]
    assert "ranked 1" in str(rejects[0][2])
