"""Stage checkpoints in the run directory: each finished stage's output, rejects and `.done` (format, fingerprint,
counts, metrics, transient rejects), written only when the stage finishes, and the resume point they give.

Checkpoints are zstd-compressed JSONL (`NN-stage.jsonl.zst`, `NN-stage.rejects.jsonl.zst`): records of any shape
stream through them line by line, which Arrow IPC (one schema per file) would not allow without a JSON column.
An output record that is one of the records the stage took in (the very object, as filters and streaming dedup
yield: stages never change a record in place) is stored as a reference, a line `[gap]`: skip `gap` records of the
input, take the next. So a filter's checkpoint is its kept positions, a few bytes each, like a distilabel/datatrove
filter step whose output is its input minus the drops; reading it reads the checkpoint before it (itself perhaps
references, down to the nearest stage that wrote records) and picks. The first stage's input (the source) is not
a checkpoint, so it always writes records. A `.done` of another `CHECKPOINT_FORMAT` (plain `.jsonl` checkpoints of
earlier versions) is not current: that stage and the ones after it run again, requests replayed from the cache.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from synthgen.errors import RunDirError, StageFailure, SynthgenError
from synthgen.record import Record
from synthgen.rundir import JsonlWriter, RunDir, read_lines, write_atomic
from synthgen.stages.base import RejectSink, Stage, StageExecutor, is_transient_reject
from synthgen.stats import RunStats, StageCounts

CHECKPOINT_FORMAT = 2  # 1 (no "format" in .done): plain JSONL of every output record


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


def checkpoint_paths(checkpoints: Path, label: str) -> tuple[Path, Path, Path]:
    """A stage's output, rejects and `.done` files in the checkpoints folder."""
    base = checkpoints / label
    return base.with_suffix(".jsonl.zst"), base.with_suffix(".rejects.jsonl.zst"), base.with_suffix(".done")


class InputWindow:
    """The last `size` records a stage took in, by identity, so that an output which is one of them is stored as
    a reference to its position (see the module docstring); later positions only, so the references stay ordered."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size  # above a streaming stage's batch (MinHash: 1024 by default); a whole-set stage holds this many
        self.recent: OrderedDict[int, tuple[int, Record]] = OrderedDict()
        self.taken = 0
        self.last = -1  # position of the last referenced input

    def saw(self, record: Record) -> None:
        self.recent[id(record)] = (self.taken, record)
        self.recent.move_to_end(id(record))
        self.taken += 1
        if len(self.recent) > self.size:
            self.recent.popitem(last=False)

    def gap(self, record: Record) -> int | None:
        """Inputs skipped since the last referenced one, if `record` is a recent input; else None."""
        entry = self.recent.get(id(record))
        if entry is None or entry[1] is not record:
            return None
        position, gap = entry[0], entry[0] - self.last - 1
        self.last = position
        while self.recent and next(iter(self.recent.values()))[0] <= position:
            self.recent.popitem(last=False)
        return gap


def checkpointed(stage: Stage, records: Iterable[Record], run_dir: RunDir, fingerprint: str,
                  rejects: RejectLog, executor: StageExecutor, referable: bool = True) -> Generator[Record, None, None]:
    """Run `stage`, counting and checkpointing what it yields; the checkpoint appears only when it finishes.
    `referable`: its input is the previous stage's checkpoint, so outputs that are inputs are stored as references."""
    counts = stage.ctx.stats.stage(stage.ctx.label)
    output_path, rejects_path, done_path = checkpoint_paths(run_dir.checkpoints, stage.ctx.label)
    output, rejects.writers[stage.ctx.label] = JsonlWriter(output_path), JsonlWriter(rejects_path)
    window = InputWindow() if referable else None

    last: list[str] = []  # the id of the last record the stage took in, to name it in a StageFailure

    def counted(inputs: Iterable[Record]) -> Iterator[Record]:
        for record in inputs:
            counts.records_in += 1
            last[:] = [record.id]
            if window is not None:
                window.saw(record)
            yield record

    try:
        for record in executor(stage, counted(records), fingerprint):
            counts.records_out += 1
            gap = window.gap(record) if window is not None else None
            if gap is None:
                output.write(record)
            else:
                output.write_line(b"[%d]" % gap)
            yield record
    except BaseException as exc:
        output.discard()
        rejects.writers[stage.ctx.label].discard()
        if isinstance(exc, Exception) and not isinstance(exc, SynthgenError):
            raise StageFailure(stage.ctx.label, last[0] if last else None, exc) from exc
        raise
    output.commit()
    rejects.writers[stage.ctx.label].commit()
    stage.ctx.stats.finish_stage(stage.ctx.label)
    for legacy in (".jsonl", ".rejects.jsonl"):  # an earlier version's checkpoint of this stage
        (run_dir.checkpoints / f"{stage.ctx.label}{legacy}").unlink(missing_ok=True)
    write_atomic(done_path, orjson.dumps({"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint,
                                          "counts": vars(counts),
                                          "metrics": stage.ctx.stats.metrics.get(stage.ctx.label),
                                          "transient_rejects": rejects.transient[stage.ctx.label]}))


def is_current(done: dict[str, Any], fingerprint: str, retry_rejects: bool) -> bool:
    """A finished stage's checkpoint can be reused: same fingerprint, and (with `retry_rejects`) no record
    rejected for a transient backend failure, which re-running the stage retries (the rest replays from the cache)."""
    return (done.get("format") == CHECKPOINT_FORMAT and done.get("fingerprint") == fingerprint
            and not (retry_rejects and done.get("transient_rejects")))


def resume_point(run_dir: RunDir, stages: list[Stage], fingerprints: list[str], stats: RunStats,
                  retry_rejects: bool) -> int:
    """Index of the first stage to run: the first whose checkpoint is missing or not current."""
    finished = []
    for stage, fingerprint in zip(stages, fingerprints, strict=True):
        done_path = checkpoint_paths(run_dir.checkpoints, stage.ctx.label)[2]
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
        for line in read_lines(checkpoint_paths(run_dir.checkpoints, stage.ctx.label)[1]):
            item = orjson.loads(line)  # reasons of the stages not run again
            stats.count_reject(item["reason"], item["fields"])
    return len(finished)


def read_checkpoint(checkpoints: Path, labels: list[str]) -> Iterator[Record]:
    """The output of the last of the finished stages `labels` (every stage up to it, in order), references
    resolved through the checkpoints before it."""
    *earlier, label = labels
    inputs = read_checkpoint(checkpoints, earlier) if earlier else iter(())
    path = checkpoint_paths(checkpoints, label)[0]
    for line in read_lines(path):
        if not line.startswith(b"["):
            yield Record.from_json(line)
            continue
        try:
            for _ in range(orjson.loads(line)[0]):
                next(inputs)
            yield next(inputs)
        except StopIteration:
            raise RunDirError(f"{path}: refers past the end of the checkpoint before it; run again with --fresh") from None


def merge_rejects(run_dir: RunDir, stages: list[Stage]) -> None:
    """rejects.jsonl: every stage's rejects, in stage order."""
    writer = JsonlWriter(run_dir.rejects_path)
    for stage in stages:
        path = checkpoint_paths(run_dir.checkpoints, stage.ctx.label)[1]
        if path.exists():
            for line in read_lines(path):
                writer.write_line(line)
    writer.commit()
