"""Runs a recipe: builds its stages, streams records through them, checkpoints each finished stage,
and resumes from the last valid checkpoint (generation itself resumes through the request cache)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import orjson

from synthgen.aio import LoopThread
from synthgen.backends.factory import BackendContext, create_backend
from synthgen.cache import CachedBackend, RequestCache
from synthgen.checkpoints import RejectLog, checkpointed, merge_rejects, read_checkpoint, resume_point
from synthgen.errors import ConfigError, RunDirError
from synthgen.fingerprint import stage_fingerprints
from synthgen.recipe import Recipe
from synthgen.record import Record
from synthgen.rundir import JsonlWriter, RunDir, write_atomic
from synthgen.runtime import Runtime
from synthgen.stages import STAGES, Stage, StageContext
from synthgen.stages.base import RejectSink, StageExecutor, discard_rejects, run_locally
from synthgen.stages.generate import Generate, GenerateParams
from synthgen.stages.source import Source
from synthgen.stats import RunStats


@dataclass
class RunResult:
    """Where a finished run's outputs are, and its counters."""

    run_dir: RunDir
    stats: RunStats
    records: int


def open_source(recipe: Recipe) -> Source | None:
    """The recipe's input source, or None for recipes that draw prompts from a taxonomy alone."""
    if recipe.source is None:
        return None
    return Source(recipe.source, recipe.resolve(recipe.source.path))


def build_stages(
    recipe: Recipe,
    stats: RunStats,
    *,
    limit: int | None = None,
    runtime: Runtime | None = None,
    reject_sink: Callable[[str], RejectSink] | None = None,
    workdir: Path | None = None,
) -> list[Stage]:
    """Instantiate the recipe's stages (templates, taxonomies and schemas are checked here, before any request)."""
    return [build_stage(recipe, index, stats, limit=limit, runtime=runtime, reject_sink=reject_sink, workdir=workdir)
            for index in range(len(recipe.stage_specs))]


def build_stage(
    recipe: Recipe,
    index: int,
    stats: RunStats,
    *,
    limit: int | None = None,
    runtime: Runtime | None = None,
    reject_sink: Callable[[str], RejectSink] | None = None,
    workdir: Path | None = None,
) -> Stage:
    """Instantiate stage `index` of the recipe (what a worker of a distributed engine builds for itself)."""
    spec = recipe.stage_specs[index]
    params, field = spec.params, f"stages[{index}].{spec.name}"
    count = params.count if isinstance(params, GenerateParams) else None
    if STAGES[spec.name].is_source:
        if index > 0 or recipe.source is not None:
            message = f"'{spec.name}' makes records from nothing: it must be the first stage of a recipe without `source`"
            raise ConfigError(str(recipe.path), field, message)
        if limit is not None:
            params = params.model_copy(update={"count": min(params.count, limit)})  # type: ignore[attr-defined]
    elif index == 0 and recipe.source is None:
        if count is None:
            message = "with no `source`, the first stage must be a generate stage with `count`"
            raise ConfigError(str(recipe.path), field, message)
        if limit is not None:
            params = params.model_copy(update={"count": min(count, limit)})
    elif count is not None:
        raise ConfigError(
            str(recipe.path), f"{field}.count", "`count` applies only to the first stage of a recipe without a `source`"
        )
    label = f"{index:02d}-{spec.name}"
    ctx = StageContext(
        label=label, key=stage_key(recipe, index), index=index, seed=recipe.seed, recipe_path=recipe.path,
        prompts_dir=recipe.resolve(recipe.prompts_dir), resolve=recipe.resolve, stats=stats,
        reject=reject_sink(label) if reject_sink else discard_rejects, runtime=runtime, workdir=workdir,
    )
    return STAGES[spec.name](params, ctx)


def stage_key(recipe: Recipe, index: int) -> str:
    """The position-independent name of stage `index`: its kind, numbered from the second stage of that kind."""
    name = recipe.stage_specs[index].name
    occurrence = sum(spec.name == name for spec in recipe.stage_specs[: index + 1])
    return name if occurrence == 1 else f"{name}.{occurrence}"


def open_runtime(recipe: Recipe, run_dir: RunDir, stats: RunStats, stack: ExitStack) -> Runtime:
    """The recipe's backend behind the run directory's request cache, on its own event loop; `stack` closes them.
    A backend may name its model and add to its identity (`model_name`, `identity`: e.g. a model file's sha256)."""
    loop = LoopThread()
    stack.callback(loop.close)
    backend = create_backend(recipe.backend, BackendContext(stats, stack, run_dir.backend_dir))
    stack.callback(lambda: loop.run(backend.aclose()))
    identity = {**recipe.backend.identity(), **getattr(backend, "identity", {})}
    cache = RequestCache(run_dir.cache_path, identity)
    stack.callback(cache.close)
    return Runtime(CachedBackend(backend, cache, stats), loop, getattr(backend, "model_name", recipe.backend.model),
                   recipe.backend.kind, max_pending=recipe.backend.max_pending(), identity=identity)


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
                                  workdir=run_dir.checkpoints)
            fingerprints = stage_fingerprints(recipe, len(stages), limit, runtime.identity)
            start = resume_point(run_dir, stages, fingerprints, stats, retry_rejects)
            if start == len(stages) and state.get("finished") == fingerprints[-1] and run_dir.dataset_path.exists():
                with run_dir.dataset_path.open("rb") as handle:
                    return RunResult(run_dir, stats, sum(1 for _ in handle))  # finished: nothing to redo or rewrite
            stats.expected_requests = _expected_requests(stages, source, limit, start)
            frozen = recipe.model_dump(mode="json", by_alias=True)
            frozen["stages"] = [{spec.name: spec.params.model_dump(mode="json", by_alias=True, exclude_none=True)}
                                for spec in recipe.stage_specs]  # every parameter spelled out, defaults included
            run_dir.write_recipe({**frozen, "run": {"limit": limit, "command": command, "backend": runtime.identity}})

            stream: Iterable[Record] = read_checkpoint(run_dir, stages[start - 1]) if start else limited(source, limit)
            wrappers: list[Generator[Record, None, None]] = []
            for stage, fingerprint in zip(stages[start:], fingerprints[start:], strict=True):
                wrappers.append(checkpointed(stage, stream, run_dir, fingerprint, rejects, executor))
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


def limited(source: Source | None, limit: int | None) -> Iterator[Record]:
    """The source's records, at most `limit` of them (none without a source)."""
    if source is None:
        return
    for count, record in enumerate(source):
        if limit is not None and count >= limit:
            return
        yield record


def _expected_requests(stages: list[Stage], source: Source | None, limit: int | None, start: int) -> int | None:
    """Requests the generate stages will make, assuming filters drop nothing (for the progress bar)."""
    records = (source.estimate() or 0) if source is not None else 0
    if limit is not None and records:
        records = min(records, limit)
    total = 0
    for index, stage in enumerate(stages):
        if not isinstance(stage, Generate):
            continue
        records = (stage.params.count or records or 0) * stage.params.n
        if index >= start:
            total += records
    return total or None
