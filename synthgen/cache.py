"""Request cache: finished completions stored in SQLite (WAL) by content key, written as each arrives.

A re-run, or a run resumed after a crash, replays every finished request from here at no cost.
Only the completion is stored, never headers or credentials.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from synthgen.backends.base import Backend, ChatRequest, Completion
from synthgen.errors import RunDirError
from synthgen.stats import RunStats

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL
)
"""


def connect(path: Path, schema: str, failure: str) -> sqlite3.Connection:
    """An autocommit SQLite connection in WAL mode with `schema` applied, usable from any thread; an
    unreadable file raises RunDirError with `failure` (formatted with {error}). Several processes may share one
    file (the Ray engine's workers): a writer waits up to 60 s for another's transaction."""
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(schema)
    except sqlite3.DatabaseError as exc:
        raise RunDirError(f"{path}: " + failure.format(error=exc)) from None
    return db


class RequestCache:
    """Content-addressed store of completions; safe to share between threads of one process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = connect(self.path, _SCHEMA, "request cache is unreadable ({error}); delete it or use --fresh")
        self._lock = threading.Lock()

    def get(self, request: ChatRequest) -> Completion | None:
        """The stored completion for `request`, marked cached, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT text, finish_reason, prompt_tokens, completion_tokens FROM completions WHERE key = ?",
                (request.key(),),
            ).fetchone()
        if row is None:
            return None
        return Completion(text=row[0], finish_reason=row[1], prompt_tokens=row[2], completion_tokens=row[3], cached=True)

    def put(self, request: ChatRequest, completion: Completion) -> None:
        """Store `completion` durably (its own transaction) before anyone uses it."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?)",
                (request.key(), completion.text, completion.finish_reason,
                 completion.prompt_tokens, completion.completion_tokens),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


class CachedBackend:
    """Wraps a backend: answers from the cache when it can, stores every new completion as it arrives, and
    counts the tokens of fresh ones."""

    def __init__(self, backend: Backend, cache: RequestCache, stats: RunStats) -> None:
        self.backend, self.cache, self.stats = backend, cache, stats

    async def complete(self, request: ChatRequest) -> Completion:
        """The cached completion, or a fresh one that is stored before it is returned."""
        hit = self.cache.get(request)
        if hit is not None:
            self.stats.cache_hits += 1
            return hit
        completion = await self.backend.complete(request)
        self.cache.put(request, completion)
        self.stats.prompt_tokens += completion.prompt_tokens
        self.stats.completion_tokens += completion.completion_tokens
        return completion

    async def aclose(self) -> None:
        """Close the wrapped backend."""
        await self.backend.aclose()
