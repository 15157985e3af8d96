"""The recipe: YAML parsed once into pydantic models; unknown keys rejected; errors name file and field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, field_validator

from synthgen.backends.settings import BackendConfig
from synthgen.config import StrictModel, load_yaml, validate
from synthgen.errors import ConfigError
from synthgen.stages.base import StageParams
from synthgen.stages.registry import stage_class
from synthgen.stages.source import SourceConfig


@dataclass(frozen=True)
class StageSpec:
    """One validated entry of `stages:`."""

    name: str
    params: StageParams


class Recipe(StrictModel):
    """A run's whole configuration. Relative paths resolve against the recipe's folder, then its parent
    (so `recipes/x.yaml` may name `prompts/...` from the project root), then the working directory."""

    name: str = Field(description="a plain name: the run directory is outputs/<name>")
    description: str = ""
    seed: int = 0
    prompts_dir: str = "prompts"
    backend: BackendConfig = Field(default_factory=BackendConfig)
    backends: dict[str, BackendConfig] = Field(default_factory=dict, description="more backends by name, for stages "
                                               "that name one (`backend: judge`); CLI overrides change only `backend`")
    source: SourceConfig | None = None
    stages: list[dict[str, Any]] = Field(min_length=1)
    run: dict[str, Any] | None = Field(default=None, description="written into frozen recipes (limit, command, the "
                                       "original recipe's folder); only `recipe_dir` is read, to resolve paths")

    _path: Path = PrivateAttr(default=Path("recipe.yaml"))
    _specs: list[StageSpec] = PrivateAttr(default_factory=list)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", name):  # so never '.', '..', a path or hidden
            raise ValueError(f"{name!r} is not a plain name: use letters, digits, '_', '-' and '.', not starting with '.' "
                             "(it names the run directory outputs/<name>)")
        return name

    @property
    def path(self) -> Path:
        return self._path

    @property
    def recipe_dir(self) -> Path:
        """The folder of the recipe as the user wrote it (for a frozen recipe, the original's folder)."""
        return Path((self.run or {}).get("recipe_dir") or self._path.parent.resolve())

    @property
    def stage_specs(self) -> list[StageSpec]:
        return self._specs

    def resolve(self, relative: str) -> Path:
        """Find a path the recipe names (see the class docstring); the first candidate if none exists."""
        path = Path(relative)
        if path.is_absolute():
            return path
        candidates = [self._path.parent / path, self._path.parent.parent / path]
        if origin := (self.run or {}).get("recipe_dir"):  # a frozen recipe: also where the original one was
            candidates += [Path(origin) / path, Path(origin).parent / path]
        candidates.append(Path.cwd() / path)
        return next((c for c in candidates if c.exists()), candidates[0])

    def with_backend(self, **overrides: Any) -> Recipe:
        """A copy whose backend settings are updated with the non-None `overrides`."""
        updates = {key: value for key, value in overrides.items() if value is not None}
        copy = self.model_copy(update={"backend": self.backend.model_copy(update=updates)})
        copy._path, copy._specs = self._path, self._specs
        return copy


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file, including every stage's parameters."""
    return recipe_from_data(load_yaml(path), path)


def recipe_from_data(data: Any, path: str | Path) -> Recipe:
    """Validate parsed recipe data; `path` names it in messages and anchors its relative paths."""
    path = Path(path)
    source = str(path)
    if not isinstance(data, dict):
        raise ConfigError(source, None, "a recipe is a YAML mapping with name, backend, source and stages")
    recipe = validate(Recipe, data, source)
    for where, config in [("backend", recipe.backend), *((f"backends.{n}", c) for n, c in recipe.backends.items())]:
        if config.sim:
            from synthgen.sim import SimConfig

            validate(SimConfig, config.sim, source, f"{where}.sim")
    specs = []
    for index, entry in enumerate(recipe.stages):
        if len(entry) != 1:
            raise ConfigError(source, f"stages[{index}]", "each stage is a mapping with one key, e.g. `- generate: {...}`")
        ((name, params),) = entry.items()
        try:
            cls = stage_class(name)
        except ConfigError as exc:
            raise ConfigError(source, f"stages[{index}]", exc.message) from None
        specs.append(StageSpec(name, validate(cls.Params, params or {}, source, f"stages[{index}].{name}")))
        named = getattr(specs[-1].params, "backend", None)  # a stage that asks another backend names it
        if isinstance(named, str) and named not in recipe.backends:
            raise ConfigError(source, f"stages[{index}].{name}.backend",
                              f"no backend named {named!r}; the recipe's `backends:` has {sorted(recipe.backends)}")
    recipe._path, recipe._specs = path, specs
    return recipe
