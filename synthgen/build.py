"""Building a recipe's parts: its source, its stages (checked before any request) and its backend runtime."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

from synthgen.aio import LoopThread
from synthgen.backends.factory import BackendContext, create_backend
from synthgen.backends.settings import BackendConfig
from synthgen.cache import CachedBackend, RequestCache
from synthgen.errors import ConfigError
from synthgen.recipe import Recipe
from synthgen.record import Record
from synthgen.rundir import RunDir
from synthgen.runtime import Runtime
from synthgen.stages.base import RejectSink, RunPaths, Stage, StageContext, discard_rejects
from synthgen.stages.registry import stage_class
from synthgen.stages.source import Source
from synthgen.stats import RunStats


def open_source(recipe: Recipe) -> Source | None:
    """The recipe's input source, or None for recipes that draw prompts from a taxonomy alone."""
    if recipe.source is None:
        return None
    return Source(recipe.source, recipe.resolve(recipe.source.path))


def limited(source: Source | None, limit: int | None) -> Iterator[Record]:
    """The source's records, at most `limit` of them (none without a source)."""
    if source is None:
        return
    for count, record in enumerate(source):
        if limit is not None and count >= limit:
            return
        yield record


def run_paths(run_dir: RunDir) -> RunPaths:
    """The parts of `run_dir` its stages may use."""
    return RunPaths(run=run_dir.path, stages=run_dir.checkpoints, recipe=run_dir.pending_recipe_path)


def build_stages(
    recipe: Recipe,
    stats: RunStats,
    *,
    limit: int | None = None,
    runtime: Runtime | None = None,
    reject_sink: Callable[[str], RejectSink] | None = None,
    paths: RunPaths | None = None,
) -> list[Stage]:
    """Instantiate the recipe's stages (templates, taxonomies and schemas are checked here, before any request)."""
    return [build_stage(recipe, index, stats, limit=limit, runtime=runtime, reject_sink=reject_sink, paths=paths)
            for index in range(len(recipe.stage_specs))]


def build_stage(
    recipe: Recipe,
    index: int,
    stats: RunStats,
    *,
    limit: int | None = None,
    runtime: Runtime | None = None,
    reject_sink: Callable[[str], RejectSink] | None = None,
    paths: RunPaths | None = None,
) -> Stage:
    """Instantiate stage `index` of the recipe (what a worker of a distributed engine builds for itself)."""
    spec = recipe.stage_specs[index]
    cls = stage_class(spec.name)
    params, field = spec.params, f"stages[{index}].{spec.name}"
    count = cls.draw_count(params)
    if cls.is_source:
        if index > 0 or recipe.source is not None:
            message = f"'{spec.name}' makes records from nothing: it must be the first stage of a recipe without `source`"
            raise ConfigError(str(recipe.path), field, message)
    elif index == 0 and recipe.source is None:
        if count is None:
            message = "with no `source`, the first stage must be a generate stage with `count`"
            raise ConfigError(str(recipe.path), field, message)
    elif count is not None:
        raise ConfigError(
            str(recipe.path), f"{field}.count", "`count` applies only to the first stage of a recipe without a `source`"
        )
    if count is not None and limit is not None:
        params = params.model_copy(update={"count": min(count, limit)})
    label = stage_label(recipe, index)
    ctx = StageContext(
        label=label, key=stage_key(recipe, index), index=index, seed=recipe.seed, recipe_path=recipe.path,
        prompts_dir=recipe.resolve(recipe.prompts_dir), resolve=recipe.resolve, stats=stats,
        reject=reject_sink(label) if reject_sink else discard_rejects, runtime=runtime, run_paths=paths,
    )
    return cls(params, ctx)


def stage_label(recipe: Recipe, index: int) -> str:
    """What stage `index`'s files and counters are named by: `02-generate`."""
    return f"{index:02d}-{recipe.stage_specs[index].name}"


def stage_key(recipe: Recipe, index: int) -> str:
    """The position-independent name of stage `index`: its kind, numbered from the second stage of that kind."""
    name = recipe.stage_specs[index].name
    occurrence = sum(spec.name == name for spec in recipe.stage_specs[: index + 1])
    return name if occurrence == 1 else f"{name}.{occurrence}"


def open_runtime(recipe: Recipe, run_dir: RunDir, stats: RunStats, stack: ExitStack) -> Runtime:
    """The recipe's backend behind the run directory's request cache, on its own event loop; `stack` closes them.
    A backend may name its model and add to its identity (`model_name`, `identity`: e.g. a model file's sha256).
    Each of the recipe's named `backends:` gets a runtime of its own on the same loop and cache file (its identity
    keeps its keys apart), in `Runtime.named`."""
    loop = LoopThread()
    stack.callback(loop.close)
    runtime = _backend_runtime(recipe.backend, run_dir.backend_dir, run_dir, stats, stack, loop)
    runtime.named = {name: _backend_runtime(config, run_dir.backend_dir / name, run_dir, stats, stack, loop)
                     for name, config in recipe.backends.items()}
    return runtime


def _backend_runtime(config: BackendConfig, state_dir: Path, run_dir: RunDir, stats: RunStats, stack: ExitStack,
                     loop: LoopThread) -> Runtime:
    """One backend, cached, on `loop`."""
    backend = create_backend(config, BackendContext(stats, stack, state_dir))
    stack.callback(lambda: loop.run(backend.aclose()))
    identity = {**config.identity(), **getattr(backend, "identity", {})}
    cache = RequestCache(run_dir.cache_path, identity)
    stack.callback(cache.close)
    return Runtime(CachedBackend(backend, cache, stats), loop, getattr(backend, "model_name", config.model),
                   config.kind, max_pending=config.max_pending(), identity=identity)
