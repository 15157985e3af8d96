"""The BEIR layout (Thakur et al. 2021; `beir.datasets.data_loader.GenericDataLoader` reads it): `corpus.jsonl`
{_id, title, text}, `queries.jsonl` {_id, text} and `qrels/<split>.tsv` (query-id, corpus-id, score), one qrel
per record, score 1. A passage is written once: its id is the record's `corpus_id` role (a chunk's `chunk_id`,
so an evaluation hit points back to the document) or else the content hash of its text. Without `test_size`
every qrel goes to `qrels/test.tsv`, the split BEIR evaluates by default. Rows stream to disk; only the ids of
the passages already written are held."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import orjson

from synthgen.hashing import content_hash
from synthgen.record import Record

Role = Callable[[Record, str], Any]  # (record, role) -> the field the role names


def write_beir(records: Iterable[Record], role: Role, split: Callable[[str], str | None],
               folder: Path) -> tuple[dict[str, int], int]:
    """Write the three BEIR files into `folder`; returns (qrels per split, records skipped for lacking a query or
    passage). `split(record_id)` names a record's split, None for "no split asked"."""
    rows: dict[str, int] = {}
    skipped = 0
    seen: set[str] = set()
    (folder / "qrels").mkdir()
    with ExitStack() as files:
        corpus = files.enter_context((folder / "corpus.jsonl").open("wb"))
        queries = files.enter_context((folder / "queries.jsonl").open("wb"))
        qrels: dict[str, IO[str]] = {}
        for record in records:
            query, passage = role(record, "anchor"), role(record, "positive")
            if not (isinstance(query, str) and query and isinstance(passage, str) and passage):
                skipped += 1
                continue
            corpus_id = str(role(record, "corpus_id") or f"c-{content_hash(passage, 16)}")
            if corpus_id not in seen:
                seen.add(corpus_id)
                title = role(record, "title")
                row = {"_id": corpus_id, "title": title if isinstance(title, str) else "", "text": passage}
                corpus.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
            queries.write(orjson.dumps({"_id": record.id, "text": query}, option=orjson.OPT_APPEND_NEWLINE))
            name = split(record.id) or "test"
            if name not in qrels:
                qrels[name] = files.enter_context((folder / "qrels" / f"{name}.tsv").open("w", encoding="utf-8"))
                qrels[name].write("query-id\tcorpus-id\tscore\n")
                rows[name] = 0
            qrels[name].write(f"{record.id}\t{corpus_id}\t1\n")
            rows[name] += 1
    return rows, skipped
