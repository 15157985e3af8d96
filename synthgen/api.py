"""The Python API for notebooks and scripts: load or build a recipe, run it, read the records back.

    import synthgen

    output = synthgen.run("recipes/quickstart.yaml", backend="sim", limit=20)
    dataset = output.to_dataset()          # a memory-mapped datasets.Dataset: id + the record's fields
    output.stats["stages"]                 # stats.json: records per stage, requests, tokens, rejects

The CLI's `run` command is a thin layer over `run` here; errors are the library's (`synthgen.errors`), never
SystemExit, so a notebook sees a ConfigError naming the recipe's field.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from synthgen.backends.factory import BackendConfig
from synthgen.config import validate
from synthgen.errors import ConfigError, RunDirError
from synthgen.recipe import Recipe, load_recipe, recipe_from_data
from synthgen.record import Record
from synthgen.rundir import RunDir
from synthgen.stats import RunStats

if TYPE_CHECKING:
    import datasets

    from synthgen.engine.ray_engine import RayOptions

__all__ = ["RunOutput", "configure", "load_recipe", "open_run", "recipe_from_dict", "run"]

RecipeLike = Recipe | str | Path


def recipe_from_dict(data: Mapping[str, Any], base_dir: str | Path = ".") -> Recipe:
    """A recipe defined in code: the mapping a recipe YAML file holds; its relative paths (templates,
    taxonomies, inputs) resolve against `base_dir`, and messages name it `<recipe>`."""
    return recipe_from_data(copy.deepcopy(dict(data)), Path(base_dir) / "<recipe>")


def configure(recipe: RecipeLike, *, backend: str | None = None, model: str | None = None,
              base_url: str | None = None, max_concurrency: int | None = None) -> Recipe:
    """The recipe (or the recipe file) with the given backend settings replacing its own; a `base_url`
    without a `backend` means kind `openai` (the server named is the one to talk to, whatever the recipe's kind)."""
    loaded = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if base_url is not None and backend is None:
        backend = "openai"
    updates = {key: value for key, value in
               {"kind": backend, "model": model, "base_url": base_url, "max_concurrency": max_concurrency}.items()
               if value is not None}
    validate(BackendConfig, {**loaded.backend.model_dump(exclude_unset=True), **updates}, str(loaded.path), "backend")
    return loaded.with_backend(**updates)


def run(recipe: RecipeLike, out: str | Path | None = None, *, backend: str | None = None,
        model: str | None = None, base_url: str | None = None, max_concurrency: int | None = None,
        limit: int | None = None, fresh: bool = False, retry_rejects: bool = True, ray: RayOptions | None = None,
        stats: RunStats | None = None, command: str | None = None) -> RunOutput:
    """Run a recipe (object or file) into `out` (default outputs/<recipe name>), resuming an earlier run there,
    and return its output. The keyword arguments are the `synthgen run` options: backend overrides, `limit`
    (first N input records or draws), `fresh` (discard earlier results), `retry_rejects`, `ray` (run on Ray
    with these options); `stats` counts this attempt live (for a progress display), `command` is recorded in
    the frozen recipe."""
    from synthgen.pipeline import run_recipe

    recipe = configure(recipe, backend=backend, model=model, base_url=base_url, max_concurrency=max_concurrency)
    if limit is not None and limit < 1:
        raise ConfigError(str(recipe.path), "limit", f"{limit} is not a number of records: give 1 or more, or None")
    run_dir = Path(out) if out is not None else Path("outputs") / recipe.name
    if ray is None:
        result = run_recipe(recipe, run_dir, fresh=fresh, limit=limit, stats=stats, command=command,
                            retry_rejects=retry_rejects)
    else:
        from synthgen.engine.ray_engine import RayExecutor

        with RayExecutor(recipe, run_dir, limit, ray) as executor:
            result = run_recipe(recipe, run_dir, fresh=fresh, limit=limit, stats=stats, command=command,
                                executor=executor, retry_rejects=retry_rejects)
    return RunOutput(run_dir, result.records)


def open_run(run_dir: str | Path) -> RunOutput:
    """The output of a run finished earlier (by `run` or the `synthgen run` command)."""
    paths = RunDir(run_dir)
    if not paths.dataset_path.is_file():
        raise RunDirError(f"{paths.path}: no dataset.jsonl; is this a finished synthgen run directory?")
    return RunOutput(paths.path, sum(1 for _ in _lines(paths.dataset_path)))


@dataclass(frozen=True)
class RunOutput:
    """A finished run: where it is and how many records it kept; records, rejects and stats are read from disk."""

    run_dir: Path
    num_records: int

    @property
    def dataset_path(self) -> Path:
        return RunDir(self.run_dir).dataset_path

    @property
    def rejects_path(self) -> Path:
        return RunDir(self.run_dir).rejects_path

    @property
    def stats_path(self) -> Path:
        return RunDir(self.run_dir).stats_path

    @cached_property
    def stats(self) -> dict[str, Any]:
        """stats.json: records in and out per stage, requests, cache hits, tokens, rejects by reason, wall time
        (summed over every attempt in the run directory)."""
        try:
            stats: dict[str, Any] = orjson.loads(self.stats_path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise RunDirError(f"{self.stats_path}: cannot read the run's stats ({exc})") from None
        return stats

    def __len__(self) -> int:
        return self.num_records

    def records(self) -> Iterator[Record]:
        """The kept records in order, streamed from dataset.jsonl."""
        return (Record.from_json(line) for line in _lines(self.dataset_path))

    def rejects(self) -> Iterator[dict[str, Any]]:
        """Every dropped record: `id`, `stage`, `reason`, `detail`, `fields`, `meta`."""
        return (orjson.loads(line) for line in _lines(self.rejects_path))

    def to_dataset(self, *, meta: bool = False, cache_dir: str | Path | None = None) -> datasets.Dataset:
        """The kept records as a `datasets.Dataset` (Arrow files in `cache_dir`, default the datasets cache,
        memory-mapped): an `id` column, one column per field, and with `meta` the provenance as a JSON string."""
        import datasets

        if not self.num_records:
            return datasets.Dataset.from_dict({"id": []})
        status = self.dataset_path.stat()  # in the cache key, so a re-run's dataset is never served stale
        return datasets.Dataset.from_generator(
            _rows, cache_dir=None if cache_dir is None else str(cache_dir),
            gen_kwargs={"path": str(self.dataset_path), "meta": meta, "version": f"{status.st_mtime_ns}-{status.st_size}"},
        )


def _rows(path: str, meta: bool, version: str) -> Iterator[dict[str, Any]]:
    """The table rows of `to_dataset` (`version` only keys the datasets cache)."""
    for line in _lines(Path(path)):
        record = Record.from_json(line)
        yield {"id": record.id, **record.fields, **({"meta": orjson.dumps(record.meta).decode()} if meta else {})}


def _lines(path: Path) -> Iterator[bytes]:
    """The non-empty lines of a JSONL file of the run directory (none if it is absent)."""
    if not path.exists():
        return
    with path.open("rb") as handle:
        yield from (line for line in handle if line.strip())
