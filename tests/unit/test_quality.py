"""Heuristic quality filters: each rule drops what it should with its named reason and keeps what it should."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from synthgen.errors import ConfigError
from synthgen.record import Record
from synthgen.stages.base import Filter, StageContext
from synthgen.stages.quality import (
    GopherRepetitionFilter,
    LanguageFilter,
    LengthRatioFilter,
    NonAlphaFilter,
    PlaceholderFilter,
    RefusalFilter,
    RestatementFilter,
)
from synthgen.text_stats import repetition

GOOD = ("A lighthouse keeper spends the winter alone on the island. Each evening she climbs the stairs, trims the "
        "wick and writes one line in the log about the weather, the ships and the birds that rest on the railing.")


def make(cls: type[Filter], params: dict[str, Any], tmp_path: Path) -> tuple[Filter, list[tuple[str, str]]]:
    rejects: list[tuple[str, str]] = []
    ctx = StageContext(label="01-quality", index=1, seed=1, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                       resolve=lambda name: tmp_path / name,
                       reject=lambda record, reason, detail: rejects.append((record.id, reason)))
    return cls(cls.Params.model_validate(params), ctx), rejects


def verdict(cls: type[Filter], params: dict[str, Any], tmp_path: Path, **fields: str) -> str | None:
    stage, rejects = make(cls, params, tmp_path)
    kept = list(stage.run([Record("r1", dict(fields), {})]))
    assert len(kept) + len(rejects) == 1
    return rejects[0][1] if rejects else None


@pytest.mark.parametrize(("text", "reason"), [
    ("Write a poem about <the task>.", "placeholder"),
    ("write your answer to this [instruction_type], [input_type]", "placeholder"),
    ("Hello {{ name }}, welcome.", "placeholder"),
    ("Summarise {placeholder} in two lines.", "placeholder"),
    ("Answer the question in [topic].", "placeholder"),
    ("Dear [Your Name], thank you.", "placeholder"),
    ("<material the task works on, or empty>", "placeholder"),
    ("<The task can be answered using the given input.", "placeholder"),  # opened, never closed
    ("{{% create from 'text' ", "placeholder"),  # a half-written Jinja tag
    (GOOD, None),
    ("See [the docs](https://example.org) and use <div> or a[1] with {'a': 1}.", None),
    ("A set is written {1, 2, 3}; the list [a, b] has two items; x < y > z.", None),
    ("<html>\n<body><b>Hi</b></body>\n</html>", None),
    ("Use matrix[row][col] or arr[i + 1].", None),
])
def test_placeholder(tmp_path: Path, text: str, reason: str | None) -> None:
    assert verdict(PlaceholderFilter, {"fields": ["instruction", "response"]}, tmp_path,
                   instruction="Write a short story.", response=text) == reason


@pytest.mark.parametrize(("text", "reason"), [
    ("I'm sorry, but I cannot help with that request.", "refusal"),
    ("As an AI language model, I do not have opinions.", "refusal"),
    ("I can't write that story.", "refusal"),
    ("Sure! Here is a poem about the sea:\n\nWaves...", "preamble"),
    ("I'm ready to assist! Please provide the task.", "preamble"),
    ("Certainly, here's the summary you asked for.", "preamble"),
    (GOOD, None),
    ("The keeper said she was sorry, but the light had to stay on.", None),
])
def test_refusal(tmp_path: Path, text: str, reason: str | None) -> None:
    assert verdict(RefusalFilter, {"fields": ["response"]}, tmp_path, response=text) == reason


def test_refusal_preambles_can_be_kept(tmp_path: Path) -> None:
    params = {"fields": ["response"], "preambles": False}
    assert verdict(RefusalFilter, params, tmp_path, response="Sure! Here is the poem: roses...") is None
    assert verdict(RefusalFilter, params, tmp_path, response="I'm sorry, but no.") == "refusal"


@pytest.mark.parametrize(("response", "reason"), [
    ("Write a persuasive essay for a busy professional about remote work.", "restates_input"),  # a copy
    ("You should write a persuasive essay about remote work for a busy professional.", "restates_input"),
    ("Remote work saves commuting hours, widens the hiring pool and, measured by output, keeps teams as "
     "productive as the office did.", None),
    ("No.", None),  # too short to judge: left to the length rules
])
def test_restatement(tmp_path: Path, response: str, reason: str | None) -> None:
    assert verdict(RestatementFilter, {}, tmp_path, instruction="Write a persuasive essay about remote work.",
                   input="for a busy professional", response=response) == reason


def test_gopher_measures_follow_the_definitions() -> None:
    text = "red fox\nred fox\nfour five six seven"
    measures = repetition(text, [5], [2])
    assert measures["dup_lines"] == pytest.approx(1 / 3)
    assert measures["dup_line_chars"] == pytest.approx(len("red fox") / len(text))
    # "red fox" occurs twice: 6 word characters x 2 of the 28 word characters
    assert measures["top_2gram"] == pytest.approx(12 / 28)
    assert measures["dup_5gram"] == 0.0
    assert repetition("just one two-gram here", [5], [2])["top_2gram"] == 0.0  # a 2-gram seen once is no repetition


@pytest.mark.parametrize(("text", "reason"), [
    ("Buy now.\nBuy now.\nBuy now.\nThe offer ends soon.", "gopher_dup_lines"),
    ("The cat sat on the mat and the cat sat on the mat and the cat sat on the mat today.", "gopher_top_2gram"),
    ("It was a cold dark night in the harbour town. " * 4, "gopher_top_4gram"),
    ("The tide rose over the rocks while the gulls cried. " + GOOD, None),
    (GOOD, None),
])
def test_gopher_repetition(tmp_path: Path, text: str, reason: str | None) -> None:
    assert verdict(GopherRepetitionFilter, {"fields": ["response"]}, tmp_path, response=text) == reason


def test_gopher_duplicated_ngrams(tmp_path: Path) -> None:
    text = GOOD + " It was a cold dark night in the harbour town, and it was a cold dark night in the harbour town."
    params: dict[str, Any] = {"fields": ["response"], "top_ngrams": {}}
    assert verdict(GopherRepetitionFilter, params, tmp_path, response=text) == "gopher_dup_5gram"
    assert verdict(GopherRepetitionFilter, {**params, "dup_ngrams": {}}, tmp_path, response=text) is None


def test_gopher_skips_fenced_code(tmp_path: Path) -> None:
    code = "```python\n" + "total = total + value\n" * 4 + "```"
    text = "Add each value to the running total:\n\n" + code + "\n\nThe loop ends with the sum of the list."
    assert verdict(GopherRepetitionFilter, {"fields": ["response"]}, tmp_path, response=text) is None
    params = {"fields": ["response"], "skip_code": False}
    assert verdict(GopherRepetitionFilter, params, tmp_path, response=text) == "gopher_dup_lines"


@pytest.mark.parametrize(("params", "response", "reason"), [
    ({"min_words": 5}, "Too short.", "too_few_words"),
    ({"max_words": 10}, GOOD, "too_many_words"),
    ({"min_ratio": 2.0}, "Only a few words here for you.", "length_ratio_low"),
    ({"max_ratio": 2.0}, GOOD, "length_ratio_high"),
    ({"min_words": 5, "max_words": 100, "min_ratio": 0.5, "max_ratio": 20}, GOOD, None),
])
def test_length_ratio(tmp_path: Path, params: dict[str, Any], response: str, reason: str | None) -> None:
    assert verdict(LengthRatioFilter, params, tmp_path, instruction="Write a short story about a lighthouse keeper.",
                   input="", response=response) == reason


@pytest.mark.parametrize(("text", "reason"), [
    ("| 1 | 2 | 3 |\n|---|---|---|\n| 4.5 | 6.7 | 8.9 |", "non_alpha"),
    ("$$$ !!! ### 12345 @@@ ok", "non_alpha"),
    (GOOD, None),
    ("The answer is 42, because 6 x 7 = 42.", None),
])
def test_non_alpha(tmp_path: Path, text: str, reason: str | None) -> None:
    assert verdict(NonAlphaFilter, {"fields": ["response"]}, tmp_path, response=text) == reason


@pytest.mark.parametrize(("text", "reason"), [
    ("Le gardien du phare passe l'hiver seul sur l'île et écrit chaque soir une ligne dans le journal.", "language"),
    ("Der Leuchtturmwärter verbringt den Winter allein auf der Insel und schreibt jeden Abend.", "language"),
    (GOOD, None),
])
def test_language(tmp_path: Path, text: str, reason: str | None) -> None:
    assert verdict(LanguageFilter, {"fields": ["response"]}, tmp_path, response=text) == reason
    assert verdict(LanguageFilter, {"fields": ["response"], "languages": ["en", "fr", "de"]}, tmp_path,
                   response=text) is None


def test_an_unknown_field_is_an_error_naming_the_parameter(tmp_path: Path) -> None:
    stage, _ = make(PlaceholderFilter, {"fields": ["respnse"]}, tmp_path)
    with pytest.raises(ConfigError, match=r"placeholder_filter\.fields.*no record has the field 'respnse'"):
        list(stage.run([Record("r1", {"response": GOOD}, {})]))


def test_missing_and_empty_values_are_kept(tmp_path: Path) -> None:
    stage, rejects = make(PlaceholderFilter, {"fields": ["instruction", "input"]}, tmp_path)
    records = [Record("a", {"instruction": "Write a story.", "input": ""}, {}), Record("b", {"instruction": "Go."}, {})]
    assert [r.id for r in stage.run(records)] == ["a", "b"] and not rejects
