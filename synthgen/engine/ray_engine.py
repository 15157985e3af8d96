"""The Ray Data engine (`synthgen run --engine ray`): the same recipe on a laptop's local Ray or on a cluster.

The local pipeline stays the driver: it resumes from stage checkpoints, counts, and writes rejects and the
dataset exactly as without Ray. What changes is where a stage runs:
- row-wise stages (generate, filters, transforms, masking) run on a pool of Ray actors, one block of
  records (or of draws) per task. Each actor builds the stage with its own backend over the run's request
  cache (`backend.rpm` and `tpm` divided among the actors, so the run keeps the recipe's budget), and each
  finished block is checkpointed in `checkpoints/<stage>.blocks/`, so a killed job resumes block by block,
  and within a block request by request (Ray Data has no resume of its own);
- exact and MinHash dedup run distributed (`ray_dedup`: groupby on digests and LSH bands across the whole
  dataset), deciding as the local stages do;
- embedding stages (semantic dedup, diversity selection) get their vectors from Ray actors (a GPU each when
  the cluster has GPUs) through the run's embedding cache, then decide on the driver over all of them;
- every other stage (loops such as Self-Instruct, augmentation, export) runs on the driver.
Blocks keep their input order (`preserve_order`), so the output is the local engine's, record for record.
Workers read and write the run directory: on a cluster it must sit on a filesystem every node mounts.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import orjson

from synthgen.checkpoints import read_reject
from synthgen.dedup.index import Match
from synthgen.engine.ray_workers import (
    BlockWorker,
    EmbeddingWorker,
    block_lines,
    raise_reported,
    read_records,
    record_rows,
    run_block,
)
from synthgen.errors import ConfigError, RunDirError
from synthgen.hashing import content_hash
from synthgen.recipe import Recipe
from synthgen.record import Record
from synthgen.stages.base import Stage
from synthgen.stages.dedup import ExactDedupParams, MinHashDedupParams, reject_duplicate
from synthgen.stages.spill import read_spill, write_spill
from synthgen.stats import RunStats


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run: `address` None starts a local Ray with `num_cpus`."""

    address: str | None = None
    workers: int = 2  # actors per row-wise stage (each with the backend's full window, and a share of rpm/tpm)
    block_size: int = 512  # records or draws per task
    num_cpus: int | None = None
    gpus_per_worker: float = 0.0  # e.g. 1 for `kind: vllm` or `transformers` on GPU nodes: one engine per GPU
    object_store_mb: int | None = None  # a local Ray's shared-memory object store (None: Ray's 30% of RAM); Ray
    # Data spills what does not fit to disk, so a small store bounds the memory a million-record run maps


