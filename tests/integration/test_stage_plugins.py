"""Stages are found through the `synthgen.stages` entry-point group: a plugin package installed beside synthgen
(here: a dist-info folder on PYTHONPATH) is named in a recipe like a built-in stage, and a stage module is
imported only when a recipe names its stage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from synthgen.stages.registry import known_stages, stage_class
from tests.conftest import REPO, read_jsonl, synthgen, write

PLUGIN = '''
from synthgen.record import Record
from synthgen.stages.base import Stage, StageParams


class ShoutParams(StageParams):
    field: str
    suffix: str = "!"


class ShoutField(Stage):
    """Upper-cases one field of every record and appends `suffix`."""

    name = "shout_field"
    Params = ShoutParams

    def run(self, records):
        for record in records:
            text = record.fields[self.params.field].upper() + self.params.suffix
            yield Record(record.id, {**record.fields, self.params.field: text}, record.meta)
'''

RECIPE = """
name: plugin
seed: 1
source: {path: items.jsonl}
stages:
  - shout_field: {field: text, suffix: "!!"}
  - length_filter: {field: text, min_chars: 10}
"""


def install_plugin(root: Path) -> dict[str, str]:
    """What `pip install` of a plugin package leaves behind (its module and a dist-info with entry points);
    returns the environment that puts it on the path."""
    write(root / "shout_stage.py", PLUGIN)
    write(root / "shout_stage-0.1.dist-info" / "METADATA", "Metadata-Version: 2.1\nName: shout-stage\nVersion: 0.1\n")
    write(root / "shout_stage-0.1.dist-info" / "entry_points.txt", "[synthgen.stages]\nshout_field = shout_stage:ShoutField\n")
    return {"PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def project(tmp_path: Path, recipe: str = RECIPE) -> Path:
    write(tmp_path / "items.jsonl", '{"text": "hello there"}\n{"text": "hi"}\n{"text": "second item"}\n')
    return write(tmp_path / "recipe.yaml", recipe)


def test_builtin_stages_are_entry_points_named_as_their_classes() -> None:
    names = known_stages()
    assert {"generate", "length_filter", "exact_dedup", "self_instruct", "e5_triplets", "export"} <= set(names)
    assert all(stage_class(name).name == name for name in names)


def test_plugin_stage_runs_in_a_recipe(tmp_path: Path) -> None:
    env = install_plugin(tmp_path / "site")
    result = synthgen("run", str(project(tmp_path)), "--out", str(tmp_path / "run"), env=env)
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(tmp_path / "run" / "dataset.jsonl")
    assert [row["fields"]["text"] for row in rows] == ["HELLO THERE!!", "SECOND ITEM!!"]
    rejects = read_jsonl(tmp_path / "run" / "rejects.jsonl")
    assert [(r["stage"], r["reason"]) for r in rejects] == [("01-length_filter", "too_short")], rejects


def test_plugin_stage_params_are_validated_like_a_builtin(tmp_path: Path) -> None:
    env = install_plugin(tmp_path / "site")
    recipe = project(tmp_path, RECIPE.replace('suffix: "!!"', "sufix: x"))
    result = synthgen("run", str(recipe), "--out", str(tmp_path / "run"), env=env)
    assert result.returncode == 2
    assert "stages[0].shout_field.sufix" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_stage_lists_installed_plugins(tmp_path: Path) -> None:
    env = install_plugin(tmp_path / "site")
    result = synthgen("run", str(project(tmp_path, RECIPE.replace("shout_field", "shout"))), env=env)
    assert result.returncode == 2
    assert "error: " in result.stderr and "stages[0]: unknown stage 'shout'; known stages: [" in result.stderr
    assert "'shout_field'" in result.stderr and "'generate'" in result.stderr


def test_only_the_stages_a_recipe_names_are_imported(tmp_path: Path) -> None:
    env = install_plugin(tmp_path / "site")
    recipe = project(tmp_path, RECIPE.replace('  - shout_field: {field: text, suffix: "!!"}\n', ""))
    code = ("import sys; from synthgen.recipe import load_recipe; load_recipe(sys.argv[1]); "
            "print(' '.join(m for m in sys.modules if m.startswith(('synthgen.stages.', 'synthgen.recipes', 'shout'))))")
    full_env = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-c", code, str(recipe)], cwd=REPO, env=full_env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert "synthgen.stages.filters" in out
    assert not {"shout_stage", "synthgen.stages.generate", "synthgen.stages.semantic", "synthgen.recipes.self_instruct"} & set(out)
