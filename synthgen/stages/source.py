"""Input sources: JSONL, Parquet, CSV and local Hugging Face `datasets` folders, read as a stream of Records;
and `files`: a folder or glob of documents listed one record per file ({path, name, type, bytes}, sorted, hidden
files skipped), read by the extract_text stage, so a bad file is that file's reject, never the source's error."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import Field

from synthgen.config import StrictModel
from synthgen.errors import InputError
from synthgen.record import Record, make_record_id

SourceFormat = Literal["jsonl", "parquet", "csv", "hf", "files"]
_GLOB = frozenset("*?[")
_SUFFIXES: dict[str, SourceFormat] = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".csv": "csv"}


class SourceConfig(StrictModel):
    """Where input records come from. `format` is inferred from the path when omitted."""

    path: str
    format: SourceFormat | None = None
    split: str | None = None
    fields: list[str] | None = None
    limit: int | None = Field(default=None, ge=1)
    max_record_bytes: int = Field(default=8_000_000, ge=1, description="a longer JSONL line is an input error")


class Source:
    """Reads one input file or folder; every row becomes a Record whose id hashes its position and content."""

    def __init__(self, config: SourceConfig, path: Path) -> None:
        self.config = config
        self.path = path
        self.format: SourceFormat = config.format or _infer_format(path)
        if not (self._files_root() if self.format == "files" else path).exists():
            raise InputError(str(path), None, "input file not found")

    def __iter__(self) -> Iterator[Record]:
        reader = {"jsonl": self._jsonl, "parquet": self._parquet, "csv": self._csv, "hf": self._hf,
                  "files": self._files}[self.format]
        count = 0
        for line, row in reader():
            fields = self._select(row, line)
            identity = {**fields, "path": None} if self.format == "files" else fields  # ids not tied to the machine
            yield Record(make_record_id("source", count, identity), fields, {"source": str(self.path), "line": line})
            count += 1
            if self.config.limit is not None and count >= self.config.limit:
                return
        if count == 0:
            raise InputError(str(self.path), None, "input has no records")

    def estimate(self) -> int | None:
        """Number of records this source will yield, where it is cheap to know."""
        if self.format == "jsonl":
            with self.path.open("rb") as handle:
                total = sum(1 for line in handle if line.strip())
        elif self.format == "parquet":
            total = self._parquet_file().metadata.num_rows
        elif self.format == "files":
            total = len(self.listing()[1])
        else:
            return self.config.limit
        return min(total, self.config.limit) if self.config.limit else total

    def _select(self, row: dict[str, Any], line: int) -> dict[str, Any]:
        if self.config.fields is None:
            return row
        missing = [name for name in self.config.fields if name not in row]
        if missing:
            raise InputError(str(self.path), line, f"row lacks field(s) {missing}; it has {sorted(row)}")
        return {name: row[name] for name in self.config.fields}

    def _jsonl(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                if len(raw) > self.config.max_record_bytes:
                    raise InputError(str(self.path), number, f"record of {len(raw):,} bytes is over source.max_record_bytes "
                                                             f"({self.config.max_record_bytes:,}); split it or raise the limit")
                try:
                    row = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    cut = "" if raw.endswith(b"\n") else "; the file ends inside this record (truncated?)"
                    raise InputError(str(self.path), number, f"not valid JSON ({exc}){cut}") from None
                if not isinstance(row, dict):
                    raise InputError(str(self.path), number, f"expected a JSON object, got {type(row).__name__}")
                yield number, row

    def _csv(self) -> Iterator[tuple[int, dict[str, Any]]]:
        path, line = str(self.path), 0
        try:
            with self.path.open(encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle, strict=True)
                for row in reader:
                    line = reader.line_num
                    if None in row:
                        raise InputError(path, line, f"{len(row[None])} more value(s) than the header has columns")
                    if any("\0" in value for value in row.values() if isinstance(value, str)):
                        raise InputError(path, line, "contains a NUL byte: a binary or UTF-16 file, not UTF-8 CSV")
                    yield line, dict(row)
        except UnicodeDecodeError as exc:
            raise InputError(path, None, f"not UTF-8 text ({exc.reason}) after line {line}") from None
        except csv.Error as exc:
            raise InputError(path, line + 1, f"malformed CSV ({exc}; an unclosed quote?)") from None

    def _parquet(self) -> Iterator[tuple[int, dict[str, Any]]]:
        import pyarrow as pa

        parquet, number = self._parquet_file(), 0
        for group in range(parquet.num_row_groups):
            try:
                batches = list(parquet.iter_batches(batch_size=4096, row_groups=[group]))
            except (pa.ArrowException, OSError) as exc:
                raise InputError(str(self.path), None, f"row group {group} of {parquet.num_row_groups} is unreadable "
                                                       f"(rows after {number}): {exc}") from None
            for batch in batches:
                for row in batch.to_pylist():
                    number += 1
                    yield number, row

    def _parquet_file(self) -> Any:
        """The open pyarrow ParquetFile; a truncated or foreign file raises InputError."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(str(self.path), None, f"not a readable Parquet file (truncated?): {exc}") from None

    def _files_root(self) -> Path:
        """The folder the listing starts from: the path up to its first glob part."""
        parts = self.path.parts
        glob_at = next((i for i, part in enumerate(parts) if _GLOB & set(part)), len(parts))
        return Path(*parts[:glob_at])

    def listing(self) -> tuple[Path, list[Path]]:
        """(the folder names are relative to, the files of a folder (all, recursively) or of a glob
        (`docs/**/*.pdf`) or the one file, sorted, hidden ones skipped)."""
        root = self._files_root()
        paths: Iterable[Path]
        if root != self.path:
            base, paths = root, root.glob(str(self.path.relative_to(root)))
        else:
            base, paths = (root, root.rglob("*")) if root.is_dir() else (root.parent, iter([root]))
        return base, sorted(path for path in paths
                            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(base).parts))

    def _files(self) -> Iterator[tuple[int, dict[str, Any]]]:
        base, paths = self.listing()
        for number, path in enumerate(paths, start=1):
            yield number, {"path": str(path), "name": path.relative_to(base).as_posix(),
                           "type": path.suffix.lower().lstrip("."), "bytes": path.stat().st_size}

    def _hf(self) -> Iterator[tuple[int, dict[str, Any]]]:
        import datasets

        loaded = datasets.load_from_disk(str(self.path))
        if isinstance(loaded, datasets.DatasetDict):
            if self.config.split not in loaded:
                raise InputError(str(self.path), None, f"choose a split with source.split: one of {list(loaded)}")
            loaded = loaded[self.config.split]
        for number, row in enumerate(loaded, start=1):
            yield number, dict(row)


def _infer_format(path: Path) -> SourceFormat:
    if _GLOB & set(str(path)):
        return "files"
    if path.is_dir():
        hf_marks = ("dataset_info.json", "state.json", "dataset_dict.json")
        return "hf" if any((path / mark).exists() for mark in hf_marks) else "files"
    try:
        return _SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise InputError(str(path), None,
                         "cannot tell the format; set source.format to jsonl, parquet, csv, hf or files") from None
