"""`synthgen estimate`, `run --dry-run`, `show` and `export` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import datasets

from tests.conftest import synthgen


def test_estimate_and_dry_run(tmp_path: Path) -> None:
    result = synthgen("estimate", "recipes/quickstart.yaml", "--limit", "10", "--price-in", "1", "--price-out", "2")
    assert result.returncode == 0, result.stderr
    assert "requests: 20" in result.stdout and "cost: at most $" in result.stdout
    dry = synthgen("run", "recipes/quickstart.yaml", "--limit", "10", "--dry-run", "--out", str(tmp_path / "never"))
    assert dry.returncode == 0 and "requests: 20" in dry.stdout and not (tmp_path / "never").exists()


def test_show_and_export_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert synthgen("run", "recipes/quickstart.yaml", "--backend", "sim", "--limit", "12", "--out", str(out)).returncode == 0
    shown = synthgen("show", str(out), "-n", "2")
    assert shown.returncode == 0 and shown.stdout.count("instruction:") == 2 and "template quickstart/response.j2" in shown.stdout
    exported = synthgen("export", str(out), "--layout", "messages", "--format", "parquet", "--test-size", "0.25")
    assert exported.returncode == 0, exported.stderr
    files = {split: str(out / "export" / f"{split}.parquet") for split in ("train", "test")}
    loaded = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "cache"))
    assert loaded["train"].num_rows + loaded["test"].num_rows == 12 and loaded["train"].column_names == ["messages"]
    card = (out / "export" / "README.md").read_text()
    assert "synthgen run recipes/quickstart.yaml --backend sim --limit 12 --out" in card
    home = tmp_path / "hf-home"  # the HF layout is memory-mapped from Arrow files it writes, not from a cache
    hf = synthgen("export", str(out), "--format", "hf", "--out", str(tmp_path / "hf"),
                  env={"HF_HOME": str(home), "HF_DATASETS_CACHE": str(home / "datasets")})
    assert hf.returncode == 0, hf.stderr
    assert datasets.load_from_disk(str(tmp_path / "hf"))["train"].num_rows == 12
    assert not home.exists() and sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        ".synthgen-export", "README.md", "dataset_dict.json", "train"]
    misfit = synthgen("export", str(out), "--layout", "triplets", "--out", str(tmp_path / "triplets"))
    assert misfit.returncode == 2 and "needs anchor (field `anchor`), positive (field `positive`)" in misfit.stderr
    assert not (tmp_path / "triplets").exists()
    assert synthgen("show", str(tmp_path / "missing")).returncode == 2
