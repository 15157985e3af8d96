"""Normalised text for duplicate detection: equal after normalisation means the same for training."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_NON_WORD = re.compile(r"[\W_]+")
_SPACE, _SEPARATOR = 32, 0
# ASCII letters lower-cased, other ASCII non-alphanumerics to a space; NUL kept (it separates texts in a batch)
_ASCII_TABLE = bytes(
    0 if c == 0 else ord(chr(c).lower()) if chr(c).isalnum() else _SPACE for c in range(128)
) + bytes(range(128, 256))


def normalize(text: str) -> str:
    """Unicode NFKC, case-folded, punctuation and runs of whitespace turned into single spaces, trimmed."""
    if text.isascii():  # the same result, several times faster than the regex
        return b" ".join(text.encode().translate(_ASCII_TABLE).replace(b"\0", b" ").split()).decode()
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def field_text(fields: Mapping[str, Any], names: Sequence[str]) -> str:
    """The text of `names` joined by newlines (missing fields count as empty; non-strings as their JSON-ish str)."""
    parts = []
    for name in names:
        value = fields.get(name)
        parts.append("" if value is None else value if isinstance(value, str) else str(value))
    return "\n".join(parts)


def normalize_batch(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`" ".join(normalize(t) for t in texts) + " "` as uint8, each text's end (the index of the space after
    it) and its word count, computed on the whole batch at once: per text only non-ASCII ones go through
    `normalize`; case, punctuation and space runs are handled by one translate and a few numpy masks."""
    prepared = [(text if text.isascii() else normalize(text)).replace("\0", " ") for text in texts]
    data = np.frombuffer(b"\0".join(t.encode() for t in prepared).translate(_ASCII_TABLE) + b"\0", dtype=np.uint8)
    space = data == _SPACE
    word = ~space & (data != _SEPARATOR)
    after_word = np.concatenate(([False], word[:-1]))
    compact = data[~space | after_word]  # each run of spaces cut to its first, none at a text's start
    trailing = (compact[:-1] == _SPACE) & (compact[1:] == _SEPARATOR)
    joined = compact[np.concatenate((~trailing, [True]))]  # ...and none at its end
    text_ends = np.flatnonzero(joined == _SEPARATOR)
    joined[text_ends] = _SPACE
    word_starts = np.flatnonzero((joined != _SPACE) & np.concatenate(([True], joined[:-1] == _SPACE)))
    words_per_text = np.bincount(np.searchsorted(text_ends, word_starts), minlength=len(texts))
    return joined, text_ends, words_per_text
