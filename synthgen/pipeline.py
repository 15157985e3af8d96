"""Runs a recipe: builds its stages, streams records through them, checkpoints each finished stage,
and resumes from the last valid checkpoint (generation itself resumes through the request cache)."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import orjson

from synthgen.build import build_stages, limited, open_runtime, open_source, run_paths
from synthgen.checkpoints import RejectLog, checkpointed, merge_rejects, read_checkpoint, resume_point
from synthgen.errors import RunDirError
from synthgen.fingerprint import stage_fingerprints
from synthgen.progress import plan_stages
from synthgen.recipe import Recipe
from synthgen.record import Record
from synthgen.rundir import JsonlWriter, RunDir, write_atomic
from synthgen.stages.base import StageExecutor, run_locally
from synthgen.stats import RunStats
from synthgen.steering import steer


@dataclass
class RunResult:
    """Where a finished run's outputs are, and its counters."""

    run_dir: RunDir
    stats: RunStats
    records: int


def run_recipe(recipe: Recipe, out: str | Path, *, fresh: bool = False, limit: int | None = None,
               stats: RunStats | None = None, command: str | None = None,
               executor: StageExecutor = run_locally, retry_rejects: bool = True) -> RunResult:
    """Run `recipe` into the run directory `out`, resuming whatever an earlier run there finished;
    `command` (the command line that started it) is recorded in the frozen recipe for the dataset card,
    `executor` runs each stage over its input (here, or on an engine such as Ray), and `retry_rejects` re-runs
    the stages that rejected records for a transient backend failure (timeouts, 5xx, dropped connections).
    `stats` counts this attempt; stats.json sums every attempt in the run directory. A run whose stages are
    all done is left as it is; recipe.yaml, dataset, rejects and stats are replaced only when a run succeeds."""
    stats = stats or RunStats()
    run_dir = RunDir(out).open(fresh)
    with run_dir, ExitStack() as stack:
        state, rejects = run_dir.read_state(), RejectLog(stats)
        try:
            source = open_source(recipe)
            runtime = open_runtime(recipe, run_dir, stats, stack)
            stages = build_stages(recipe, stats, limit=limit, runtime=runtime, reject_sink=rejects.sink,
                                  paths=run_paths(run_dir))
            named = {name: [rt.identity, rt.model] for name, rt in runtime.named.items()}
            fingerprints = stage_fingerprints(recipe, len(stages), limit, runtime.identity, named)
            start = resume_point(run_dir, stages, fingerprints, stats, retry_rejects)
            if start == len(stages) and state.get("finished") == fingerprints[-1] and run_dir.dataset_path.exists():
                with run_dir.dataset_path.open("rb") as handle:
                    return RunResult(run_dir, stats, sum(1 for _ in handle))  # finished: nothing to redo or rewrite
            stats.plan = plan_stages(stages, source.estimate() if source is not None else 0, limit)[start:]
            for index in range(start, len(stages)):  # a `target:` decides its stage's draws before the stage runs
                if stages[index].steering() is not None:
                    steer(recipe, stages, index, runtime, stats, limit, run_paths(run_dir))
            frozen = recipe.model_dump(mode="json", by_alias=True)
            frozen["stages"] = [{spec.name: spec.params.model_dump(mode="json", by_alias=True, exclude_none=True)}
                                for spec in recipe.stage_specs]  # every parameter spelled out, defaults included
            run_dir.write_recipe({**frozen, "run": {"limit": limit, "command": command, "backend": runtime.identity,
                                                  "recipe_dir": str(recipe.recipe_dir)}})

            labels = [stage.ctx.label for stage in stages]
            stream: Iterable[Record] = (read_checkpoint(run_dir.checkpoints, labels[:start]) if start
                                        else limited(source, limit))
            wrappers: list[Generator[Record, None, None]] = []
            for index in range(start, len(stages)):  # the first stage's input, the source, is no checkpoint
                wrappers.append(checkpointed(stages[index], stream, run_dir, fingerprints[index], rejects, executor,
                                             referable=index > 0))
                stream = wrappers[-1]
            dataset = JsonlWriter(run_dir.dataset_path)
            written = 0
            with _sampling(stats):
                try:
                    for record in stream:
                        dataset.write(record)
                        written += 1
                except BaseException:
                    dataset.discard()
                    for wrapper in reversed(wrappers):
                        wrapper.close()
                    raise
            dataset.commit()
            merge_rejects(run_dir, stages)
            total = stats.plus(state.get("totals", {}))
            write_atomic(run_dir.stats_path, orjson.dumps(total.to_dict(), option=orjson.OPT_INDENT_2))
            run_dir.commit_recipe()
        except BaseException:
            for writer in rejects.writers.values():
                writer.discard()  # a stage's rejects, when its own checkpoint could not be written
            with suppress(RunDirError):  # what the user must see is the failure, not a second one saving counters
                run_dir.write_state(stats.totals(state.get("totals")))
            raise
        run_dir.write_state(stats.totals(state.get("totals")), finished=fingerprints[-1])
    return RunResult(run_dir, stats, written)


@contextmanager
def _sampling(stats: RunStats, every: float = 1.0) -> Iterator[None]:
    """Samples the stats into their timeline once every `every` seconds while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            stats.sample()

    thread = threading.Thread(target=loop, name="synthgen-stats", daemon=True)
    stats.sample()
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        stats.sample()
