"""Item 17 (issue 14): every shipped recipe estimates, dry-runs and renders; an unexpected exception in a stage
is one line naming the stage and the record, with the traceback only under --debug."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthgen.cli import app
from synthgen.record import Record
from synthgen.stages.base import Stage
from synthgen.stages.registry import register
from tests.conftest import REPO
from tests.test_bad_input import BASE, run

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[path.name for path in RECIPES])
@pytest.mark.parametrize("command", [["estimate"], ["run", "--dry-run"], ["render"]], ids=["estimate", "dry-run", "render"])
def test_item17_shipped_recipe_works(recipe: Path, command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, str(recipe.relative_to(REPO))])
    output = result.stdout + result.stderr
    assert result.exit_code == 0, output
    assert "error:" not in output and "Traceback" not in output
    if command == ["render"]:
        assert "--- prompt 1 (" in output or "nothing to render before a run" in output, output
    else:
        assert "requests:" in output and "cost: at most" in output


@register
class Explode(Stage):
    """A stage with a bug: it fails on the second record it sees."""

    name = "test_item17_explode"

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for count, record in enumerate(records):
            if count == 1:
                raise ValueError(f"kaboom at {record.id}")
            yield record


def test_item17_unexpected_exception_names_stage_and_record(tmp_path: Path) -> None:
    recipe = BASE + "  - test_item17_explode: {}\n"
    code, message, out = run(tmp_path, recipe)
    assert code == 1, message
    assert "error: internal error in stage 01-test_item17_explode (record " in message
    record = message.split("(record ", 1)[1].split(")", 1)[0]
    assert f"ValueError: kaboom at {record}" in message and "re-run with --debug for the traceback" in message
    assert "Traceback" not in message
    assert not (out / "dataset.jsonl").exists() and not list(out.rglob("*.tmp"))


def test_item17_debug_shows_the_traceback(tmp_path: Path) -> None:
    run(tmp_path, BASE)  # writes the recipe files
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.write_text(BASE + "  - test_item17_explode: {}\n")
    result = CliRunner().invoke(app, ["--debug", "run", str(recipe), "--out", str(tmp_path / "run2")])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and 'in run\n    raise ValueError(f"kaboom' in result.stderr
    assert "StageFailure: internal error in stage 01-test_item17_explode" in result.stderr
