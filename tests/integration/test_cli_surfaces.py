"""What a new user meets first: `--version`, the top-level help, `show` on an empty run and its placeholders,
`taxonomy show` given a recipe, and the card's "how to load" snippet run as written."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import synthgen, write


def test_version_and_user_facing_help() -> None:
    shown = synthgen("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"synthgen {version('synthgen')}"
    help_text = synthgen("--help").stdout
    assert "synthgen makes synthetic datasets" in help_text and "recipes/quickstart.yaml --backend sim" in help_text
    assert "thin layer" not in help_text and "turns errors into" not in help_text


@pytest.mark.slow
def test_show_says_a_run_is_empty_and_shows_placeholders(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    write(empty / "dataset.jsonl", "")
    shown = synthgen("show", str(empty))
    assert shown.returncode == 1 and "dataset.jsonl: no records" in shown.stderr and "--rejects" in shown.stderr
    out = tmp_path / "run"
    assert synthgen("run", "recipes/quickstart.yaml", "--backend", "sim", "--limit", "3", "--out", str(out)).returncode == 0
    shown = synthgen("show", str(out), "-n", "1")
    assert shown.returncode == 0 and re.search(r"placeholders: (audience|difficulty|topic)=", shown.stdout)


@pytest.mark.slow
def test_taxonomy_show_takes_a_recipe(tmp_path: Path) -> None:
    shown = synthgen("taxonomy", "show", "recipes/quickstart.yaml")
    assert shown.returncode == 0, shown.stderr
    assert "00-generate: taxonomies/quickstart.yaml" in shown.stdout and "creative" in shown.stdout
    assert synthgen("taxonomy", "show", "taxonomies/quickstart.yaml").returncode == 0
    none = write(tmp_path / "r.yaml", "name: r\nsource: {path: x.jsonl}\nstages:\n  - exact_dedup: {fields: [text]}\n")
    shown = synthgen("taxonomy", "show", str(none))
    assert shown.returncode == 1 and "no stage of this recipe names a taxonomy" in shown.stderr


@pytest.mark.slow
def test_card_snippet_loads_the_exported_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert synthgen("run", "recipes/quickstart.yaml", "--backend", "sim", "--limit", "12", "--out", str(out)).returncode == 0
    for fmt in ("jsonl", "parquet", "hf"):
        folder = tmp_path / fmt
        exported = synthgen("export", str(out), "--format", fmt, "--test-size", "0.25", "--out", str(folder))
        assert exported.returncode == 0, exported.stderr
        card = (folder / "README.md").read_text()
        code = re.search(r"## How to load\n\n```python\n(.*?)```", card, flags=re.S).group(1)  # type: ignore[union-attr]
        scope: dict[str, object] = {}
        exec(code, scope)  # the snippet as a user would paste it
        loaded = scope["dataset"]
        assert sorted(loaded) == ["test", "train"], fmt  # type: ignore[call-overload]
        assert sum(loaded[split].num_rows for split in ("train", "test")) == 12, fmt  # type: ignore[index]
