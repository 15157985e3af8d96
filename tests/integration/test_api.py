"""The Python API: the README's example runs as written; records, rejects, stats, datasets; overrides; errors."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import synthgen
from synthgen.cli import app
from synthgen.errors import ConfigError, RunDirError
from synthgen.sim import SimServer
from tests.conftest import REPO, read_jsonl, write

RECIPE: dict[str, Any] = {
    "name": "api",
    "prompts_dir": "prompts",
    "backend": {"kind": "sim", "sim": {"latency": 0.0}},
    "stages": [
        {"generate": {"template": "t/plain.j2", "count": 12, "output": "text"}},
        {"length_filter": {"field": "text", "min_chars": 400}},
    ],
}


@pytest.fixture
def recipe_dir(tmp_path: Path) -> Path:
    write(tmp_path / "prompts" / "t" / "plain.j2", "Write one sentence about {{ leaf }}.")
    return tmp_path


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`to_dataset`'s default cache under tmp_path, not the user's ~/.cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return tmp_path / "hf-cache"


def readme_example() -> str:
    """The python block of the README's "Python API" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, blocks
    return blocks[0]


def test_readme_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for folder in ("recipes", "taxonomies", "prompts"):
        (tmp_path / folder).symlink_to(REPO / folder)
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_example(), "README.md", "exec"), {})
    lines = printed.getvalue().splitlines()
    assert lines[0] == "outputs/quickstart 20 40"
    assert lines[1] == "['id', 'instruction', 'input', 'response']"
    kept = read_jsonl(tmp_path / "outputs" / "one-liners" / "dataset.jsonl")
    dropped = read_jsonl(tmp_path / "outputs" / "one-liners" / "rejects.jsonl")
    assert kept and dropped and len(kept) + len(dropped) == 8
    assert lines[2:] == [f"{row['id']} {row['meta']['steps'][0]['leaf']} {row['fields']['text'][:40]}" for row in kept] + [
        f"01-length_filter too_short {row['id']}" for row in dropped]
    assert len(read_jsonl(tmp_path / "outputs" / "quickstart" / "dataset.jsonl")) == 20


def test_records_rejects_stats_and_dataset_come_from_the_run_directory(recipe_dir: Path) -> None:
    output = synthgen.run(synthgen.recipe_from_dict(RECIPE, base_dir=recipe_dir), recipe_dir / "run")
    rows, rejects = read_jsonl(recipe_dir / "run" / "dataset.jsonl"), read_jsonl(recipe_dir / "run" / "rejects.jsonl")
    assert rows and rejects and len(rows) + len(rejects) == 12
    assert output.run_dir == recipe_dir / "run" and len(output) == len(rows)
    records = list(output.records())
    assert [(r.id, r.fields, r.meta) for r in records] == [(row["id"], row["fields"], row["meta"]) for row in rows]
    assert list(output.rejects()) == rejects and {row["reason"] for row in rejects} == {"too_short"}
    assert output.stats == orjson.loads((recipe_dir / "run" / "stats.json").read_bytes())
    assert output.stats["stages"]["01-length_filter"]["records_out"] == len(rows)

    dataset = output.to_dataset()
    assert dataset.column_names == ["id", "text"] and dataset.num_rows == len(rows)
    assert dataset["id"] == [row["id"] for row in rows] and dataset["text"] == [row["fields"]["text"] for row in rows]
    assert all(Path(f["filename"]).is_relative_to(recipe_dir / "hf-cache") for f in dataset.cache_files)  # on disk
    with_meta = output.to_dataset(meta=True, cache_dir=recipe_dir / "other-cache")
    assert [orjson.loads(m) for m in with_meta["meta"]] == [row["meta"] for row in rows]

    reopened = synthgen.open_run(recipe_dir / "run")
    assert len(reopened) == len(rows) and reopened.stats == output.stats


