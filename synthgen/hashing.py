"""Content addressing: canonical JSON and stable hashes used for cache keys, record ids and seeds."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson


def canonical_json(value: Any) -> bytes:
    """Serialise `value` with sorted keys so equal content gives equal bytes."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def content_hash(value: Any, length: int = 64) -> str:
    """Hex sha256 of the canonical JSON of `value`, cut to `length` characters."""
    return hashlib.sha256(canonical_json(value)).hexdigest()[:length]


def stable_int(*parts: Any) -> int:
    """A 63-bit integer derived from `parts`: a seed that is the same on every machine and run."""
    return int(content_hash(list(parts), 16), 16) >> 1


def file_digest(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
