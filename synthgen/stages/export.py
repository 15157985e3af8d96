"""Exporting a run: as the last stage of a recipe, or afterwards from its run directory (`synthgen export`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

import orjson
from pydantic import field_validator

from synthgen.card import dataset_card
from synthgen.errors import RunDirError
from synthgen.export import ExportConfig, ExportResult, export_records
from synthgen.fields import require_fields, stage_fields
from synthgen.record import Record
from synthgen.review import ids_with, read_review
from synthgen.rundir import RunDir, is_own_name, refuse_run_files
from synthgen.stages.base import StageParams, WholeSetStage
from synthgen.stages.spill import Spilled


class ExportParams(ExportConfig, StageParams):
    """Export settings, plus where to write: a folder inside the run directory (default `export`)."""

    out: str = "export"

    @field_validator("out")
    @classmethod
    def _inside_run_dir(cls, out: str) -> str:
        path = PurePosixPath(out.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(f"{out!r} must be a relative folder inside the run directory (no '..', not absolute)")
        if is_own_name(path.parts[0]):
            raise ValueError(f"{out!r} is where the run keeps its own {path.parts[0]}; choose another folder, e.g. export")
        return out


class Export(WholeSetStage):
    """Passes records through and, once they are all seen, writes them in the chosen layout with a card."""

    name = "export"
    Params = ExportParams
    params: ExportParams

    def prepare(self, records: Iterable[Record]) -> Iterable[Record]:
        return stage_fields(records, self, "fields")

    def emit(self, records: Spilled) -> Iterator[Record]:
        yield from records
        paths = self.ctx.run_paths
        if paths is None:
            return
        run_dir = RunDir(paths.run)
        out = run_dir.path / self.params.out
        refuse_run_files(run_dir.path, out)
        recipe_text = paths.recipe.read_text(encoding="utf-8")  # recipe.yaml once the run succeeds
        stats = self.ctx.stats.plus(run_dir.read_state().get("totals", {})).to_dict()  # as stats.json will say
        config = ExportConfig.model_validate(self.params.model_dump(exclude={"out"}))
        export_records(records, config, out, lambda result: dataset_card(recipe_text, stats, config, result),
                       allow_empty=True)


def export_run(run_dir: Path, config: ExportConfig, out: Path | None = None, approved_only: bool = False) -> ExportResult:
    """Export a finished run directory's dataset.jsonl, with a card built from its recipe and stats; records that
    review.jsonl excludes are left out (with `approved_only`, every record not approved), and the card counts them."""
    dataset, stats_path, recipe_path = run_dir / "dataset.jsonl", run_dir / "stats.json", run_dir / "recipe.yaml"
    for path in (dataset, stats_path, recipe_path):
        if not path.exists():
            raise RunDirError(f"{run_dir}: no {path.name}; is this a finished synthgen run directory?")
    recipe_text = recipe_path.read_text(encoding="utf-8")
    stats = orjson.loads(stats_path.read_bytes())

    decisions = read_review(run_dir)
    excluded, approved = ids_with(decisions, "excluded"), ids_with(decisions, "approved")
    review = {"excluded": 0, "approved": 0, "not approved": 0}  # dataset records, as the card reports them
    if decisions or approved_only:
        stats["review"] = review

    def records() -> Iterator[Record]:
        with dataset.open("rb") as handle:
            for line in handle:
                record = Record.from_json(line)
                if record.id in excluded or (approved_only and record.id not in approved):
                    review["excluded" if record.id in excluded else "not approved"] += 1
                    continue
                review["approved"] += record.id in approved
                yield record

    refuse_run_files(run_dir, out or run_dir / "export")
    rows = require_fields(records(), list(config.fields.values()), str(dataset), "--field")
    return export_records(rows, config, out or run_dir / "export",
                          lambda result: dataset_card(recipe_text, stats, config, result))
