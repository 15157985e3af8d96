"""Normalised text for duplicate detection: equal after normalisation means the same for training."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

_NON_WORD = re.compile(r"[\W_]+")
_ASCII_TABLE = bytes(ord(chr(c).lower()) if chr(c).isalnum() else 32 for c in range(128)) + bytes(range(128, 256))


def normalize(text: str) -> str:
    """Unicode NFKC, case-folded, punctuation and runs of whitespace turned into single spaces, trimmed."""
    if text.isascii():  # the same result, several times faster than the regex
        return b" ".join(text.encode().translate(_ASCII_TABLE).split()).decode()
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def field_text(fields: Mapping[str, Any], names: Sequence[str]) -> str:
    """The text of `names` joined by newlines (missing fields count as empty; non-strings as their JSON-ish str)."""
    parts = []
    for name in names:
        value = fields.get(name)
        parts.append("" if value is None else value if isinstance(value, str) else str(value))
    return "\n".join(parts)
