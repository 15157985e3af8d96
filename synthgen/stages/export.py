"""Exporting a run: as the last stage of a recipe, or afterwards from its run directory (`synthgen export`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

import orjson
from pydantic import field_validator

from synthgen.card import dataset_card
from synthgen.errors import RunDirError
from synthgen.export import ExportConfig, ExportResult, export_records
from synthgen.record import Record
from synthgen.stages.base import Stage, StageParams, register


class ExportParams(ExportConfig, StageParams):
    """Export settings, plus where to write: a folder inside the run directory (default `export`)."""

    out: str = "export"

    @field_validator("out")
    @classmethod
    def _inside_run_dir(cls, out: str) -> str:
        path = PurePosixPath(out.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(f"{out!r} must be a relative folder inside the run directory (no '..', not absolute)")
        return out


@register
class Export(Stage):
    """Passes records through and, once they are all seen, writes them in the chosen layout with a card."""

    name = "export"
    Params = ExportParams
    params: ExportParams

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        kept: list[Record] = []
        for record in records:
            kept.append(record)
            yield record
        if self.ctx.workdir is None:
            return
        run_dir = self.ctx.workdir.parent
        out = run_dir / self.params.out
        recipe_text = (run_dir / "recipe.yaml").read_text(encoding="utf-8")
        stats = self.ctx.stats.to_dict()
        config = ExportConfig.model_validate(self.params.model_dump(exclude={"out"}))
        export_records(kept, config, out, lambda result: dataset_card(recipe_text, stats, config, result))


def export_run(run_dir: Path, config: ExportConfig, out: Path | None = None) -> ExportResult:
    """Export a finished run directory's dataset.jsonl, with a card built from its recipe and stats."""
    dataset, stats_path, recipe_path = run_dir / "dataset.jsonl", run_dir / "stats.json", run_dir / "recipe.yaml"
    for path in (dataset, stats_path, recipe_path):
        if not path.exists():
            raise RunDirError(f"{run_dir}: no {path.name}; is this a finished synthgen run directory?")
    recipe_text = recipe_path.read_text(encoding="utf-8")
    stats = orjson.loads(stats_path.read_bytes())

    def records() -> Iterator[Record]:
        with dataset.open("rb") as handle:
            for line in handle:
                yield Record.from_json(line)

    return export_records(records(), config, out or run_dir / "export",
                          lambda result: dataset_card(recipe_text, stats, config, result))
