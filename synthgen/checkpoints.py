"""Stage checkpoints in the run directory: each finished stage's output, rejects and `.done` (fingerprint,
counts, metrics, transient rejects), written only when the stage finishes, and the resume point they give."""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from synthgen.errors import StageFailure, SynthgenError
from synthgen.record import Record
from synthgen.rundir import JsonlWriter, RunDir, write_atomic
from synthgen.stages.base import RejectSink, Stage, StageExecutor, is_transient_reject
from synthgen.stats import RunStats, StageCounts


def reject_line(record: Record, reason: str, detail: str | None, label: str) -> bytes:
    """One line of a rejects file: the record, the stage (`label`) that dropped it, the reason and its detail."""
    return orjson.dumps({"id": record.id, "stage": label, "reason": reason, "detail": detail,
                         "fields": record.fields, "meta": record.meta})


def read_reject(line: bytes) -> tuple[Record, str, str | None]:
    """The record, reason and detail of a `reject_line`."""
    item = orjson.loads(line)
    return Record(item["id"], item["fields"], item["meta"]), item["reason"], item["detail"]


class RejectLog:
    """Routes each stage's rejects to that stage's checkpoint writer and counts them."""

    def __init__(self, stats: RunStats) -> None:
        self.stats = stats
        self.writers: dict[str, JsonlWriter] = {}
        self.transient: Counter[str] = Counter()  # per stage label: rejects a later run retries

    def sink(self, label: str) -> RejectSink:
        counts = self.stats.stage(label)

        def reject(record: Record, reason: str, detail: str | None) -> None:
            counts.rejected += 1
            self.stats.count_reject(reason, record.fields)
            self.transient[label] += is_transient_reject(reason)
            self.writers[label].write_line(reject_line(record, reason, detail, label))

        return reject


def checkpoint_paths(run_dir: RunDir, stage: Stage) -> tuple[Path, Path, Path]:
    base = run_dir.checkpoints / stage.ctx.label
    return base.with_suffix(".jsonl"), base.with_suffix(".rejects.jsonl"), base.with_suffix(".done")


def checkpointed(stage: Stage, records: Iterable[Record], run_dir: RunDir, fingerprint: str,
                  rejects: RejectLog, executor: StageExecutor) -> Generator[Record, None, None]:
    """Run `stage`, counting and checkpointing what it yields; the checkpoint appears only when it finishes."""
    counts = stage.ctx.stats.stage(stage.ctx.label)
    output_path, rejects_path, done_path = checkpoint_paths(run_dir, stage)
    output, rejects.writers[stage.ctx.label] = JsonlWriter(output_path), JsonlWriter(rejects_path)

    last: list[str] = []  # the id of the last record the stage took in, to name it in a StageFailure

    def counted(inputs: Iterable[Record]) -> Iterator[Record]:
        for record in inputs:
            counts.records_in += 1
            last[:] = [record.id]
            yield record

    try:
        for record in executor(stage, counted(records), fingerprint):
            counts.records_out += 1
            output.write(record)
            yield record
    except BaseException as exc:
        output.discard()
        rejects.writers[stage.ctx.label].discard()
        if isinstance(exc, Exception) and not isinstance(exc, SynthgenError):
            raise StageFailure(stage.ctx.label, last[0] if last else None, exc) from exc
        raise
    output.commit()
    rejects.writers[stage.ctx.label].commit()
    write_atomic(done_path, orjson.dumps({"fingerprint": fingerprint, "counts": vars(counts),
                                          "metrics": stage.ctx.stats.metrics.get(stage.ctx.label),
                                          "transient_rejects": rejects.transient[stage.ctx.label]}))


def is_current(done: dict[str, Any], fingerprint: str, retry_rejects: bool) -> bool:
    """A finished stage's checkpoint can be reused: same fingerprint, and (with `retry_rejects`) no record
    rejected for a transient backend failure, which re-running the stage retries (the rest replays from the cache)."""
    return done.get("fingerprint") == fingerprint and not (retry_rejects and done.get("transient_rejects"))


def resume_point(run_dir: RunDir, stages: list[Stage], fingerprints: list[str], stats: RunStats,
                  retry_rejects: bool) -> int:
    """Index of the first stage to run: the first whose checkpoint is missing or not current."""
    finished = []
    for stage, fingerprint in zip(stages, fingerprints, strict=True):
        done_path = checkpoint_paths(run_dir, stage)[2]
        if not done_path.exists():
            break
        done = orjson.loads(done_path.read_bytes())
        if not is_current(done, fingerprint, retry_rejects):
            break
        finished.append((stage, done))
    for stage, done in finished:
        stats.stages[stage.ctx.label] = StageCounts(**done["counts"])
        if done.get("metrics") is not None:
            stats.metrics[stage.ctx.label] = done["metrics"]
        with checkpoint_paths(run_dir, stage)[1].open("rb") as handle:  # reasons of the stages not run again
            for line in handle:
                item = orjson.loads(line)
                stats.count_reject(item["reason"], item["fields"])
    return len(finished)


def read_checkpoint(run_dir: RunDir, stage: Stage) -> Iterator[Record]:
    with checkpoint_paths(run_dir, stage)[0].open("rb") as handle:
        for line in handle:
            yield Record.from_json(line)


def merge_rejects(run_dir: RunDir, stages: list[Stage]) -> None:
    """rejects.jsonl: every stage's rejects, in stage order."""
    writer = JsonlWriter(run_dir.rejects_path)
    for stage in stages:
        path = checkpoint_paths(run_dir, stage)[1]
        if path.exists():
            with path.open("rb") as handle:
                for line in handle:
                    writer.write_line(line.rstrip(b"\n"))
    writer.commit()
