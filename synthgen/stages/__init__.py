"""Stages and their registry; importing this package registers the built-in stages."""

from synthgen.stages import dedup, filters, generate
from synthgen.stages.base import STAGES, Filter, Stage, StageContext, StageParams, register

__all__ = ["STAGES", "Filter", "Stage", "StageContext", "StageParams", "register", "dedup", "filters", "generate"]