def test_a_rerun_resumes_and_to_dataset_follows_a_changed_dataset(recipe_dir: Path, sim: SimServer) -> None:
    recipe, out = synthgen.recipe_from_dict(RECIPE, base_dir=recipe_dir), recipe_dir / "run"
    first = synthgen.run(recipe, out, base_url=sim.base_url, limit=3)
    assert sim.stats()["requests"] == 3
    assert first.to_dataset().num_rows == len(first) and len(first) + len(list(first.rejects())) == 3
    again = synthgen.run(recipe, out, base_url=sim.base_url, limit=3)
    assert sim.stats()["requests"] == 3 and len(again) == len(first)  # finished: nothing re-sent
    bigger = synthgen.run(recipe, out, base_url=sim.base_url, limit=12, fresh=True)
    assert sim.stats()["requests"] == 15
    assert bigger.to_dataset()["id"] == [record.id for record in bigger.records()]  # not the cached 3-draw table
    assert len(bigger) + len(list(bigger.rejects())) == 12


def test_overrides_reach_the_backend_and_the_frozen_recipe(recipe_dir: Path, sim: SimServer) -> None:
    output = synthgen.run(synthgen.recipe_from_dict(RECIPE, base_dir=recipe_dir), recipe_dir / "run",
                          base_url=sim.base_url, model="other-model", max_concurrency=2, limit=4)
    assert sim.stats()["requests"] == 4
    frozen = (recipe_dir / "run" / "recipe.yaml").read_text()
    assert "kind: openai" in frozen and "model: other-model" in frozen and "max_concurrency: 2" in frozen
    assert "limit: 4" in frozen
    steps = [record.meta["steps"][0] for record in output.records()]
    assert steps and all(step["model"] == "other-model" and step["backend"] == "openai" for step in steps)


def test_the_default_run_directory_is_outputs_slash_name(recipe_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(recipe_dir)
    output = synthgen.run(synthgen.recipe_from_dict(RECIPE), limit=2)
    assert output.run_dir == Path("outputs/api") and (recipe_dir / "outputs" / "api" / "dataset.jsonl").exists()


def test_the_cli_and_the_api_write_the_same_dataset(recipe_dir: Path) -> None:
    path = write(recipe_dir / "r.yaml", orjson.dumps(RECIPE).decode())  # JSON is YAML
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(recipe_dir / "cli"), "--limit", "5"])
    assert result.exit_code == 0, result.output
    output = synthgen.run(path, recipe_dir / "api", limit=5)
    assert f"dataset: {recipe_dir / 'cli' / 'dataset.jsonl'}  ({len(output)} records)" in result.stdout
    assert (recipe_dir / "cli" / "dataset.jsonl").read_bytes() == output.dataset_path.read_bytes()


@pytest.mark.parametrize(("change", "needles"), [
    ({"stages": [{"generate": {"template": "t/plain.j2", "count": "three"}}]},
     ("<recipe>: stages[0].generate.count", "valid integer")),
    ({"colour": "red"}, ("<recipe>: colour", "Extra inputs")),
    ({"stages": [{"dedupe": {}}]}, ("<recipe>: stages[0]", "unknown stage 'dedupe'")),
])
def test_a_bad_recipe_in_code_raises_config_error(recipe_dir: Path, change: dict[str, Any], needles: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as caught:
        synthgen.recipe_from_dict({**RECIPE, **change}, base_dir=recipe_dir)
    for needle in needles:
        assert needle in str(caught.value)


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"max_concurrency": 0}, "backend.max_concurrency"),
    ({"base_url": "ftp://example.org"}, "backend.base_url"),
    ({"limit": 0}, "limit: 0 is not a number of records"),
    ({"backend": "telepathy"}, "unknown backend 'telepathy'"),
])
def test_bad_overrides_raise_config_error_and_write_nothing(recipe_dir: Path, overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        synthgen.run(synthgen.recipe_from_dict(RECIPE, base_dir=recipe_dir), recipe_dir / "run", **overrides)
    assert not (recipe_dir / "run" / "dataset.jsonl").exists()


def test_missing_files_and_foreign_folders_raise_library_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        synthgen.run(tmp_path / "absent.yaml")
    with pytest.raises(RunDirError, match="no dataset.jsonl"):
        synthgen.open_run(tmp_path)
    foreign = write(tmp_path / "mine" / "notes.txt", "keep me").parent
    with pytest.raises(RunDirError, match="not a synthgen run directory"):
        synthgen.run(REPO / "recipes" / "quickstart.yaml", foreign, backend="sim", limit=1)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_import_synthgen_stays_light() -> None:
    code = ("import sys, synthgen; synthgen.RunOutput; "
            "print(sorted(m for m in ('torch', 'ray', 'datasets', 'sentence_transformers', 'vllm') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
