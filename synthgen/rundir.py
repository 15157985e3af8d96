"""The run directory `outputs/<run>/`: layout, an exclusive lock, and writes that appear only when complete.

    .synthgen-run     marker: this folder is a synthgen run directory (JSON: synthgen version, created)
    recipe.yaml       the recipe as run (secrets redacted); replaced only when a run succeeds
    cache.sqlite      request cache (WAL; + -wal, -shm)
    backend/          the backend's own state, e.g. batches.jsonl (provider batch ids, to resume polling)
    checkpoints/      NN-stage.jsonl.zst (+ .rejects.jsonl.zst, .done) per finished stage (see checkpoints.py);
                      recipe.yaml of the run in progress; state.json (requests, tokens, retries, wall time summed
                      over attempts so far)
    dataset.jsonl     the records that came out of the last stage
    rejects.jsonl     every dropped record, with its stage and reason
    stats.json        counts per stage, requests, retries, cache hits, tokens, wall time (summed over attempts)
    report.html       `synthgen report`
    <export>/         export folders, each marked by a .synthgen-export file
    *.tmp             files being written

Safety: synthgen writes only into a new or empty folder, one holding its marker, or a run directory of an
earlier version (it has checkpoints/ or cache.sqlite), and never into the working directory, the home folder
or a parent of either. `fresh` removes only the names above; any other file is left alone.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson
import pyarrow as pa
import yaml

from synthgen.errors import RunDirError
from synthgen.record import Record
from synthgen.stats import totals_of
from synthgen.version import __version__

_SECRET_NAME = re.compile(r"(?:^|_)(?:api_?key|token|secret|password|authorization)$", re.IGNORECASE)
RUN_MARKER = ".synthgen-run"
EXPORT_MARKER = ".synthgen-export"
OWN_NAMES = frozenset({  # what synthgen writes at the top of a run directory (besides export folders and .lock)
    RUN_MARKER, "recipe.yaml", "cache.sqlite", "cache.sqlite-wal", "cache.sqlite-shm", "cache.sqlite-journal",
    "backend", "checkpoints", "dataset.jsonl", "rejects.jsonl", "stats.json", "report.html",
})


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
        self.pending_recipe_path = self.checkpoints / "recipe.yaml"
        self.state_path = self.checkpoints / "state.json"
        self._lock: IO[bytes] | None = None

    def open(self, fresh: bool = False) -> RunDir:
        """Create (or adopt) and lock the directory; with `fresh`, first remove what synthgen wrote in it."""
        refuse_unsafe_folder(self.path)
        if not usable_as_run_dir(self.path):
            action = "empty it with --fresh" if fresh else "write into it"
            raise RunDirError(f"{self.path}: not a synthgen run directory (it holds other files and no {RUN_MARKER}); "
                              f"refusing to {action}: choose a new or empty folder with --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = (self.path / ".lock").open("wb")
        except OSError as exc:
            raise RunDirError(f"{self.path}: cannot create the run directory ({exc.strerror})") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise RunDirError(f"{self.path}: another synthgen run is using this directory; wait for it or use --out") from None
        try:
            if fresh:
                self._remove_own_files()
            self.checkpoints.mkdir(exist_ok=True)
            if not (self.path / RUN_MARKER).exists():
                marker = {"synthgen": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                write_atomic(self.path / RUN_MARKER, orjson.dumps(marker))
        except RunDirError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise write_error(self.path, exc) from None
        return self

    def _remove_own_files(self) -> None:
        """What `fresh` discards: the names synthgen writes, their temporaries, and folders marked as exports."""
        for child in self.path.iterdir():
            if is_own_name(child.name) and child.name not in (RUN_MARKER, ".lock"):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        exports = [Path(folder) for folder, _, files in os.walk(self.path) if EXPORT_MARKER in files]
        for folder in exports:
            if folder != self.path and folder.exists():
                shutil.rmtree(folder)

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
        """Freeze the recipe of the run in progress (`pending_recipe_path`), anything like a secret redacted."""
        write_atomic(self.pending_recipe_path, yaml.safe_dump(redact(data), sort_keys=False).encode())

    def commit_recipe(self) -> None:
        """Move the run's frozen recipe into place beside its dataset (once the run has succeeded)."""
        try:
            os.replace(self.pending_recipe_path, self.recipe_path)
        except OSError as exc:
            raise write_error(self.recipe_path, exc) from None

    def read_state(self) -> dict[str, Any]:
        """What earlier attempts saved (see `write_state`); for a run of an earlier version, the totals of its
        stats.json; empty if none."""
        try:
            if self.state_path.exists() or not self.stats_path.exists():
                data = orjson.loads(self.state_path.read_bytes())
            else:
                data = {"totals": totals_of(orjson.loads(self.stats_path.read_bytes()))}
        except (OSError, orjson.JSONDecodeError, AttributeError):
            return {}  # no earlier attempt, or one killed while saving: start the sums afresh
        return data if isinstance(data, dict) else {}

    def write_state(self, totals: dict[str, Any], finished: str | None = None) -> None:
        """Save the counters summed over the attempts so far (RunStats.totals) and, when this attempt
        succeeded, the fingerprint of the finished run (a re-run of it has nothing to redo)."""
        write_atomic(self.state_path, orjson.dumps({"totals": totals, "finished": finished}))


