"""Record: the one unit of data that flows between stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from synthgen.hashing import content_hash


@dataclass(slots=True)
class Record:
    """`id` is a stable content hash; `fields` is the data; `meta` is provenance (never the data itself)."""

    id: str
    fields: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """One JSONL line (without the newline)."""
        return orjson.dumps({"id": self.id, "fields": self.fields, "meta": self.meta})

    @classmethod
    def from_json(cls, line: bytes | str) -> Record:
        """Inverse of `to_json`."""
        data = orjson.loads(line)
        return cls(id=data["id"], fields=data["fields"], meta=data["meta"])


def make_record_id(*parts: Any) -> str:
    """A 16-hex-digit id derived from what made the record (parents, request key, index)."""
    return content_hash(list(parts), 16)
