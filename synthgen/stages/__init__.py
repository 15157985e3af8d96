"""Stages: one job each over a stream of records. Names resolve through `synthgen.stages.registry` (entry points)."""
