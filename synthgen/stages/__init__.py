"""Stages and their registry; importing this package registers the built-in stages."""

from synthgen.stages import (
    augment,
    dedup,
    eda,
    export,
    filters,
    generate,
    grammar,
    masking,
    semantic,
    similarity,
    transform,
)
from synthgen.stages.base import STAGES, Filter, Stage, StageContext, StageParams, register

__all__ = ["STAGES", "Filter", "Stage", "StageContext", "StageParams", "register",
           "augment", "dedup", "eda", "export", "filters", "generate", "grammar", "masking", "semantic", "similarity",
           "transform"]

import synthgen.recipes  # noqa: E402,F401  (registers the recipe stages, after the built-ins they build on)
