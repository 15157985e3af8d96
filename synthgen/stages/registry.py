"""The stage registry: stage names to classes, found through the `synthgen.stages` entry-point group.

The built-in stages are declared in synthgen's own `pyproject.toml` exactly as a plugin package declares its own:

    [project.entry-points."synthgen.stages"]
    my_stage = "my_package.module:MyStage"   # a Stage subclass whose `name` is "my_stage"

A stage module is imported only when a recipe names its stage. A stage class defined in a script or a notebook,
which no package installs, is added with `register(cls)`.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from synthgen.errors import ConfigError

if TYPE_CHECKING:
    from synthgen.stages.base import Stage

ENTRY_POINT_GROUP = "synthgen.stages"
_REGISTERED: dict[str, type[Stage]] = {}  # stages added at run time with `register`


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_stages() -> list[str]:
    """The stage names available: installed (built-in and plugins) and registered at run time."""
    return sorted({*_entry_points(), *_REGISTERED})


def stage_class(name: str) -> type[Stage]:
    """The stage class called `name` (its module is imported now); ConfigError when no stage has that name."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    entry = _entry_points().get(name)
    if entry is None:
        raise ConfigError("recipe", "stages", f"unknown stage '{name}'; known stages: {known_stages()}")
    cls: type[Stage] = entry.load()
    return cls


def register(cls: type[Stage]) -> type[Stage]:
    """Add a stage class defined at run time (a script, a notebook, a test) under its `name`; usable as a decorator."""
    _REGISTERED[cls.name] = cls
    return cls
