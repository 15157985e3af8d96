"""The diversity and mixup benches read data shipped in the repository (bench/data/), not a sibling folder."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

from tests.conftest import REPO


def bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inside_the_clone(path: Path) -> bool:
    """In the repository, and not git-ignored (so a clone has it)."""
    ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO, check=False).returncode == 0
    return path.resolve().is_relative_to(REPO) and path.exists() and not ignored


def test_diversity_eval_pool_ships_with_the_repo() -> None:
    module = bench("diversity_eval")
    assert inside_the_clone(module.POOL)
    texts, labels = module.load_pool(module.POOL)
    assert len(texts) == 10_003 and len(set(labels)) == 77


def test_mixup_eval_data_ships_with_the_repo() -> None:
    module = bench("mixup_eval")
    for name in ("poem_sentiment_train.tsv", "poem_sentiment_test.tsv", "banking77_train.csv"):
        assert inside_the_clone(module.DATA / name)
    train_texts, train_labels, test_texts, _ = module.poem()
    assert len(train_texts) == 892 and len(test_texts) == 104 and len(set(train_labels)) == 4
    assert len(module.banking()[2]) == 77 * 20
    assert "bench/data/SOURCES.md" in (REPO / "bench" / "mixup_eval.py").read_text()
    assert "CC BY 4.0" in (REPO / "bench" / "data" / "SOURCES.md").read_text()
