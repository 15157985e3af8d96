"""E5 pieces: the validators, the triplet mapping, placeholder and language sampling, the shipped recipes' dedup
keys, and hard-negative mining with its guard."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import yaml

from synthgen.prompts import PromptLibrary
from synthgen.recipes.retrieval import (
    E5Languages,
    E5Triplets,
    E5Validate,
    LanguageParams,
    MineHardNegatives,
    MiningParams,
    TaskParams,
    ValidateParams,
)
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.dedup import ExactDedup
from synthgen.taxonomy import Taxonomy

REPO = Path(__file__).resolve().parents[2]

DOC = "Sourdough bread rises because wild yeast and lactic acid bacteria ferment the flour over many hours."


def context(tmp_path: Path, rejects: list[tuple[Record, str]], root: Path | None = None) -> StageContext:
    return StageContext(label="03-e5", index=3, seed=0, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                        resolve=lambda name: (root or tmp_path) / name, reject=lambda r, reason, detail: rejects.append((r, reason)))


def short_long(query: str = "why does sourdough rise", positive: str = DOC, negative: str = "Bread is sold in bakeries.") -> Record:
    return Record("x", {"task_type": "asymmetric/short-long", "task": "Find explanations of baking questions.",
                        "user_query": query, "positive_document": positive, "hard_negative_document": negative})


@pytest.mark.parametrize(("record", "verdict"), [
    (short_long(), None),
    (short_long(query=""), "empty_user_query"),
    (short_long(negative="  "), "empty_hard_negative_document"),
    (short_long(negative=DOC.upper()), "positive_equals_negative"),
    (short_long(query="Wild yeast and lactic acid bacteria ferment the flour"), "query_copied_from_positive"),
    # item 1: short queries a relevant document naturally contains, and matches inside words, are kept
    (short_long(query="cat", positive="Domesticated animals such as dogs need daily walks and regular vet visits."), None),
    (short_long(query="tax", positive="The syntax of a programming language defines which programs are well formed."), None),
    (short_long(query="sourdough bread"), None),
    (short_long(query="lactic acid bacteria"), None),
    (short_long(query="wild yeast and lactic acid bacteria ferment flour quickly"), None),  # 8 words, not a copied run
    (Record("y", {"task_type": "asymmetric/long-short", "input_text": DOC, "label": "baking", "misleading_label": "Baking!"}),
     "positive_equals_negative"),
    # item 2: the paper's "avoid including the values of label and misleading_label in the input_text"
    (Record("l", {"task_type": "asymmetric/long-short", "input_text": DOC, "label": "lactic acid", "misleading_label": "pastry"}),
     "label_in_input"),
    (Record("m", {"task_type": "asymmetric/long-short", "input_text": DOC, "label": "fermentation", "misleading_label": "Flour"}),
     "misleading_label_in_input"),
    (Record("n", {"task_type": "asymmetric/long-short", "input_text": DOC, "label": "ferment science", "misleading_label": "our"}),
     None),
    (Record("z", {"task_type": "symmetric/sts", "S1": "A cat sleeps.", "S2": "a cat sleeps", "S3": "Dogs bark."}), "duplicate_sentences"),
    (Record("w", {"task_type": "symmetric/bitext", "S1": "Good morning.", "S2": "Bonjour.", "S3": "Bonsoir."}), None),
    (Record("v", {"task_type": "asymmetric/unknown"}), "unknown_task_type"),
])
def test_e5_validators(tmp_path: Path, record: Record, verdict: str | None) -> None:
    assert E5Validate(ValidateParams(), context(tmp_path, [])).keep(record) == verdict


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
    by_kind = {path: [p for leaf, p in draws if leaf.path == path] for path in {d[0].path for d in draws}}
    assert {p["difficulty"] for p in by_kind["asymmetric/short-long"]} == {"high school", "college", "PhD"}
    assert all(p["num_words"] in (50, 100, 200, 300, 400, 500) for p in by_kind["asymmetric/short-long"])
    assert {p["num_words"] for p in by_kind["asymmetric/long-short"]} <= {"less than 10", "at least 10", "at least 50",
                                                                          "at least 100", "at least 200"}
    assert all(p == {} for p in by_kind["asymmetric/short-short"] + by_kind["asymmetric/long-long"])  # the paper's: none


def render(leaf: str, placeholders: dict[str, object], record: dict[str, str]) -> str:
    prompt = Taxonomy.load("taxonomies/e5.yaml").sample(random.Random(0), leaf)[0].template
    messages = PromptLibrary(REPO / "prompts").render(str(prompt), {**placeholders, "leaf": leaf, "record": record})
    return messages[-1]["content"]


def test_templates_say_what_they_sample() -> None:
    """Item 2-3: clarity reaches the long-short prompt; long-long asks for 300 words; STS and bitext name their
    unit, difficulty and scores; bitext's source language is the record's, not always English."""
    long_short = render("asymmetric/long-short", {"num_words": "at least 50", "clarity": "ambiguous", "difficulty": "PhD"},
                        {"task": "Classify reviews.", "language": "German"})
    assert "is ambiguous and requires PhD level education" in long_short and "in German" in long_short
    long_long = render("asymmetric/long-long", {}, {"task": "Match abstracts.", "language": "Polish"})
    assert "at least 300 words" in long_long and "in Polish" in long_long
    scores = {"unit": "passage", "high_score": 4.5, "low_score": 2, "difficulty": "elementary school"}
    bitext = render("symmetric/bitext", scores, {"source_language": "Japanese", "target_language": "Swahili"})
    assert "one passage in Japanese and two passages in Swahili" in bitext
    assert "translation quality score of \"S2\" with respect to \"S1\" should be 4.5" in bitext and "elementary school" in bitext
    sts = render("symmetric/sts", {**scores, "low_score": 3}, {"language": "Hindi", "topic": "law"})
    assert "passage triple" in sts and "should be 3." in sts and "in Hindi" in sts and "Topic area: law" in sts


def test_languages_are_drawn_by_corpus_size(tmp_path: Path) -> None:
    """Item 4: XLM-R's languages weighted by CC-100 size: English most often, low-resource ones rarely; bitext's
    two languages always differ; the same record gets the same languages on every run."""
    stage = E5Languages(LanguageParams(fields=["source_language", "target_language"]), context(tmp_path, [], REPO))
    assert len(stage.languages.leaves) >= 100
    records = [Record(f"r{i}", {"task": "t"}) for i in range(3000)]
    out = list(stage.run(records))
    assert all(r.fields["source_language"] != r.fields["target_language"] for r in out)
    counts = Counter(r.fields["source_language"] for r in out)
    assert counts.most_common(1)[0][0] == "English" and 0.1 < counts["English"] / len(out) < 0.2
    assert counts["Russian"] > counts["Dutch"] > counts["Welsh"] and len(counts) > 40
    again = list(E5Languages(LanguageParams(fields=["source_language", "target_language"]), context(tmp_path, [], REPO)).run(records))
    assert [r.fields for r in again] == [r.fields for r in out]


@pytest.mark.parametrize("recipe", ["e5_retrieval", "e5_symmetric"])
def test_recipes_dedup_anchors_per_task(tmp_path: Path, recipe: str) -> None:
    """Item 6: the same short anchor under two tasks is two examples; under one task, a duplicate."""
    stages = yaml.safe_load((REPO / "recipes" / f"{recipe}.yaml").read_text(encoding="utf-8"))["stages"]
    params = next(stage["exact_dedup"] for stage in stages if "exact_dedup" in stage)
    rows = [Record(str(i), {"instruction": task, "anchor": "python", "positive": "A language.", "negative": None,
                            "task_type": "asymmetric/short-short"}) for i, task in enumerate(["Find snakes.", "Find software.", "Find snakes."])]
    rejects: list[tuple[Record, str]] = []
    kept = list(ExactDedup(ExactDedup.Params.model_validate(params), context(tmp_path, rejects)).run(rows))
    assert [r.id for r in kept] == ["0", "1"] and [r.id for r, _ in rejects] == ["2"]


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
