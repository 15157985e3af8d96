"""Recipe loading: every error names the file and the field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthgen.build import build_stages
from synthgen.errors import ConfigError
from synthgen.recipe import load_recipe
from synthgen.stages.generate import Generate
from synthgen.stats import RunStats
from tests.conftest import write

GOOD = """
name: demo
seed: 7
backend: {model: m}
stages:
  - generate:
      template: quickstart/response.j2
      count: 3
  - length_filter: {field: text, min_chars: 5}
"""


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path / "recipes" / "r.yaml", text)
    with pytest.raises(ConfigError) as info:
        recipe = load_recipe(path)
        build_stages(recipe, RunStats())
    return str(info.value)


def test_good_recipe_builds_its_stages(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path / "r.yaml", GOOD))
    stages = build_stages(recipe, RunStats())
    assert [s.name for s in stages] == ["generate", "length_filter"]
    assert isinstance(stages[0], Generate) and stages[0].params.count == 3
    assert recipe.seed == 7 and recipe.backend.model == "m"


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (GOOD.replace("seed: 7", "seed: 7\ncolour: red"), "colour", "Extra inputs"),
        (GOOD.replace("seed: 7", "seed: seven"), "seed", "valid integer"),
        (GOOD.replace("backend: {model: m}", "backend: {model: m, max_concurrency: 0}"), "backend.max_concurrency", "greater than"),
        (GOOD.replace("count: 3", "count: 3\n      tempalte: x"), "stages[0].generate.tempalte", "Extra inputs"),
        (GOOD.replace("min_chars: 5", "min_chars: -1"), "stages[1].length_filter.min_chars", "greater than"),
        (GOOD.replace("- length_filter", "- dedupe"), "stages[1]", "unknown stage 'dedupe'"),
        (GOOD.replace("count: 3", "count: 3\n      sampling: {temprature: 1}"), "stages[0].generate.sampling.temprature", "Extra inputs"),
        (GOOD.replace("count: 3", "count: 3\n      schema: {type: objekt}"), "stages[0].generate.schema.type", "not a valid JSON Schema"),
        (GOOD.replace("      count: 3\n", ""), "stages[0].generate", "`count`"),
        (GOOD.replace("  - length_filter: {field: text, min_chars: 5}", "  - length_filter: {field: text}\n    generate: {}"), "stages[1]", "one key"),
        (GOOD.replace("name: demo", "name: 'a b'"), "name", "not a plain name"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, text: str, field: str, words: str) -> None:
    message = load_error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'recipes' / 'r.yaml'}: {field}: "), message
    assert words in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "name: x\nstages: [\n  - a: b\n")
    assert "r.yaml: invalid YAML: line" in message


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_unknown_template_fails_before_any_request(tmp_path: Path) -> None:
    from synthgen.errors import TemplateError

    recipe = load_recipe(write(tmp_path / "r.yaml", GOOD.replace("quickstart/response.j2", "nowhere/x.j2")))
    with pytest.raises(TemplateError, match="nowhere/x.j2"):
        build_stages(recipe, RunStats())


def test_relative_paths_resolve_from_the_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "prompts" / "t.j2", "say {{ leaf }}")
    recipe_path = write(tmp_path / "recipes" / "r.yaml", GOOD.replace("quickstart/response.j2", "t.j2"))
    monkeypatch.chdir(tmp_path / "recipes")
    recipe = load_recipe(recipe_path)
    assert recipe.resolve(recipe.prompts_dir) == tmp_path / "prompts"
    build_stages(recipe, RunStats())
