"""Chunk spans over a document's text by tokens, paragraphs or sections, and what each span points back to.

Every chunk is a (start, end) slice of the document's text, so `text[start:end]` is the chunk and a generated
row can cite the exact passage, its page and its heading path. `sections` splits at every heading (a section
longer than `max_tokens` is cut like `tokens` would cut it, at paragraphs, lines, sentences); `paragraphs` makes
one chunk per paragraph (cutting long ones); `tokens` packs paragraphs, lines and sentences greedily up to
`max_tokens` (synthgen.recipes.chunking, the WRAP chunker). With `min_tokens`, a chunk under it is merged into
the previous chunk, else the next, when the merged span stays within `max_tokens`; one that fits nowhere is
dropped (the stage rejects it as `short_chunk`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any, Literal

from synthgen.recipes.chunking import chunk_spans, paragraph_spans, trim_span
from synthgen.tokens import count_tokens

Method = Literal["tokens", "sections", "paragraphs"]
Span = tuple[int, int]


def split_document(text: str, method: Method, max_tokens: int, overlap: int = 0,
                   sections: Sequence[dict[str, Any]] = ()) -> list[Span]:
    """The chunk spans of `text` by `method` (see the module docstring), in order."""
    if method == "tokens":
        return chunk_spans(text, max_tokens, overlap)
    if method == "paragraphs":
        parts = paragraph_spans(text)
    else:
        starts = sorted({0, *(int(section["start"]) for section in sections)})
        parts = [(start, end) for start, end in zip(starts, [*starts[1:], len(text)], strict=True) if text[start:end].strip()]
    counts = count_tokens([text[start:end] for start, end in parts])
    spans: list[Span] = []
    for (start, end), tokens in zip(parts, counts, strict=True):
        if tokens <= max_tokens:
            spans.append(trim_span(text, start, end))
        else:
            spans += [(start + a, start + b) for a, b in chunk_spans(text[start:end], max_tokens, overlap)]
    return [span for span in spans if span[1] > span[0]]


def merge_short(text: str, spans: list[Span], min_tokens: int, max_tokens: int) -> tuple[list[Span], list[Span]]:
    """(kept, dropped): spans under `min_tokens` merged into the previous, else the next span when that fits."""
    if min_tokens <= 0 or not spans:
        return spans, []
    counts = count_tokens([text[start:end] for start, end in spans])
    kept: list[list[int]] = []  # [start, end, tokens]
    dropped: list[Span] = []
    pending: list[int] | None = None  # a short span waiting to join the next one
    for (start, end), tokens in zip(spans, counts, strict=True):
        if pending is not None:
            merged = count_tokens([text[pending[0]:end]])[0]
            if merged <= max_tokens:
                start, tokens, pending = pending[0], merged, None
            else:
                dropped.append((pending[0], pending[1]))
                pending = None
        if tokens >= min_tokens:
            kept.append([start, end, tokens])
            continue
        merged = count_tokens([text[kept[-1][0]:end]])[0] if kept else max_tokens + 1
        if merged <= max_tokens:
            kept[-1][1:] = [end, merged]
        else:
            pending = [start, end, tokens]
    if pending is not None:
        dropped.append((pending[0], pending[1]))
    return [(start, end) for start, end, _ in kept], dropped


def page_at(pages: Sequence[dict[str, Any]], position: int) -> int | None:
    """The number of the page holding `position` (the last page starting at or before it), None without pages."""
    index = bisect_right([int(page["start"]) for page in pages], position) - 1
    return int(pages[index]["page"]) if index >= 0 else None


def section_path(sections: Sequence[dict[str, Any]], position: int) -> str | None:
    """The heading path of the sections holding `position` ("Intro > Setup"), None outside every section."""
    holding = sorted((s for s in sections if s["start"] <= position < s["end"]), key=lambda s: (s["start"], s["level"]))
    return " > ".join(str(s["heading"]) for s in holding) or None

