"""`synthgen dedup FILE`: exact then near duplicates (and evaluation-set matches) removed from a file outside any recipe,
kept rows written to JSONL or Parquet, dropped rows to `<out>.rejects.jsonl` with their reasons."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from synthgen.arrow_rows import jsonl_to_parquet
from synthgen.fields import require_fields
from synthgen.record import Record
from synthgen.rundir import JsonlWriter
from synthgen.stages.base import Stage, StageContext, StageExecutor, run_locally
from synthgen.stages.dedup import ExactDedup, ExactDedupParams, MinHashDedup, MinHashDedupParams
from synthgen.stages.source import Source, SourceConfig


@dataclass
class DedupSummary:
    """What a file dedup kept and dropped, and how big the duplicate clusters were."""

    records: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    duplicates_per_kept: Counter[str] = field(default_factory=Counter)

    def cluster_sizes(self) -> dict[int, int]:
        """Cluster size (a kept record plus its duplicates) -> number of such clusters, for clusters of 2+."""
        return dict(sorted(Counter(n + 1 for n in self.duplicates_per_kept.values()).items()))


def dedup_file(source: SourceConfig, out: Path, near: MinHashDedupParams, exact: bool = True,
               on_record: Callable[[], None] | None = None, run: StageExecutor = run_locally) -> DedupSummary:
    """Stream `source` through exact and near dedup into `out`; files appear only when complete. `run` runs each
    dedup stage (here, or e.g. on Ray, spilling to a temporary folder beside `out`). Rejects are listed exact
    duplicates first, then near duplicates, each in input order, whichever way the stages ran."""
    summary = DedupSummary()
    originals: set[str] = set()  # the ids rejects name: only their lines are looked up, at the end
    with tempfile.TemporaryDirectory(prefix=".dedup-", dir=out.parent) as workdir:
        folder = Path(workdir)
        ctx = StageContext(label="near", index=0, seed=0, recipe_path=out, prompts_dir=out.parent,
                           resolve=lambda name: Path(name), workdir=folder)
        stages: list[Stage] = [MinHashDedup(near, ctx)]
        if exact:
            stages.insert(0, ExactDedup(ExactDedupParams(fields=near.fields), replace(ctx, label="exact")))
        writers = [JsonlWriter(folder / f"{stage.ctx.label}.rejects.jsonl") for stage in stages]
        lines = JsonlWriter(folder / "lines.jsonl")  # [id, line] of every row, on disk
        rows = require_fields(Source(source, Path(source.path)), near.fields, source.path, "--field")
        records: Iterable[Record] = _counted(rows, summary, lines, on_record)
        for stage, writer in zip(stages, writers, strict=True):
            stage.ctx.reject = partial(_reject, writer, summary, originals)
            records = run(stage, records, "")  # no checkpoints here: no fingerprint
        try:
            summary.kept = _write_rows((record.fields for record in records), out, folder)
        except BaseException:
            for writer in (*writers, lines):
                writer.discard()
            raise
        lines.commit()
        line_of = _lines_of(lines.path, originals)
        rejects = JsonlWriter(out.with_name(out.name + ".rejects.jsonl"))
        for writer in writers:
            writer.commit()
            with writer.path.open("rb") as handle:
                for line in handle:
                    row = orjson.loads(line)
                    row["duplicate_of_line"] = line_of.get(row["duplicate_of"])
                    rejects.write_line(orjson.dumps(row))
        rejects.commit()
    return summary


def _reject(writer: JsonlWriter, summary: DedupSummary, originals: set[str], record: Record, reason: str,
            detail: str | None) -> None:
    summary.dropped[reason] += 1
    original = record.meta["duplicate_of"]
    originals.add(original)
    if reason != "contaminated":
        summary.duplicates_per_kept[original] += 1
    writer.write_line(orjson.dumps({
        "line": record.meta["line"], "reason": reason, "duplicate_of_line": None,  # filled in at the end
        "duplicate_of": original, "similarity": record.meta["similarity"], "detail": detail, "row": record.fields,
    }))


def _counted(records: Iterator[Record], summary: DedupSummary, lines: JsonlWriter,
             on_record: Callable[[], None] | None) -> Iterator[Record]:
    for record in records:
        summary.records += 1
        lines.write_line(orjson.dumps([record.id, record.meta["line"]]))
        if on_record is not None:
            on_record()
        yield record


def _lines_of(path: Path, ids: set[str]) -> dict[str, int]:
    """The input line of each of `ids`, read from the [id, line] file `path`."""
    found: dict[str, int] = {}
    with path.open("rb") as handle:
        for entry in handle:
            record_id, line = orjson.loads(entry)
            if record_id in ids:
                found[record_id] = line
    return found


def _write_rows(rows: Iterator[dict[str, Any]], out: Path, workdir: Path) -> int:
    """Write rows as Parquet (by suffix; through JSONL in `workdir`, in batches) or JSONL, through a temporary
    file; returns the count."""
    parquet = out.suffix.lower() == ".parquet"
    writer = JsonlWriter(workdir / "kept.jsonl" if parquet else out)
    count = 0
    try:
        for row in rows:
            writer.write_line(orjson.dumps(row))
            count += 1
    except BaseException:
        writer.discard()
        raise
    writer.commit()
    if parquet:
        tmp = out.with_name(out.name + ".tmp")
        try:
            jsonl_to_parquet(writer.path, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(out)
    return count
