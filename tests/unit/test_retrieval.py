"""E5 pieces: the validators, the triplet mapping, placeholder sampling, and hard-negative mining with its guard."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from synthgen.recipes.retrieval import E5Triplets, E5Validate, MineHardNegatives, MiningParams, TaskParams
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.taxonomy import Taxonomy

DOC = "Sourdough bread rises because wild yeast and lactic acid bacteria ferment the flour over many hours."


def context(tmp_path: Path, rejects: list[tuple[Record, str]]) -> StageContext:
    return StageContext(label="03-e5", index=3, seed=0, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                        resolve=lambda name: tmp_path / name, reject=lambda r, reason, detail: rejects.append((r, reason)))


def short_long(query: str = "why does sourdough rise", positive: str = DOC, negative: str = "Bread is sold in bakeries.") -> Record:
    return Record("x", {"task_type": "asymmetric/short-long", "task": "Find explanations of baking questions.",
                        "user_query": query, "positive_document": positive, "hard_negative_document": negative})


@pytest.mark.parametrize(("record", "verdict"), [
    (short_long(), None),
    (short_long(query=""), "empty_user_query"),
    (short_long(negative="  "), "empty_hard_negative_document"),
    (short_long(negative=DOC.upper()), "positive_equals_negative"),
    (short_long(query="wild yeast and lactic acid bacteria"), "query_copied_from_positive"),
    (Record("y", {"task_type": "asymmetric/long-short", "input_text": DOC, "label": "baking", "misleading_label": "Baking!"}),
     "positive_equals_negative"),
    (Record("z", {"task_type": "symmetric/sts", "S1": "A cat sleeps.", "S2": "a cat sleeps", "S3": "Dogs bark."}), "duplicate_sentences"),
    (Record("w", {"task_type": "symmetric/bitext", "S1": "Good morning.", "S2": "Bonjour.", "S3": "Bonsoir."}), None),
    (Record("v", {"task_type": "asymmetric/unknown"}), "unknown_task_type"),
])
def test_e5_validators(tmp_path: Path, record: Record, verdict: str | None) -> None:
    assert E5Validate(TaskParams(), context(tmp_path, [])).keep(record) == verdict


def test_triplets_map_every_kind(tmp_path: Path) -> None:
    rows = [short_long(),
            Record("p", {"task_type": "asymmetric/short-short", "task": "Match titles.", "input": "a", "positive_document": "b"}),
            Record("s", {"task_type": "symmetric/sts", "S1": "one", "S2": "two", "S3": "three"})]
    out = [r.fields for r in E5Triplets(TaskParams(), context(tmp_path, [])).run(rows)]
    assert out[0] == {"instruction": "Find explanations of baking questions.", "anchor": "why does sourdough rise",
                      "positive": DOC, "negative": "Bread is sold in bakeries.", "task_type": "asymmetric/short-long"}
    assert out[1]["negative"] is None and out[1]["anchor"] == "a"
    assert out[2] == {"instruction": "Retrieve semantically similar text.", "anchor": "one", "positive": "two",
                      "negative": "three", "task_type": "symmetric/sts"}


def test_placeholders_are_sampled_reproducibly() -> None:
    taxonomy = Taxonomy.load("taxonomies/e5.yaml").branch("asymmetric")
    draws = [taxonomy.sample(random.Random(seed)) for seed in range(200)]
    again = [taxonomy.sample(random.Random(seed)) for seed in range(200)]
    assert draws == again
    assert {d[0].path for d in draws} == {"asymmetric/short-long", "asymmetric/long-short", "asymmetric/short-short", "asymmetric/long-long"}
    assert {d[1]["difficulty"] for d in draws} == {"high school", "college", "PhD"}
    assert all(d[1]["num_words"] in (50, 100, 200, 300, 400, 500) for d in draws)


@pytest.mark.slow
def test_mining_skips_false_negatives_and_fills_missing_negatives(tmp_path: Path) -> None:
    rows = [
        Record("a", {"anchor": "how does sourdough bread rise", "positive": DOC, "negative": None}),
        Record("b", {"anchor": "best running shoes for flat feet", "positive": "Stability running shoes support flat feet with firm midsoles.", "negative": None}),
        Record("c", {"anchor": "how to train a puppy to sit", "positive": "Teach a puppy to sit with treats and short daily sessions.", "negative": None}),
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        '{"text": "How does sourdough bread rise? Wild yeast and bacteria ferment flour, which makes the dough rise."}\n'
        '{"text": "Rye bread uses sourdough starters in many Northern European bakeries."}\n'
        '{"text": "Marathon training plans build mileage gradually."}\n'
    )
    params = MiningParams.model_validate({"corpus": {"path": str(corpus)}, "k": 2})
    out = {r.id: r for r in MineHardNegatives(params, context(tmp_path, [])).run(rows)}
    mined = out["a"].fields["mined_negatives"]
    assert "How does sourdough bread rise?" not in " ".join(mined)  # closer to the query than the positive: guarded
    assert out["a"].meta["scores"]["false_negatives_skipped"] >= 1
    assert len(mined) == 2 and DOC not in mined
    assert all(score < out["a"].meta["scores"]["positive_similarity"] for score in out["a"].meta["scores"]["mined_negative_similarity"])
    assert all(r.fields["negative"] == r.fields["mined_negatives"][0] for r in out.values())