class RayExecutor:
    """Runs the recipe's stages on Ray (see the module docstring); a context manager that starts and stops Ray."""

    def __init__(self, recipe: Recipe, out: str | Path, limit: int | None, options: RayOptions) -> None:
        require_ray()
        self.recipe, self.run_path, self.limit, self.options = recipe, Path(out), limit, options
        self._session = ExitStack()

    def __enter__(self) -> RayExecutor:
        self._session.enter_context(ray_session(self.options.address, self.options.num_cpus, self.options.object_store_mb))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._session.close()

    def __call__(self, stage: Stage, records: Iterable[Record], fingerprint: str) -> Iterable[Record]:
        if stage.row_wise:
            return self._in_blocks(stage, records, fingerprint)
        if stage.distributed_form in DISTRIBUTED:
            return dedup_on_ray(stage, records, self.options.block_size)
        if stage.embedded_texts() is not None:
            return self._embedded_first(stage, records)
        return stage.run(records)

    def _in_blocks(self, stage: Stage, records: Iterable[Record], fingerprint: str) -> Iterator[Record]:
        """The stage on the actor pool, block by block; outputs and rejects come back in input order."""

        folder = stage_folder(stage) / f"{stage.ctx.label}.blocks"
        folder.mkdir(exist_ok=True)
        draws = type(stage).draw_count(stage.params)
        if draws is not None:
            for _ in records:  # a first stage: its input stream is empty
                pass
            spans = _spans(draws, self.options.block_size)
            tasks: list[dict[str, Any]] = [{"block": k, "draws": span} for k, span in enumerate(spans)]
        else:
            groups = write_spill(records, folder / "input.parquet", self.options.block_size)
            tasks = [{"block": k, "group": k} for k in range(groups)]
        for task in tasks:
            task["fingerprint"] = content_hash([fingerprint, task])
        if tasks:
            for done in self._map(tasks, stage, folder).iter_rows():
                raise_reported(done)
                _add_requests(stage.ctx.stats, orjson.loads(done["stats"]))
                yield from read_records(folder / f"{done['block']:06d}.jsonl")
                for line in block_lines(folder / f"{done['block']:06d}.rejects.jsonl"):
                    stage.ctx.reject(*read_reject(line))
        shutil.rmtree(folder)

    def _map(self, tasks: list[dict[str, Any]], stage: Stage, folder: Path) -> Any:
        """Blocks of a generating stage go to a pool of actors, each with its backend kept warm across blocks;
        blocks of a stage without requests (a filter, a transform) are plain tasks."""
        import ray

        blocks = ray.data.from_items(tasks, override_num_blocks=len(tasks))
        setup = {"recipe": self.recipe, "run_path": str(self.run_path), "index": stage.ctx.index, "limit": self.limit,
                 "folder": str(folder)}
        if not stage.makes_requests:
            return blocks.map(run_block, fn_kwargs=setup)
        actors = min(self.options.workers, len(tasks))
        setup["recipe"] = share_rate_limits(self.recipe, actors)
        return blocks.map(BlockWorker, fn_constructor_kwargs={**setup, "with_backend": True},  # type: ignore[arg-type]
                          compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=self.options.gpus_per_worker)

    def _embedded_first(self, stage: Stage, records: Iterable[Record]) -> Iterator[Record]:
        """Embeddings computed on Ray actors (one GPU each when the cluster has GPUs) into the run's embedding
        cache; the stage then decides on the driver over the gathered vectors, which it reads from that cache."""
        import ray

        if stage.ctx.run_paths is None:
            raise RunDirError(f"stage {stage.ctx.label}: embedding on Ray needs a run directory (its embedding cache)")
        paths = stage.ctx.run_paths
        path = stage_folder(stage) / f"{stage.ctx.label}.input.parquet"
        groups = write_spill(records, path, self.options.block_size)
        if groups:
            model, batch_size, fields = stage.embedded_texts() or ("", 0, [])
            gpus = int(ray.cluster_resources().get("GPU", 0))
            setup = {"model": model, "batch_size": batch_size, "fields": fields,
                     "cache_dir": str(paths.run), "device": "cuda" if gpus else "cpu"}
            blocks = ray.data.from_items([{"path": str(path), "group": k} for k in range(groups)],
                                         override_num_blocks=groups)
            embedded = blocks.map(EmbeddingWorker, fn_constructor_kwargs=setup,  # type: ignore[arg-type]
                                  compute=ray.data.ActorPoolStrategy(size=max(1, min(gpus or self.options.workers, groups))),
                                  num_gpus=1 if gpus else 0)
            for done in embedded.iter_rows():
                raise_reported(done)
        yield from stage.run(read_spill(path))
        path.unlink()


def share_rate_limits(recipe: Recipe, actors: int) -> Recipe:
    """The recipe one of `actors` actors runs: `backend.rpm` and `backend.tpm` divided among them, since each
    actor's backend limits only its own requests and the recipe's budget is for the whole run."""
    backend = recipe.backend
    shares = {name: limit / actors for name in ("rpm", "tpm") if (limit := getattr(backend, name)) is not None}
    return recipe.model_copy(update={"backend": backend.model_copy(update=shares)}) if shares else recipe


