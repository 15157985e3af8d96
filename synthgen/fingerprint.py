"""Checkpoint fingerprints: per stage, a hash of everything its output depends on.

A stage's checkpoint is reused only while its fingerprint is unchanged. The fingerprint chains, stage by stage:
the recipe seed, the backend's identity (`BackendConfig.identity`) and model (and each named backend's), the
source settings and the content of the input, the prompt templates' content, `--limit`, and each stage's name and
parameters in which every file a parameter names (at any depth: decontamination sets, corpora, reference
indexes...) is replaced by a hash of its content and every `schema_model` by a hash of its module's source. Paths
enter only through what they point at, so `data/x.jsonl` and `/abs/.../data/x.jsonl` give one fingerprint, and a
file edited in place (even within the same second) gives a new one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthgen.errors import InputError
from synthgen.hashing import content_hash, file_digest
from synthgen.recipe import Recipe
from synthgen.stages.source import Source, SourceConfig


def stage_fingerprints(recipe: Recipe, stage_count: int, limit: int | None,
                       backend_identity: dict[str, Any] | None = None,
                       named_identities: dict[str, Any] | None = None) -> list[str]:
    """The fingerprints of the recipe's first `stage_count` stages; `backend_identity` is the running backend's
    (its config's identity plus what it adds, such as a model file's sha256), `named_identities` the same of each
    of the recipe's named `backends:` with its model (from their configs when not given)."""
    source = None
    if recipe.source is not None:
        source = [_with_files(recipe.source.model_dump(mode="json"), recipe.resolve),
                  _source_digest(recipe.source, recipe.resolve(recipe.source.path))]
    templates = _folder_digest(recipe.resolve(recipe.prompts_dir))
    identity = backend_identity or recipe.backend.identity()
    chain: Any = [recipe.seed, identity, recipe.backend.model, source, templates, limit]
    if recipe.backends:  # absent otherwise, so a recipe with one backend keeps its fingerprints
        chain.append(named_identities or {name: [config.identity(), config.model]
                                          for name, config in recipe.backends.items()})
    prints = []
    for spec in recipe.stage_specs[:stage_count]:
        params = spec.params.model_dump(mode="json", by_alias=True)
        chain = [chain, spec.name, _with_files(params, recipe.resolve)]
        prints.append(content_hash(chain))
    return prints


def _source_digest(config: SourceConfig, path: Path) -> str | None:
    """The digest of what the source at `path` reads: its file or folder, or for a `files` source (a folder or a
    glob such as `docs/**/*.pdf`) every file it lists, by name and content."""
    try:
        source = Source(config, path)
    except InputError:
        return None  # absent: the run reports it when it opens the source
    if source.format != "files":
        return _folder_digest(path)
    base, files = source.listing()
    return content_hash([[p.relative_to(base).as_posix(), file_digest(p)] for p in files])


def _folder_digest(path: Path) -> str | None:
    """A file's digest, or a folder's: every file under it by relative path and content; None if absent."""
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return content_hash([[p.relative_to(path).as_posix(), file_digest(p)] for p in files])


def _with_files(value: Any, resolve: Callable[[str], Path], key: str = "") -> Any:
    """`value` with each string that names an existing file replaced by the file's digest (at any depth), and a
    `schema_model` by the digest of its module's source."""
    if isinstance(value, dict):
        return {k: _with_files(v, resolve, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_files(v, resolve, key) for v in value]
    if not isinstance(value, str) or not value:
        return value
    if key == "schema_model":
        return {"schema_model": value, "source": _module_digest(value)}
    path = resolve(value)
    return {"file": file_digest(path)} if path.is_file() else value


def _module_digest(dotted: str) -> str | None:
    """The digest of the source file of `package.module:Model` (None when it cannot be found: the stage's own
    check reports that)."""
    try:
        module = importlib.import_module(dotted.partition(":")[0])
    except (ImportError, ValueError):
        return None
    origin = getattr(module, "__file__", None)
    return file_digest(Path(origin)) if origin and Path(origin).is_file() else None
