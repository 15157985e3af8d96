"""Self-Instruct's filters, the fast ROUGE-L pool against the all-pairs reference, and prompt composition."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from synthgen.errors import ConfigError, InputError
from synthgen.recipe import load_recipe
from synthgen.recipes.rouge import RougePool, naive_most_similar, rouge_l, rouge_tokens
from synthgen.recipes.self_instruct import (
    BLACKLIST,
    SelfInstructParams,
    Task,
    filter_instances,
    instruction_verdict,
    pick_examples,
    seed_task,
)
from synthgen.record import Record
from tests.conftest import write


def verdict(text: str) -> str | None:
    found = instruction_verdict(text, min_words=4, max_words=150)
    return found[0] if found else None


@pytest.mark.parametrize(("words", "reason"), [(1, "too_few_words"), (3, "too_few_words"), (4, None), (150, None),
                                               (151, "too_many_words")])
def test_word_count_bounds(words: int, reason: str | None) -> None:
    assert verdict(" ".join(["Explain"] + ["tides"] * (words - 1))) == reason


@pytest.mark.parametrize("word", BLACKLIST)
def test_each_blacklisted_word_is_caught_in_any_case(word: str) -> None:
    assert verdict(f"Describe the {word} we saw in the report") == "blacklisted_word"
    assert verdict(f"Describe the {word.upper()} we saw in the report") == "blacklisted_word"


@pytest.mark.parametrize("text", ["Imagine a mapping between two user profiles", "Suggest a plotline for a drawer mystery",
                                  "Tell me where we go tomorrow evening", "Summarise the filed graphics report"])
def test_blacklist_matches_whole_words_only(text: str) -> None:
    assert verdict(text) is None


def test_instruction_reasons_in_order() -> None:
    assert verdict("Write a program that sorts a list of numbers") == "write_a_program"
    assert verdict("write a program that adds two numbers together") == "write_a_program"
    assert verdict("Write a poem about computer programs") is None
    assert verdict("Write a program to draw a house") == "blacklisted_word"  # the blacklist comes first
    assert verdict('"Quote" the most famous line of Hamlet') == "starts_with_punctuation"
    assert verdict("- List five fruits that are red") == "starts_with_punctuation"
    assert verdict("¿Cómo se dice hello en francés?") == "starts_with_non_ascii"
    assert verdict("Édith wants a list of French novels") == "starts_with_non_ascii"
    assert verdict("Give three tips for staying healthy.") is None


def test_rouge_tokens_follow_rouge_score() -> None:
    assert rouge_tokens("Don't panic! Café #42") == ["don", "t", "panic", "caf", "42"]


def test_rouge_threshold_is_strict() -> None:
    pool = RougePool(0.7)
    pool.add(rouge_tokens("Give three tips for staying healthy."))
    pool.add(list("abcdefghij"))
    match = pool.most_similar(rouge_tokens("Give three tips for staying healthy and fit"))
    assert match is not None and match.entry == 0 and match.score == pytest.approx(2 * 6 / 14)
    assert pool.most_similar(rouge_tokens("Give three reasons for learning French")) is None  # F1 0.5
    assert rouge_l(list("abcdefghij"), list("abcdefgxyz")) == pytest.approx(0.7)
    assert pool.most_similar(list("abcdefgxyz")) is None  # exactly 0.7 is kept
    assert pool.most_similar(list("abcdefghyz")) == (pytest.approx(0.8), 1)
    assert pool.most_similar([]) is None and RougePool(0.7).most_similar(["a"]) is None
    with pytest.raises(ValueError, match="0.7"):
        RougePool(1.0)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 0.9])
def test_fast_pool_equals_all_pairs_reference(threshold: float) -> None:
    rng = random.Random(threshold)
    words = [f"w{i}" for i in range(12)]
    pool: list[list[str]] = []
    fast = RougePool(threshold)
    decisions = 0
    for _ in range(300):
        tokens = [rng.choice(words) for _ in range(rng.randint(0, 14))]
        if pool and rng.random() < 0.5:  # a near duplicate of an entry: the interesting side of the threshold
            tokens = [t if rng.random() < 0.8 else rng.choice(words) for t in rng.choice(pool)]
        expected, found = naive_most_similar(tokens, pool), fast.most_similar(tokens)
        if expected.score > threshold:
            assert found == expected, tokens
            decisions += 1
        else:
            assert found is None, tokens
        pool.append(tokens)
        fast.add(tokens)
    assert decisions > 20


def test_instance_filters() -> None:
    kept, dropped, conflict = filter_instances([
        {"input": "2 + 2", "output": " 4 "},
        {"input": "x", "output": ""},
        {"input": "same", "output": "same"},
        {"input": "", "output": "Here are the steps:"},
        {"input": "List them:", "output": "a, b"},
        {"input": "2 + 2", "output": "4"},
        {"input": "", "output": "A poem."},
        {"input": "", "output": "Another poem."},
    ])
    assert conflict is None
    assert kept == [{"input": "2 + 2", "output": "4"}, {"input": "", "output": "A poem."}, {"input": "", "output": "Another poem."}]
    assert dropped == {"empty_output": 1, "input_equals_output": 1, "ends_with_colon": 2, "repeated_instance": 1}


def test_same_input_with_different_outputs_is_a_conflict() -> None:
    kept, dropped, conflict = filter_instances([{"input": "Is 7 prime?", "output": "yes"}, {"input": "Is 7 prime?", "output": "no"}])
    assert conflict == "Is 7 prime?"
    assert filter_instances([{"input": "a", "output": ""}])[0] == []


def test_prompt_examples_mix_seed_and_generated_and_are_shuffled_deterministically() -> None:
    seeds = [Task(f"s{i}", f"seed {i}") for i in range(20)]
    generated = [Task(f"g{i}", f"generated {i}") for i in range(5)]

    def ids(n_generated: int, key: int) -> list[str]:
        return [t.id for t in pick_examples(random.Random(key), seeds, generated[:n_generated], 6, 2)]

    for n_generated, expected in [(0, 0), (1, 1), (2, 2), (5, 2)]:
        picked = ids(n_generated, 7)
        assert len(picked) == len(set(picked)) == 8
        assert sum(i.startswith("g") for i in picked) == expected
    assert ids(5, 7) == ids(5, 7) and ids(5, 7) != ids(5, 8)
    positions = {i for key in range(30) for i, name in enumerate(ids(5, key)) if name.startswith("g")}
    assert len(positions) > 4  # generated examples land anywhere, not always first
    assert len(pick_examples(random.Random(0), seeds[:3], [], 6, 2)) == 3


def test_malformed_seed_task_names_its_line() -> None:
    record = Record("r1", {"instruction": "Do it", "instances": [{"input": "", "output": 3}]}, {"source": "s.jsonl", "line": 4})
    with pytest.raises(InputError, match=r"s\.jsonl:4: seed task `instances`"):
        seed_task(record)
    task = seed_task(Record("r2", {"instruction": " Do  it ", "instances": [{"output": "done"}]}))
    assert task == Task("r2", "Do it", False, ({"input": "", "output": "done"},))


def test_params_are_checked(tmp_path: Path) -> None:
    assert SelfInstructParams().rouge_threshold == 0.7
    for bad, message in [("min_words: 9, max_words: 5", "min_words"), ("rouge_treshold: 0.5", "rouge_treshold"),
                         ("seed_examples: 0, generated_examples: 0", "at least 1")]:
        path = write(tmp_path / "r.yaml", f"name: x\nsource: {{path: s.jsonl}}\nstages:\n  - self_instruct: {{{bad}}}\n")
        with pytest.raises(ConfigError, match=message):
            load_recipe(path)
