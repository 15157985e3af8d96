"""The run directory `outputs/<run>/`: layout, an exclusive lock, and writes that appear only when complete.

    recipe.yaml       the recipe as run (secrets redacted)
    cache.sqlite      request cache (WAL)
    backend/          the backend's own state, e.g. batches.jsonl (provider batch ids, to resume polling)
    checkpoints/      NN-stage.jsonl (+ .rejects.jsonl, .done) per finished stage
    dataset.jsonl     the records that came out of the last stage
    rejects.jsonl     every dropped record, with its stage and reason
    stats.json        counts per stage, requests, retries, cache hits, tokens, wall time
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml

from synthgen.errors import RunDirError
from synthgen.record import Record

_SECRET_NAME = re.compile(r"(?:^|_)(?:api_?key|token|secret|password|authorization)$", re.IGNORECASE)


class RunDir:
    """A run directory held under an exclusive lock for the life of the `with` block."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.cache_path = self.path / "cache.sqlite"
        self.backend_dir = self.path / "backend"
        self.dataset_path = self.path / "dataset.jsonl"
        self.rejects_path = self.path / "rejects.jsonl"
        self.stats_path = self.path / "stats.json"
        self.recipe_path = self.path / "recipe.yaml"
        self._lock: IO[bytes] | None = None

    def open(self, fresh: bool = False) -> RunDir:
        """Create and lock the directory; with `fresh`, empty it first."""
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            self._lock = (self.path / ".lock").open("wb")
        except OSError as exc:
            raise RunDirError(f"{self.path}: cannot create the run directory ({exc.strerror})") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise RunDirError(f"{self.path}: another synthgen run is using this directory; wait for it or use --out") from None
        if fresh:
            for child in self.path.iterdir():
                if child.name != ".lock":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            self.checkpoints.mkdir()
        return self

    def close(self) -> None:
        """Release the lock."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    def write_recipe(self, data: dict[str, Any]) -> None:
        """Freeze the recipe as run, with anything that looks like a secret redacted."""
        write_atomic(self.recipe_path, yaml.safe_dump(redact(data), sort_keys=False).encode())


class JsonlWriter:
    """Appends records to `<path>.tmp`; `commit` renames it into place, `discard` removes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(path.name + ".tmp")
        try:
            self._handle: IO[bytes] = self._tmp.open("wb")
        except OSError as exc:
            raise RunDirError(f"{self._tmp}: cannot write ({exc.strerror})") from None

    def write(self, record: Record) -> None:
        """Add one record."""
        self.write_line(record.to_json())

    def write_line(self, line: bytes) -> None:
        """Add one JSON line."""
        with self._or_discard():
            self._handle.write(line + b"\n")

    def commit(self) -> None:
        """Flush, sync and rename into place."""
        with self._or_discard():
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            os.replace(self._tmp, self.path)

    @contextmanager
    def _or_discard(self) -> Iterator[None]:
        """An OSError (disk full, ...) drops the temporary file and becomes a RunDirError naming the file."""
        try:
            yield
        except OSError as exc:
            self.discard()
            raise RunDirError(f"{self.path}: cannot write ({exc.strerror})") from None

    def discard(self) -> None:
        """Drop what was written."""
        try:
            self._handle.close()
        except OSError:
            pass  # the data is being thrown away; a failed flush changes nothing
        self._tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, so readers never see half of it."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunDirError(f"{path}: cannot write ({exc.strerror})") from None


def redact(value: Any) -> Any:
    """A copy of `value` with every entry named like a credential (api_key, token, secret...) redacted."""
    if isinstance(value, dict):
        return {
            k: "<redacted>" if _SECRET_NAME.search(str(k)) and v is not None else redact(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