def require_ray() -> None:
    """A ConfigError naming the extra when Ray is not installed."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--engine", None, "the Ray engine needs Ray: pip install 'synthgen[ray]'")


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, object_store_mb: int | None = None) -> Iterator[None]:
    """Ray connected (to `address`, or a local Ray started here with `num_cpus` and an object store of
    `object_store_mb`, and stopped after) and set up for synthgen."""
    import ray

    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
        store = object_store_mb << 20 if object_store_mb and address is None else None
        ray.init(address=address, num_cpus=num_cpus, object_store_memory=store, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.shuffle_strategy = shuffle_strategy(0)  # dedup_on_ray picks one per input
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # per-dataset execution notes; synthgen shows progress
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def dedup_on_ray(stage: Stage, records: Iterable[Record], block_size: int) -> Iterator[Record]:
    """`stage`'s decisions made across the whole input on Ray (`ray_dedup`); the input then streams through in
    order, duplicates going to the stage's rejects. Spills the input to the stage's folder."""
    import ray

    path = stage_folder(stage) / f"{stage.ctx.label}.input.parquet"
    groups = write_spill(records, path, block_size)
    blocks = [{"path": str(path), "group": k, "first": k * block_size} for k in range(groups)]
    ray.data.DataContext.get_current().shuffle_strategy = shuffle_strategy(groups)  # a dataset copies the context
    rows = ray.data.from_items(blocks, override_num_blocks=max(1, groups)).flat_map(record_rows)
    partitions = max(1, min(groups, 4 * int(ray.cluster_resources().get("CPU", 1))))  # groupby shuffle width
    decide = DISTRIBUTED.get(stage.distributed_form or "")
    if decide is None:
        raise ConfigError(str(stage.ctx.recipe_path), stage.ctx.label, f"'{stage.name}' has no distributed form")
    dropped = decide(rows, stage, partitions)
    for record in read_spill(path):
        if record.id in dropped:
            reject_duplicate(stage.ctx, record, *dropped[record.id])
        else:
            yield record
    path.unlink()


def shuffle_strategy(blocks: int) -> Any:
    """The dedup groupbys' shuffle for an input of `blocks` blocks. Ray's hash shuffle starts aggregator actors
    for each groupby (~2 s: a 10k-record exact dedup takes 5.6 s, 3.7 s with the task-based sort shuffle);
    the sort shuffle's driver memory and time grow faster than its input (300k records: +1.5 GB in the driver
    and 135 s, against +60 MB and 53 s hashed), so it serves only small inputs."""
    import ray.data

    strategy = ray.data.context.ShuffleStrategy
    return strategy.HASH_SHUFFLE if blocks >= HASH_SHUFFLE_BLOCKS else strategy.SORT_SHUFFLE_PULL_BASED


HASH_SHUFFLE_BLOCKS = 64  # 32k records at the default block size


def _exact(rows: Any, stage: Stage, partitions: int) -> dict[str, tuple[str, Match]]:
    from synthgen.engine.ray_dedup import exact_duplicates

    found = exact_duplicates(rows, cast(ExactDedupParams, stage.params), partitions)
    return {key: ("exact_duplicate", match) for key, match in found.items()}


def _minhash(rows: Any, stage: Stage, partitions: int) -> dict[str, tuple[str, Match]]:
    from synthgen.engine.ray_dedup import minhash_duplicates

    found = minhash_duplicates(rows, cast(MinHashDedupParams, stage.params), stage.ctx, partitions)
    stage.ctx.stats.metrics.setdefault(stage.ctx.label, {})["clusters"] = len(set(found.clusters.values()))
    return found.dropped


# a stage's `distributed_form` -> its decisions over the whole input on Ray: record id -> (reason, match)
DISTRIBUTED: dict[str, Callable[[Any, Stage, int], dict[str, tuple[str, Match]]]] = {
    "exact_dedup": _exact, "minhash_dedup": _minhash,
}


def stage_folder(stage: Stage) -> Path:
    """The stage's folder (in the run directory), where the engine spills its input and blocks."""
    if stage.ctx.workdir is None:
        raise RunDirError(f"stage {stage.ctx.label}: the Ray engine needs a run directory")
    return stage.ctx.workdir


def _add_requests(stats: RunStats, delta: dict[str, int]) -> None:
    for name, value in delta.items():
        if name.startswith("retry:"):
            stats.retries[name.removeprefix("retry:")] += value
        else:
            setattr(stats, name, getattr(stats, name) + value)


def _spans(total: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, total)) for start in range(0, total, size)]
