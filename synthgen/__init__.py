"""synthgen: turn seed data and a task taxonomy into large, clean, diverse synthetic datasets.

The Python API (`synthgen.api`) is re-exported here, imported on first use so `import synthgen` stays light:
`synthgen.run`, `synthgen.load_recipe`, `synthgen.recipe_from_dict`, `synthgen.open_run`, `synthgen.RunOutput`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from synthgen.version import __version__

__all__ = ["__version__", "RunOutput", "configure", "load_recipe", "open_run", "recipe_from_dict", "run"]

if TYPE_CHECKING:
    from synthgen.api import RunOutput, configure, load_recipe, open_run, recipe_from_dict, run


def __getattr__(name: str) -> Any:
    """The API's names, imported from synthgen.api when first asked for."""
    if name in __all__:
        from synthgen import api

        return getattr(api, name)
    raise AttributeError(f"module 'synthgen' has no attribute {name!r}")
