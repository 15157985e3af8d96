"""Decontamination by word n-grams and word edits: edited copies of short queries and long items embedded in
longer texts are caught; common phrasing shared with an item is not."""

from __future__ import annotations

import pytest

from synthgen.dedup.contamination import ContaminationIndex, edit_distance

QUERY = "How do I reset the PIN of my debit card?"  # 10 words
PASSAGE = ("The mitochondrion is the organelle that produces most of the chemical energy needed to power the "
           "biochemical reactions of the cell, stored in a small molecule called adenosine triphosphate.")  # 30 words


@pytest.fixture
def index() -> ContaminationIndex:
    built = ContaminationIndex()
    for key, text in (("q", QUERY), ("p", PASSAGE), ("short", "Can I top up?"), ("mid", "I was charged twice for the same coffee")):
        built.add(key, text)
    return built


@pytest.mark.parametrize("record", [
    QUERY, QUERY.upper(), "how do i reset the pin of my debit card!!", "How do I change the PIN of my debit card?",
    "How do I reset PIN the of my debit card?", "How do I reset the PIN of my new debit card?",
])
def test_copies_and_one_edit_copies_of_a_short_item_are_caught(index: ContaminationIndex, record: str) -> None:
    match = index.find(record)
    assert match is not None and match.key == "q" and match.similarity >= 0.8


def test_a_long_item_is_caught_inside_a_longer_text_even_with_an_edit(index: ContaminationIndex) -> None:
    edited = PASSAGE.replace(" chemical ", " biological ")
    match = index.find(f"Question: summarise this. {edited} Answer in one line.")
    assert match is not None and match.key == "p" and 0.8 <= match.similarity < 1.0
    assert index.find("The mitochondrion is the organelle of the cell, stored in a small bag.") is None


def test_a_short_item_counts_inside_a_longer_text_only_whole_and_from_n_words(index: ContaminationIndex) -> None:
    assert index.find("Yesterday I was charged twice for the same coffee at the airport") == index.find(
        "I was charged twice for the same coffee")
    assert index.find("If I want to can I top up my card with a cheque?") is None  # 4 words: common phrasing
    assert index.find("I was charged twice for the same tea at the airport, why?") is None  # edited and embedded


def test_shared_common_phrasing_is_not_contamination(index: ContaminationIndex) -> None:
    for record in ("How do I reset my password?", "How do I order a new debit card?", "What is the PIN of my card?"):
        assert index.find(record) is None


def test_edit_distance_counts_a_swap_of_neighbours_as_one_edit() -> None:
    assert edit_distance("a b c d".split(), "a c b d".split()) == 1
    assert edit_distance("a b c d".split(), "a x c".split()) == 2
    assert edit_distance([], "a b".split()) == 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        ContaminationIndex(threshold=0)
    with pytest.raises(ValueError, match="ngram"):
        ContaminationIndex(ngram=1)
