"""What `synthgen view` reads from a run directory, without holding its records in memory.

Each browsable set (dataset.jsonl, rejects.jsonl, each finished stage's checkpoint) gets a `Listing`, built by one
pass the first time it is needed: per record its id (as a uint64), where it lies (the byte offset of its line in a
JSONL file, its position in a checkpoint) and the few small columns filters need (length, taxonomy leaf, reject
reason, judge score, parents), as numpy arrays, about 40 bytes a record. Paging and filtering are array work;
opening one record is a seek (a JSONL file) or a stream up to its position (a compressed checkpoint, which cannot
seek); full-text search reads lazily and stops after a page of hits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from synthgen.checkpoints import read_checkpoint
from synthgen.errors import InputError, RunDirError
from synthgen.hashing import content_hash
from synthgen.report_data import RunData, record_text

Row = dict[str, Any]
FILES = ("dataset", "rejects")


def id_key(record_id: str) -> int:
    """A record id as a uint64: synthgen's 16-hex-digit ids as they are, any other id through its hash."""
    text = record_id if len(record_id) == 16 else content_hash(record_id, 16)
    try:
        return int(text, 16)
    except ValueError:
        return int(content_hash(record_id, 16), 16)


def judge_score(row: Row) -> float:
    """The first judge's mean score of a record (meta.scores, see stages/judge.py), NaN if none judged it."""
    scores = (row.get("meta") or {}).get("scores") or {}
    for verdict in scores.values():
        if isinstance(verdict, dict) and isinstance(verdict.get("mean"), int | float):
            return float(verdict["mean"])
    return float("nan")


@dataclass
class Query:
    """A filter over one listing; `text` is matched, case-folded, against the record's id and string fields."""

    text: str = ""
    leaf: str = ""
    reason: str = ""
    score_min: float | None = None
    score_max: float | None = None
    length_min: int | None = None
    length_max: int | None = None

    def describe(self) -> dict[str, Any]:
        """The filter as review.jsonl records it (the set parts only)."""
        return {key: value for key, value in vars(self).items() if value not in ("", None)}


class Listing:
    """One browsable set of records: the columns of `Listing` (see the module docstring) and how to read a row."""

    def __init__(self, name: str, rows: Iterator[tuple[int, Row]], run: RunData) -> None:
        self.name = name
        ids, where, lengths, scores, parents, parent_rows = [], [], [], [], [], []
        leaves, reasons = _Codes(), _Codes()
        leaf_codes, reason_codes = [], []
        for index, (place, row) in enumerate(rows):
            ids.append(id_key(str(row["id"])))
            where.append(place)
            lengths.append(len(record_text(row.get("fields") or {})))
            scores.append(judge_score(row))
            leaf_codes.append(leaves.code(run.leaf(row) or ""))
            reason_codes.append(reasons.code(str(row.get("reason") or "")))
            for parent in (row.get("meta") or {}).get("parents") or []:
                parents.append(id_key(str(parent)))
                parent_rows.append(index)
        self.ids = np.array(ids, dtype=np.uint64)
        self.where = np.array(where, dtype=np.int64)
        self.lengths = np.array(lengths, dtype=np.int64)
        self.scores = np.array(scores, dtype=np.float32)
        self.leaf = np.array(leaf_codes, dtype=np.int32)
        self.reason = np.array(reason_codes, dtype=np.int32)
        self.parents = np.array(parents, dtype=np.uint64)
        self.parent_rows = np.array(parent_rows, dtype=np.int64)
        self.leaves, self.reasons = leaves.names, reasons.names
        self._order = np.argsort(self.ids, kind="stable")

    def __len__(self) -> int:
        return len(self.ids)

    def row_of(self, record_id: str) -> int | None:
        """The row of `record_id` in this listing, if it is there."""
        key = np.uint64(id_key(record_id))
        slot = int(np.searchsorted(self.ids, key, sorter=self._order))
        if slot < len(self.ids) and self.ids[self._order[slot]] == key:
            return int(self._order[slot])
        return None

    def children_rows(self, record_id: str) -> list[int]:
        """Rows whose meta.parents name `record_id`."""
        return sorted(set(self.parent_rows[self.parents == np.uint64(id_key(record_id))].tolist()))

    def mask(self, query: Query) -> np.ndarray:
        """Rows passing the column filters of `query` (not its text)."""
        keep = np.ones(len(self), dtype=bool)
        if query.leaf:
            keep &= self.leaf == (self.leaves.index(query.leaf) if query.leaf in self.leaves else -1)
        if query.reason:
            keep &= self.reason == (self.reasons.index(query.reason) if query.reason in self.reasons else -1)
        if query.score_min is not None:
            keep &= self.scores >= query.score_min
        if query.score_max is not None:
            keep &= self.scores <= query.score_max
        if query.length_min is not None:
            keep &= self.lengths >= query.length_min
        if query.length_max is not None:
            keep &= self.lengths <= query.length_max
        return keep


