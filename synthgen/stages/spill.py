"""Records spilled to disk and read back: what a whole-set stage (and the Ray engine) does with input it must
see in full before it decides, so millions of records never sit in Python lists.

The file is Parquet with one row group per written batch: an `id` column and the record as its JSON bytes.
Record fields are schemaless JSON (a field may be a string in one record and a list in the next), which a
columnar schema would coerce; the bytes replay each record exactly as it came in.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synthgen.record import Record

SCHEMA = pa.schema([("id", pa.string()), ("record", pa.binary())])


class SpillWriter:
    """Writes batches of records to `path`, one row group each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = pq.ParquetWriter(path, SCHEMA)
        self.groups = 0

    def write(self, batch: Sequence[Record]) -> None:
        """Append `batch` as one row group."""
        if batch:
            self._writer.write_table(pa.table({"id": [r.id for r in batch], "record": [r.to_json() for r in batch]},
                                              schema=SCHEMA))
            self.groups += 1

    def close(self) -> None:
        """Finish the file (its footer), so it can be read."""
        self._writer.close()


def write_spill(records: Iterable[Record], path: Path, batch_size: int,
                see: Callable[[list[Record]], None] | None = None) -> int:
    """Write `records` to `path` in row groups of `batch_size` (calling `see` on each); the number of groups."""
    writer = SpillWriter(path)
    try:
        iterator = iter(records)
        while batch := list(islice(iterator, batch_size)):
            writer.write(batch)
            if see is not None:
                see(batch)
    finally:
        writer.close()
    return writer.groups


def read_spill(path: Path, group: int | None = None) -> Iterator[Record]:
    """The spilled records in order: all of them, or those of row group `group`. One row group is read at a time
    (`iter_batches` over the whole file pre-buffers every row group: memory grows with the spill)."""
    handle = pq.ParquetFile(path)
    try:
        for index in range(handle.num_row_groups) if group is None else [group]:
            for line in handle.read_row_group(index, columns=["record"]).column(0).to_pylist():
                yield Record.from_json(line)
    finally:
        handle.close()


@dataclass(frozen=True)
class Spilled:
    """A finished spill: each iteration reads its records again, in input order."""

    path: Path

    def __iter__(self) -> Iterator[Record]:
        return read_spill(self.path)


@contextmanager
def spilled(records: Iterable[Record], folder: Path | None, batch_size: int,
            see: Callable[[list[Record]], None] | None = None) -> Iterator[Spilled]:
    """`records` spilled to a temporary file in `folder` (the system's temp folder without one), each batch shown
    to `see` on the way; yields the spill to replay, and removes the file when the block ends."""
    descriptor, name = tempfile.mkstemp(suffix=".spill.parquet", dir=folder)
    os.close(descriptor)
    path = Path(name)
    try:
        write_spill(records, path, batch_size, see)
        yield Spilled(path)
    finally:
        path.unlink(missing_ok=True)