def usable_as_run_dir(path: Path) -> bool:
    """Whether synthgen may write into `path`: absent, empty, marked, or a run directory of an earlier version."""
    if not path.is_dir():
        return True  # absent (created), or a file (creating it fails with its own message)
    return ((path / RUN_MARKER).is_file() or not any(path.iterdir()) or (path / "checkpoints").is_dir()
            or (path / "cache.sqlite").is_file())


def refuse_unsafe_folder(path: Path) -> None:
    """Refuse the working directory, the home folder, and any parent of them (`/` included) as an output folder."""
    target = path.expanduser().resolve()
    for place, name in ((Path.cwd().resolve(), "the working directory"), (Path.home().resolve(), "the home folder")):
        if target == place or target in place.parents:
            what = name if target == place else f"a parent of {name}"
            raise RunDirError(f"{path}: is {what}; refusing to write synthgen outputs there: choose a folder of its own")


def refuse_run_files(run_dir: Path, out: Path) -> None:
    """Refuse an export folder that is the run directory, holds it, or is one of the run's own files or folders."""
    root, target = run_dir.resolve(), out.resolve()
    if target == root or target in root.parents:
        raise RunDirError(f"{out}: is the run directory or holds it; export to a folder of its own, e.g. {run_dir / 'export'}")
    if root in target.parents and is_own_name(target.relative_to(root).parts[0]):
        raise RunDirError(f"{out}: is where the run keeps its own {target.relative_to(root).parts[0]}; "
                          f"export to a folder of its own, e.g. {run_dir / 'export'}")


def is_own_name(name: str) -> bool:
    """Whether `name`, at the top of a run directory, is something synthgen keeps there (or its temporary)."""
    return name.removesuffix(".tmp") in OWN_NAMES or name == ".lock"


def write_error(path: Path, exc: OSError, action: str = "cannot write") -> RunDirError:
    """The error for a failed write of `path`; a full disk says how to go on without losing anything."""
    message = f"{path}: {action} ({exc.strerror or exc})"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        message += "; free space and re-run the same command to resume: nothing is lost"
    return RunDirError(message)


class JsonlWriter:
    """Appends records to `<path>.tmp`; `commit` renames it into place, `discard` removes it. A path ending in
    `.zst` is written zstd-compressed (one frame per ~1 MB of lines; `read_lines` reads either)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(path.name + ".tmp")
        self._codec = pa.Codec("zstd") if path.suffix == ".zst" else None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        try:
            self._handle: IO[bytes] = self._tmp.open("wb")
        except OSError as exc:
            raise write_error(self._tmp, exc) from None

    def write(self, record: Record) -> None:
        """Add one record."""
        self.write_line(record.to_json())

    def write_line(self, line: bytes) -> None:
        """Add one JSON line."""
        if self._codec is None:
            with self._or_discard():
                self._handle.write(line + b"\n")
            return
        self._pending.append(line)
        self._pending_bytes += len(line) + 1
        if self._pending_bytes >= _FRAME_BYTES:
            self._flush_frame()

    def _flush_frame(self) -> None:
        if self._codec is not None and self._pending:
            frame = self._codec.compress(b"\n".join(self._pending) + b"\n", asbytes=True)
            self._pending, self._pending_bytes = [], 0
            with self._or_discard():
                self._handle.write(frame)

    def commit(self) -> None:
        """Flush, sync and rename into place."""
        self._flush_frame()
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
            raise write_error(self.path, exc) from None

    def discard(self) -> None:
        """Drop what was written."""
        self._pending = []
        try:
            self._handle.close()
        except OSError:
            pass  # the data is being thrown away; a failed flush changes nothing
        self._tmp.unlink(missing_ok=True)


_FRAME_BYTES = 1 << 20  # uncompressed bytes per zstd frame: large enough for the ratio, small enough to hold


def read_lines(path: Path) -> Iterator[bytes]:
    """The lines (without newlines) of a JSONL file a `JsonlWriter` wrote, zstd-compressed (`.zst`) or plain."""
    if path.suffix != ".zst":
        with path.open("rb") as handle:
            for line in handle:
                yield line.rstrip(b"\n")
        return
    with pa.input_stream(str(path), compression="zstd") as stream:
        rest = b""
        while chunk := stream.read(_FRAME_BYTES):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines
        if rest:
            yield rest


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
        raise write_error(path, exc) from None


def redact(value: Any) -> Any:
    """A copy of `value` with every entry named like a credential (api_key, token, secret...) redacted."""
    if isinstance(value, dict):
        return {
            k: "<redacted>" if _SECRET_NAME.search(str(k)) and v is not None else redact(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):  # credentials inside URLs (base_url, the recorded command line)
        return _URL_QUERY_SECRET.sub(r"\1<redacted>", _URL_USERINFO.sub(r"\1<redacted>@", value))
    return value


_URL_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@", re.IGNORECASE)  # user:password@
_URL_QUERY_SECRET = re.compile(r"([?&](?:api_?key|key|token|access_token|secret|password|sig)=)[^&\s#]+", re.IGNORECASE)