class _Codes:
    """Small integer codes for repeated strings (leaves, reasons)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._codes: dict[str, int] = {}

    def code(self, name: str) -> int:
        if name not in self._codes:
            self._codes[name] = len(self.names)
            self.names.append(name)
        return self._codes[name]


class RunStore:
    """A run directory opened for browsing: its listings (built on first use) and row reads."""

    def __init__(self, path: Path) -> None:
        self.run = RunData(path)
        self.path = path
        self.checkpoints = path / "checkpoints"
        self.labels = sorted(done.stem for done in self.checkpoints.glob("*.done")) if self.checkpoints.is_dir() else []
        self._listings: dict[str, Listing] = {}

    @cached_property
    def figures(self) -> dict[str, str]:
        """The report's run-level sections (report.run_figures), made once: the run does not change while browsed."""
        from synthgen.report import run_figures  # matplotlib: imported when the overview is first asked for

        return run_figures(self.run)

    @property
    def sources(self) -> list[str]:
        """The browsable sets: dataset, rejects, then each finished stage's output."""
        return [*(name for name in FILES if (self.path / f"{name}.jsonl").exists()), *self.labels]

    def listing(self, source: str) -> Listing:
        """The listing of `source` (one of `sources`), built by one pass the first time."""
        if source not in self.sources:
            raise RunDirError(f"{self.path}: no record set {source!r}; there are: {', '.join(self.sources)}")
        if source not in self._listings:
            rows = self._file_rows(source) if source in FILES else enumerate(self._checkpoint_rows(source))
            self._listings[source] = Listing(source, rows, self.run)
        return self._listings[source]

    def read(self, source: str, row: int) -> Row:
        """One record (a rejects row keeps its stage, reason and detail) of `source` by row."""
        place = int(self.listing(source).where[row])
        if source in FILES:
            path = self.path / f"{source}.jsonl"
            with path.open("rb") as handle:
                handle.seek(place)
                return _parse(handle.readline(), path, None)
        return next(islice(self._checkpoint_rows(source), place, None))

    def find(self, record_id: str) -> tuple[str, int] | None:
        """Where a record can be read: the dataset, else the latest checkpoint holding it, else the rejects."""
        for source in ("dataset", *reversed(self.labels), "rejects"):
            if source in self.sources and (row := self.listing(source).row_of(record_id)) is not None:
                return source, row
        return None

    def search(self, source: str, query: Query, offset: int, size: int) -> tuple[list[tuple[int, Row]], bool]:
        """Rows `offset`..`offset + size` of the matches of `query` in `source`, and whether more follow."""
        listing = self.listing(source)
        rows = np.flatnonzero(listing.mask(query))
        if not query.text:
            return list(self._scan(source, rows[offset:offset + size])), len(rows) > offset + size
        hits: list[tuple[int, Row]] = []
        for row, record in self._scan(source, rows):
            if _matches(record, query.text):
                hits.append((row, record))
                if len(hits) > offset + size:
                    return hits[offset:offset + size], True
        return hits[offset:], False

    def matching_ids(self, source: str, query: Query) -> list[str]:
        """The ids of every match of `query` in `source` (for a decision about a whole filter result)."""
        rows = np.flatnonzero(self.listing(source).mask(query))
        return [str(record["id"]) for _, record in self._scan(source, rows) if not query.text or _matches(record, query.text)]

    def _scan(self, source: str, rows: np.ndarray) -> Iterator[tuple[int, Row]]:
        """The records of `rows` (ascending) in one sequential read."""
        if source in FILES:
            path, where = self.path / f"{source}.jsonl", self.listing(source).where
            with path.open("rb") as handle:
                for row in rows.tolist():
                    handle.seek(int(where[row]))
                    yield row, _parse(handle.readline(), path, None)
            return
        wanted = set(rows.tolist())
        last = max(wanted, default=-1)
        for row, record in enumerate(islice(self._checkpoint_rows(source), last + 1)):
            if row in wanted:
                yield row, record
            if row >= (rows[-1] if len(rows) else -1):
                return

    def _file_rows(self, source: str) -> Iterator[tuple[int, Row]]:
        path, offset = self.path / f"{source}.jsonl", 0
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield offset, _parse(line, path, number)
                offset += len(line)

    def _checkpoint_rows(self, label: str) -> Iterator[Row]:
        labels = self.labels[: self.labels.index(label) + 1]
        return ({"id": r.id, "fields": r.fields, "meta": r.meta} for r in read_checkpoint(self.checkpoints, labels))


def _parse(line: bytes, path: Path, number: int | None) -> Row:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise InputError(str(path), number, "not a JSON line") from None
    if not isinstance(row, dict) or "id" not in row:
        raise InputError(str(path), number, "not a record (no `id`)")
    return row


def _matches(record: Row, text: str) -> bool:
    needle = text.casefold()
    return needle in str(record.get("id", "")).casefold() or needle in record_text(record.get("fields") or {}).casefold()
