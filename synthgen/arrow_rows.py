"""JSON rows to Parquet or Arrow in bounded memory: a JSONL file converted batch by batch (`ParquetWriter`, or an
Arrow IPC stream, the file `datasets` memory-maps).

Rows are schemaless JSON: a field may be null in the first thousand rows and a string later, a row may lack a
key others have, a struct's keys may vary. A Parquet or Arrow file has one schema, fixed before the first batch, so
the file is read twice: the first pass infers each batch's schema (every key of every row, not only the first
row's as `Table.from_pylist` does) and unifies them with Arrow's permissive promotion (null -> any type, int ->
float, structs merged field by field); the second writes each batch cast to that schema, a missing key as null.
The input is a file rather than an iterator so that both passes read the same rows, whatever produced them; only
one batch is ever in memory (10k rows or 64 MB of JSON, whichever comes first: ~100 MB of Python objects).

Why unify rather than fix the schema from the first batch or fail on a change: a distilabel or DataDesigner user
expects the columns `datasets` would infer for the whole set (every key, nulls where a row lacks one), as a
whole-table conversion gives, only without holding the table. The HF layout is written as Arrow stream files that
`Dataset.from_file` memory-maps, rather than through `Dataset.from_parquet`, whose builder keeps a cache (by
default in ~/.cache/huggingface) and, measured at 100k rows, held ~1 KB per row more in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from synthgen.errors import RunDirError

BATCH_ROWS = 10_000
BATCH_BYTES = 64 << 20


def jsonl_batches(path: Path, batch_rows: int = BATCH_ROWS) -> Iterator[list[dict[str, Any]]]:
    """The rows of the JSONL file `path` in lists of at most `batch_rows` rows (and about BATCH_BYTES of JSON)."""
    batch: list[dict[str, Any]] = []
    size = 0
    with path.open("rb") as handle:
        for line in handle:
            batch.append(orjson.loads(line))
            size += len(line)
            if len(batch) >= batch_rows or size >= BATCH_BYTES:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


def jsonl_schema(path: Path, batch_rows: int = BATCH_ROWS) -> pa.Schema:
    """One schema every row of `path` fits: each batch's inferred schema, unified permissively."""
    schemas: list[pa.Schema] = []
    for batch in jsonl_batches(path, batch_rows):
        schema = pa.schema(pa.array(batch).type)  # a struct of every key any row of the batch has
        if not schemas or schema != schemas[-1]:
            schemas.append(schema)
    return pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])


def jsonl_to_parquet(source: Path, target: Path, batch_rows: int = BATCH_ROWS) -> int:
    """Write the rows of the JSONL file `source` to the Parquet file `target`, one row group per batch; the count."""
    return _convert(source, target, batch_rows, lambda schema: pq.ParquetWriter(target, schema))


def jsonl_to_arrow(source: Path, target: Path, batch_rows: int = BATCH_ROWS) -> int:
    """Write the rows of the JSONL file `source` to the Arrow IPC stream file `target` (what `datasets.Dataset.
    from_file` memory-maps); the count."""
    return _convert(source, target, batch_rows, lambda schema: pa.ipc.new_stream(str(target), schema))


def parquet_to_arrow(source: Path, target: Path) -> None:
    """Copy the Parquet file `source` to the Arrow IPC stream file `target`, one row group at a time."""
    handle = pq.ParquetFile(source)
    try:
        with pa.ipc.new_stream(str(target), handle.schema_arrow) as writer:
            for group in range(handle.num_row_groups):
                writer.write_table(handle.read_row_group(group))
    finally:
        handle.close()


def _convert(source: Path, target: Path, batch_rows: int, open_writer: Callable[[pa.Schema], Any]) -> int:
    count = 0
    with _one_schema(target):
        schema = jsonl_schema(source, batch_rows)
        with open_writer(schema) as writer:
            for batch in jsonl_batches(source, batch_rows):
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count += len(batch)
    return count


@contextmanager
def _one_schema(target: Path) -> Iterator[None]:
    """Rows no single column type fits (a field an integer in one row, a string in another) name the file."""
    try:
        yield
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise RunDirError(f"{target.name}: cannot write these rows as Parquet ({exc}); "
                          "give each field one type, or export JSONL") from None
