"""What runs inside Ray workers for the Ray engine (`ray_engine`): a row-wise stage over one block of records,
embeddings into the run's embedding cache, and the block files both sides read and write.

A block is a row group of the stage's input spilled to Parquet in the run directory; its outputs are `<block>.jsonl`,
`<block>.rejects.jsonl` and a `.done` marker holding the block's fingerprint, so a re-run skips it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from synthgen.checkpoints import reject_line
from synthgen.dedup.text import field_text
from synthgen.errors import SynthgenError
from synthgen.recipe import Recipe
from synthgen.record import Record
from synthgen.rundir import JsonlWriter, RunDir, write_atomic
from synthgen.stages.spill import read_spill
from synthgen.stats import RunStats

REQUEST_COUNTERS = ("planned_requests", "finished_requests", "cache_hits", "http_requests", "http_ok",
                    "prompt_tokens", "completion_tokens")


class BlockWorker:
    """One row-wise stage, run over one block per call; as a Ray actor it keeps its backend (over the run's
    request cache) for every block it is given."""

    def __init__(self, recipe: Recipe, run_path: str, index: int, limit: int | None, folder: str,
                 with_backend: bool = False) -> None:
        self.recipe, self.run_path, self.index, self.limit, self.with_backend = recipe, run_path, index, limit, with_backend
        self.stats, self.stack, self.folder = RunStats(), ExitStack(), Path(folder)
        self.rejects: list[bytes] = []
        self.stage: Any = None

    def _started(self) -> Any:
        """The stage, built on the first block (inside `reported`, so a backend that cannot start reports why)."""
        from synthgen.build import build_stage, open_runtime, run_paths

        if self.stage is None:
            run_dir = RunDir(self.run_path)
            runtime = open_runtime(self.recipe, run_dir, self.stats, self.stack) if self.with_backend else None
            self.stage = build_stage(self.recipe, self.index, self.stats, limit=self.limit, runtime=runtime,
                                     reject_sink=lambda label: self._reject, paths=run_paths(run_dir))
        return self.stage

    def __call__(self, task: dict[str, Any]) -> dict[str, Any]:
        """Run one block (unless an earlier run finished it) and report its request counters, or its error."""
        return reported(lambda: self._run(task), {"block": int(task["block"]), "stats": b"{}"})

    def _run(self, task: dict[str, Any]) -> dict[str, Any]:
        block = int(task["block"])
        base = self.folder / f"{block:06d}"
        done = base.with_suffix(".done")
        if done.exists() and orjson.loads(done.read_bytes()) == task["fingerprint"]:
            return {"block": block, "stats": orjson.dumps({})}
        stage = self._started()
        before = request_counts(self.stats)
        if task.get("draws") is not None:
            stage.take_draws(range(*task["draws"]))
            inputs: Iterable[Record] = ()
        else:
            inputs = read_spill(self.folder / "input.parquet", task["group"])
        output = JsonlWriter(base.with_suffix(".jsonl"))
        self.rejects.clear()
        try:
            for record in stage.run(inputs):
                output.write(record)
        except BaseException:
            output.discard()
            raise
        output.commit()
        write_atomic(base.with_suffix(".rejects.jsonl"), b"".join(line + b"\n" for line in self.rejects))
        write_atomic(done, orjson.dumps(task["fingerprint"]))
        after = request_counts(self.stats)
        return {"block": block, "stats": orjson.dumps({k: after[k] - before.get(k, 0) for k in after})}

    def _reject(self, record: Record, reason: str, detail: str | None) -> None:
        self.rejects.append(reject_line(record, reason, detail, self._started().ctx.label))


class EmbeddingWorker:
    """A Ray actor that embeds blocks of records into the run's embedding cache (`Encoder` with `cache_dir`)."""

    def __init__(self, model: str, batch_size: int, fields: list[str], cache_dir: str, device: str) -> None:
        self.model, self.batch_size, self.fields, self.cache_dir, self.device = model, batch_size, fields, cache_dir, device
        self.encoder: Any = None

    def __call__(self, task: dict[str, Any]) -> dict[str, Any]:
        return reported(lambda: self._embed(task), {"records": 0})

    def _embed(self, task: dict[str, Any]) -> dict[str, Any]:
        from synthgen.embedding.encoder import Encoder

        self.encoder = self.encoder or Encoder(self.model, self.batch_size, self.device, cache_dir=Path(self.cache_dir))
        records = list(read_spill(Path(task["path"]), task["group"]))
        self.encoder.encode([field_text(record.fields, self.fields) for record in records])
        return {"records": len(records)}


def reported(run: Callable[[], dict[str, Any]], failed: dict[str, Any]) -> dict[str, Any]:
    """`run()`'s row with `error: None`, or `failed` with the message of the synthgen error it raised: Ray Data
    wraps a worker's exception in its own and drops the original, so the error travels as data instead."""
    try:
        return {**run(), "error": None}
    except SynthgenError as exc:
        return {**failed, "error": str(exc)}


def raise_reported(row: dict[str, Any]) -> None:
    """Raise the synthgen error a worker reported (a bad key, a model that does not load), as it would be locally."""
    if row.get("error"):
        raise SynthgenError(row["error"])


def run_block(task: dict[str, Any], **setup: Any) -> dict[str, Any]:
    """A block of a stage that makes no requests, as a plain Ray task."""
    return BlockWorker(**setup)(task)


def record_rows(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The dedup rows of one block: input position, id and the record's JSON."""
    records = read_spill(Path(task["path"]), task["group"])
    return [{"order": task["first"] + i, "id": record.id, "record": record.to_json()} for i, record in enumerate(records)]


def block_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield line


def read_records(path: Path) -> Iterator[Record]:
    for line in block_lines(path):
        yield Record.from_json(line)


def request_counts(stats: RunStats) -> dict[str, int]:
    counts = {name: int(getattr(stats, name)) for name in REQUEST_COUNTERS}
    counts.update({f"retry:{cause}": n for cause, n in stats.retries.items()})
    return counts
