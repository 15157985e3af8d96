"""Text statistics behind the heuristic quality filters: plain functions over strings, no stage, no I/O.

The repetition measures follow the Gopher rules (Rae et al. 2021, "Scaling Language Models", Table A1). As in
RedPajama-V2's `rps_doc_frac_chars_top_{2,3,4}gram` / `dup_{5..10}gram`, n-gram character fractions count word
characters, and a top n-gram counts only when it occurs at least twice: Gopher was tuned on web pages of 50+
words, and without that guard every answer of a dozen words would fail the top-2-gram rule on its one 2-gram.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import cache
from typing import Any

_WORD = re.compile(r"\w+")
_PARAGRAPHS = re.compile(r"\n\s*\n")
_SPACE = re.compile(r"\s")
_CODE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_SYMBOL = re.compile(r"[^\w\s]|_")
_PLACEHOLDER_WORDS = ("task|input|instruction|topic|name|text|question|answer|output|response|example|placeholder"
                      "|type|language|audience|context|description|subject|details?")
_SLOT = r"[A-Za-z]{2,}[ _][\w ,'/-]*[A-Za-z]"  # words joined by spaces or underscores: the task, instruction_type
_PLACEHOLDERS = re.compile(
    r"\{\{|\{%"  # an unrendered (or half-written) Jinja expression or tag
    r"|\{[a-z_][a-z0-9_]*\}"  # a str.format field: {placeholder}
    rf"|<{_SLOT}>|\[{_SLOT}\](?!\()"  # <the task>, [instruction_type], [Your Name] (not a Markdown link)
    r"|\A\s*<[A-Za-z][^<>\n]*(?:\n|\Z)"  # a text opening with a '<' never closed: "<The task is to ..."
    rf"|[<\[](?:{_PLACEHOLDER_WORDS})[>\]](?!\()",  # one-word ones: <input>, [topic]
    re.IGNORECASE,
)


def without_code(text: str) -> str:
    """`text` with its fenced code blocks (```...```, an unclosed one to the end) removed: rules tuned on prose,
    such as Gopher's repetition, misread code, where names repeat by design."""
    return _CODE.sub("\n", text) if "```" in text else text


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits and underscores)."""
    return _WORD.findall(text.lower())


def find_placeholder(text: str) -> str | None:
    """The first unrendered or invented placeholder in `text` (`<the task>`, `[instruction_type]`, `{{ x }}`, ...)."""
    match = _PLACEHOLDERS.search(text)
    return match.group(0) if match else None


def _duplicates(parts: Sequence[str]) -> tuple[int, int]:
    """(how many of `parts` repeat an earlier one, their characters)."""
    seen: set[str] = set()
    count = chars = 0
    for part in parts:
        if part in seen:
            count += 1
            chars += len(part)
        else:
            seen.add(part)
    return count, chars


def repetition(text: str, duplicate_ngrams: Sequence[int], top_ngrams: Sequence[int]) -> dict[str, float]:
    """Gopher's repetition measures of `text`: `dup_lines`, `dup_paragraphs` (share of lines/paragraphs that repeat
    an earlier one), `dup_line_chars`, `dup_paragraph_chars` (their share of characters), `top_<n>gram` (share of
    word characters in the most frequent n-gram's occurrences) and `dup_<n>gram` (share of word characters inside
    n-grams that occur more than once)."""
    measures: dict[str, float] = {}
    total = max(len(text), 1)
    for name, parts in (("line", [p for p in text.split("\n") if p.strip()]),
                        ("paragraph", [p for p in _PARAGRAPHS.split(text.strip()) if p.strip()])):
        count, chars = _duplicates(parts)
        measures[f"dup_{name}s"] = count / max(len(parts), 1)
        measures[f"dup_{name}_chars"] = chars / total
    tokens = words(text)
    lengths = [len(token) for token in tokens]
    word_chars = max(sum(lengths), 1)
    for n in top_ngrams:
        grams = Counter(zip(*(tokens[i:] for i in range(n)), strict=False))
        top, freq = grams.most_common(1)[0] if grams else ((), 0)
        measures[f"top_{n}gram"] = sum(len(word) for word in top) * freq / word_chars if freq > 1 else 0.0
    share = 1.0
    for n in sorted(duplicate_ngrams):  # no repeated n-gram: no repeated longer one either (the usual case)
        share = _duplicated_ngram_chars(tokens, lengths, n) / word_chars if share else 0.0
        measures[f"dup_{n}gram"] = share
    return measures


def _duplicated_ngram_chars(tokens: list[str], lengths: list[int], n: int) -> int:
    """Characters of the words covered by n-grams that occur more than once (each word counted once)."""
    grams = list(zip(*(tokens[i:] for i in range(n)), strict=False))
    counts = Counter(grams)
    covered = bytearray(len(tokens))
    for start, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[start:start + n] = b"\x01" * n
    return sum(length for length, flag in zip(lengths, covered, strict=True) if flag)


def containment(text: str, source: str, n: int = 2) -> float:
    """Share of `text`'s distinct word n-grams that also occur in `source` (1.0: every phrase is copied)."""
    mine, theirs = words(text), words(source)
    grams = set(zip(*(mine[i:] for i in range(n)), strict=False))
    if not grams:
        return 0.0
    return len(grams & set(zip(*(theirs[i:] for i in range(n)), strict=False))) / len(grams)


def non_alpha_share(text: str) -> float:
    """Share of the non-space characters that are neither letters nor digits (punctuation, symbols, markup)."""
    visible = len(text) - len(_SPACE.findall(text))
    return len(_SYMBOL.findall(text)) / visible if visible else 0.0


LANGID_CHARS = 400


@cache
def _identifier() -> Any:
    """py3langid's model (97 languages, shipped inside its wheel: nothing is downloaded), loaded once."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the language `text` is most likely written in, judged on its first
    LANGID_CHARS characters (the cost grows with the length; a few sentences are plenty to tell a language)."""
    code, probability = _identifier().classify(text[:LANGID_CHARS])
    return str(code), float(probability)
