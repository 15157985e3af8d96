"""Request cache: finished completions stored in SQLite (WAL) by content key, written as each arrives.
On a network filesystem (a cluster's shared run directory) the database uses SQLite's rollback journal with full
syncs instead, since WAL's shared memory does not reach across hosts (`synthgen.filesystems`).

A re-run, or a run resumed after a crash, replays every finished request from here at no cost.
Only the completion is stored, never headers or credentials.

The key is sha256 of [backend identity, request key]:
- backend identity (`BackendConfig.identity`): the kind, its `options`, the simulator's settings for `sim`, and
  the base URL without credentials for HTTP backends; so an answer from one server is never served for another;
- request key (`ChatRequest.key`): model name, messages as rendered, sampling parameters (with the per-request
  seed, itself derived from the recipe seed, the stage's name and the record's id, never the stage's position),
  JSON schema, sample index and attempt.
Nothing else: concurrency, timeouts, retries, rate limits and the run directory do not change an answer.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from synthgen.backends.base import Backend, ChatRequest, Completion
from synthgen.errors import RunDirError
from synthgen.filesystems import is_network_filesystem
from synthgen.hashing import content_hash
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


LOCK_WAIT_S = 60.0  # how long opening or writing waits for another process's transaction (Ray workers share a file)


def connect(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """An autocommit SQLite connection in WAL mode (rollback journal on a network filesystem) with `schema` (one
    CREATE TABLE) applied, usable from any thread. A damaged, foreign or locked file raises RunDirError naming
    `what` (e.g. 'request cache') and the fix; the file is never deleted or changed. Several processes may share
    one file (the Ray engine's workers): opening and writing wait up to LOCK_WAIT_S for another's transaction
    before the file counts as locked."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=LOCK_WAIT_S)
    try:
        found = _tables(db)
        if found and found != _expected_tables(schema):
            shown = "; ".join(f"{name}({', '.join(columns)})" for name, columns in sorted(found.items()))
            raise RunDirError(f"{path}: not a synthgen {what} (its tables: {shown}); synthgen leaves it as it is: "
                              "move it elsewhere or choose another --out")
        shared = is_network_filesystem(path.parent)
        _set_journal_mode(db, "DELETE" if shared else "WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if shared else 'NORMAL'}")
        db.execute(schema)
        db.execute(f"PRAGMA busy_timeout={int(LOCK_WAIT_S * 1000)}")
    except sqlite3.OperationalError as exc:
        db.close()
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise RunDirError(f"{path}: {what} is unreadable ({exc})") from None
        raise RunDirError(f"{path}: the {what} is locked by another process ({exc}); the cache is intact: wait for "
                          "that process to finish or stop it, then run again") from None
    except sqlite3.DatabaseError as exc:
        db.close()
        raise RunDirError(f"{path}: {what} is unreadable ({exc}): the file is damaged or not a SQLite database. "
                          "synthgen does not delete it: move it aside (to keep it), or re-run with --fresh to "
                          "start over without it") from None
    return db


def _set_journal_mode(db: sqlite3.Connection, mode: str) -> None:
    """Switch the file to `mode` unless it is in it already. The switch needs the file to itself, and SQLite does
    not wait for that (no busy handler): when processes open a new file at once, it is retried for LOCK_WAIT_S."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).upper() != mode:
                db.execute(f"PRAGMA journal_mode={mode}")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _tables(db: sqlite3.Connection) -> dict[str, list[str]]:
    """Table name -> column names."""
    query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    names = [row[0] for row in db.execute(query)]
    return {name: [row[0] for row in db.execute("SELECT name FROM pragma_table_info(?)", (name,))] for name in names}


def _expected_tables(schema: str) -> dict[str, list[str]]:
    """The tables an empty database gets from `schema`."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute(schema)
        return _tables(db)
    finally:
        db.close()


class RequestCache:
    """Content-addressed store of completions; safe to share between threads of one process."""

    def __init__(self, path: str | Path, backend_identity: dict[str, Any]) -> None:
        self.path = Path(path)
        self.backend_identity = content_hash(backend_identity)
        self._db = connect(self.path, _SCHEMA, "request cache")
        self._lock = threading.Lock()

    def get(self, request: ChatRequest) -> Completion | None:
        """The stored completion for `request`, marked cached, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT text, finish_reason, prompt_tokens, completion_tokens FROM completions WHERE key = ?",
                (self.key(request),),
            ).fetchone()
        if row is None:
            return None
        return Completion(text=row[0], finish_reason=row[1], prompt_tokens=row[2], completion_tokens=row[3], cached=True)

    def put(self, request: ChatRequest, completion: Completion) -> None:
        """Store `completion` durably (its own transaction) before anyone uses it."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?)",
                (self.key(request), completion.text, completion.finish_reason,
                 completion.prompt_tokens, completion.completion_tokens),
            )

    def key(self, request: ChatRequest) -> str:
        """The cache key of `request` sent to this cache's backend (see the module docstring)."""
        return content_hash([self.backend_identity, request.key()])

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
        self.stats.count_tokens(request.model, completion.prompt_tokens, completion.completion_tokens)
        return completion

    async def aclose(self) -> None:
        """Close the wrapped backend."""
        await self.backend.aclose()
