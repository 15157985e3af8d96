"""On-disk embedding cache: vectors stored in SQLite by sha256 of (model, text), so re-runs and later stages
never encode the same text twice."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synthgen.cache import connect
from synthgen.hashing import content_hash

_CHUNK = 900  # SQLite's default limit on parameters per statement is 999


class EmbeddingCache:
    """float32 vectors by content key; safe to share between threads of one process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = connect(self.path, "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)",
                           "embedding cache")
        self._lock = threading.Lock()

    @staticmethod
    def keys(model: str, texts: Sequence[str]) -> list[str]:
        """The cache key of each text under `model`."""
        return [content_hash([model, text], 32) for text in texts]

    def fill(self, rows: dict[str, list[int]], out: np.ndarray) -> set[str]:
        """Write each stored vector among `rows`' keys into `out` at its rows; the keys found."""
        found: set[str] = set()
        keys = list(rows)
        with self._lock:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, blob in self._db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk):
                    out[rows[key]] = np.frombuffer(blob, dtype=np.float32)
                    found.add(key)
        return found

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store `vectors` (one row per key) in one transaction."""
        blobs = (np.ascontiguousarray(vector, dtype=np.float32).tobytes() for vector in vectors)
        rows = list(zip(keys, blobs, strict=True))
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
