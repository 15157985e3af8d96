"""Cutting text into chunks of at most N tokens at the most natural boundary that fits, for any script.

A text is cut at paragraphs (blank lines) first; a paragraph that does not fit is cut at its lines when it is
line-structured (code, tables, lists: at least half of its lines start with indentation or a list, table,
heading, quote or bracket marker), else at sentences (`. ! ?` followed by whitespace, CJK `。！？` with or
without it, Devanagari `।`, Arabic `؟`), then at any whitespace (`\\s`, so NBSP and ideographic spaces
count), then between characters (never before a combining mark). Hard-wrapped prose (single newlines inside a
paragraph) is therefore cut only where a sentence ends. The pieces are packed greedily, in order, and every
chunk is a slice of the text: newlines and indentation inside a chunk are kept as they were.

Tokens are counted by `synthgen.tokens.count_tokens` (WordPiece, with unknown text not collapsed).
"""

from __future__ import annotations

import re
import unicodedata
from itertools import pairwise

from synthgen.tokens import count_tokens

_PARAGRAPH = re.compile(r"\n(?:[^\S\n]*\n)+")
_LINE = re.compile(r"\n")
_SENTENCE = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|[。！？｡︒]+[」』）〉》】”’\"')]*\s*|[।॥؟۔]\s*")
_WHITESPACE = re.compile(r"\s+")
_LEADING_BLANK_LINES = re.compile(r"(?:[^\S\n]*\n)+")
_STRUCTURED_LINE = re.compile(r"\s|[-*+•·–]\s|\d{1,3}[.)]\s|[|#>`{}\[\]<]")
Span = tuple[int, int, int]  # start, end, tokens


def chunk_text(text: str, max_tokens: int) -> list[str]:
    """`text` cut into chunks of at most `max_tokens` (see the module docstring), in order, none empty."""
    return [text[start:end] for start, end in chunk_spans(text, max_tokens)]


def chunk_spans(text: str, max_tokens: int, overlap: int = 0) -> list[tuple[int, int]]:
    """The (start, end) character spans of `chunk_text`'s chunks in `text`. With `overlap` tokens, pieces are
    packed to `max_tokens - overlap` and each chunk after the first also starts up to `overlap` tokens (whole
    words) before where its piece starts, so consecutive chunks share that text and each stays within the cap."""
    if not text.strip():
        return []
    if not 0 <= overlap < max_tokens:
        raise ValueError(f"overlap must be at least 0 and under max_tokens ({max_tokens}), got {overlap}")
    budget = max_tokens - overlap
    pieces = _fit(text, 0, len(text), count_tokens([text])[0], 0, budget)
    groups: list[list[Span]] = []
    size = 0
    for piece in pieces:
        if groups and size + piece[2] <= budget:
            groups[-1].append(piece)
            size += piece[2]
        else:
            groups.append([piece])
            size = piece[2]
    spans: list[tuple[int, int]] = []
    for group in groups:  # WordPiece is additive across the cuts; a cut inside a word may not be: check
        joined = trim_span(text, group[0][0], group[-1][1])
        if len(group) > 1 and count_tokens([text[joined[0]:joined[1]]])[0] > budget:
            spans += [trim_span(text, start, end) for start, end, _ in group]
        else:
            spans.append(joined)
    spans = [(start, end) for start, end in spans if end > start]
    if overlap:
        spans = [spans[0], *((_reach_back(text, prev[0], start, overlap), end) for prev, (start, end) in pairwise(spans))]
    return spans


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) spans of `text`'s paragraphs (parts between blank lines), trimmed, none empty."""
    bounds = pairwise([0, *(match.end() for match in _PARAGRAPH.finditer(text)), len(text)])
    return [span for span in (trim_span(text, start, end) for start, end in bounds) if span[1] > span[0]]


def trim_span(text: str, start: int, end: int) -> tuple[int, int]:
    """The span of text[start:end] without trailing whitespace and leading blank lines (a first line's indentation stays)."""
    end = start + len(text[start:end].rstrip())
    lead = _LEADING_BLANK_LINES.match(text, start, end)
    return (lead.end() if lead else start), end


def _reach_back(text: str, floor: int, start: int, overlap: int) -> int:
    """The earliest word start in [floor, start] from which text up to `start` holds at most `overlap` tokens."""
    starts = [match.end() for match in _WHITESPACE.finditer(text, floor, start) if match.end() < start]
    low, high = 0, len(starts)  # counts fall as the start moves right: binary search for the first that fits
    while low < high:
        middle = (low + high) // 2
        if count_tokens([text[starts[middle]:start]])[0] <= overlap:
            high = middle
        else:
            low = middle + 1
    return starts[low] if low < len(starts) else start


def _fit(text: str, start: int, end: int, tokens: int, level: int, max_tokens: int) -> list[Span]:
    """Spans covering text[start:end], each of at most `max_tokens`, cut at the coarsest boundary from `level` on."""
    if tokens <= max_tokens:
        return [(start, end, tokens)]
    for depth in range(level, 4):
        cuts = _cuts(text, start, end, depth)
        if cuts:
            break
    else:
        return _by_characters(text, start, end, tokens, max_tokens)
    bounds = list(pairwise([start, *cuts, end]))
    counts = count_tokens([text[a:b] for a, b in bounds])
    return [span for (a, b), n in zip(bounds, counts, strict=True) for span in _fit(text, a, b, n, depth + 1, max_tokens)]


def _cuts(text: str, start: int, end: int, depth: int) -> list[int]:
    """Positions strictly inside (start, end) where a boundary of kind `depth` ends."""
    if depth == 1 and not _is_structured(text[start:end]):
        return []
    pattern = (_PARAGRAPH, _LINE, _SENTENCE, _WHITESPACE)[depth]
    return [match.end() for match in pattern.finditer(text, start, end) if start < match.end() < end]


def _is_structured(block: str) -> bool:
    """Whether at least half of the block's lines are code, table rows or list items (see the module docstring)."""
    lines = [line for line in block.split("\n") if line.strip()]
    return len(lines) > 1 and 2 * sum(bool(_STRUCTURED_LINE.match(line)) for line in lines) >= len(lines)


def _by_characters(text: str, start: int, end: int, tokens: int, max_tokens: int) -> list[Span]:
    """text[start:end] (no boundary inside) cut every few characters, never before a combining mark."""
    step = max(1, (end - start) * max_tokens // (tokens + 1))
    while True:
        cuts: list[int] = []
        for cut in range(start + step, end, step):
            while cut < end and unicodedata.category(text[cut]).startswith("M"):
                cut += 1
            if cut < end and (not cuts or cut > cuts[-1]):
                cuts.append(cut)
        bounds = list(pairwise([start, *cuts, end]))
        counts = count_tokens([text[a:b] for a, b in bounds])
        if step == 1 or max(counts) <= max_tokens:
            return [(a, b, n) for (a, b), n in zip(bounds, counts, strict=True)]
        step = max(1, step // 2)
