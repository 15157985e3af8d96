"""The report shows seed data for source-based recipes (also from the frozen recipe), real documents as real,
the PCA's real explained variance, stage markers on the timeline, lengths per field and example records."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.report import _project, build_report
from tests.integration.test_report import PNG, FakeEncoder, sections


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["wrap_rephrase", "back_translation", "paraphrase_styles", "self_instruct"])
def test_seed_data_is_shown_and_the_frozen_recipe_reruns(recipe: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = run_recipe(load_recipe(f"recipes/{recipe}.yaml").with_backend(kind="sim"), run_dir, limit=6)
    page = build_report(run_dir, encoder=FakeEncoder()).read_text(encoding="utf-8")  # type: ignore[arg-type]
    found = sections(page)
    assert "No seed data" not in found["lengths"] and re.search(r'alt="[^"]*seed median', found["lengths"])
    assert re.search(r"[1-9]\d* seed records in grey", found["embedding-map"])
    frozen = load_recipe(run_dir / "recipe.yaml")  # the card's "rerun the frozen recipe" line
    assert run_recipe(frozen, run_dir, limit=6).records == first.records  # the same run: nothing redone


@pytest.mark.slow
def test_wrap_real_documents_are_labelled_real(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_recipe(load_recipe("recipes/wrap_rephrase.yaml").with_backend(kind="sim"), run_dir)
    rows = [json.loads(line) for line in (run_dir / "dataset.jsonl").read_text().splitlines()]
    real = sum(row["fields"]["kind"] == "real" for row in rows)
    found = sections(build_report(run_dir, encoder=FakeEncoder()).read_text(encoding="utf-8"))  # type: ignore[arg-type]
    assert real and f"{real} real documents in green, {len(rows) - real} synthetic records" in found["embedding-map"]
    assert re.search(r'alt="[^"]*text: seed median [\d,]+, real median [\d,]+, synthetic median', found["lengths"])
    assert "(no leaf)" not in found["coverage"] and "(real)" in found["examples"]


def test_pca_axis_reports_the_real_explained_variance() -> None:
    vectors = np.random.default_rng(1).normal(size=(12, 384))  # near-isotropic: PC1 holds well under 1%... of 384 axes
    _, labels = _project(vectors, seed=0)
    centred = vectors - vectors.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    share = singular[0] ** 2 / (singular**2).sum()
    assert labels[0] == f"PC1 ({100 * share:.2g}% of variance)" and not labels[0].startswith("PC1 (0%")


@pytest.mark.slow
def test_timeline_markers_lengths_per_field_and_examples(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_recipe(load_recipe("recipes/quickstart.yaml").with_backend(kind="sim"), run_dir, limit=12)
    stats = json.loads((run_dir / "stats.json").read_text())
    assert list(stats["stage_finished_s"])[:2] == ["00-generate", "01-exact_dedup"]
    found = sections(build_report(run_dir, encoder=FakeEncoder()).read_text(encoding="utf-8"))  # type: ignore[arg-type]
    assert "stages finished at 00-generate" in found["timeline"] and PNG.search(found["timeline"])
    lengths_alt = re.search(r'alt="([^"]*)"', found["lengths"]).group(1)  # type: ignore[union-attr]
    assert all(f"{name}: synthetic median" in lengths_alt for name in ("instruction", "response"))
    rows = [json.loads(line) for line in (run_dir / "dataset.jsonl").read_text().splitlines()]
    assert "<h3>Example 1 (synthetic, leaf " in found["examples"] and "<th>response</th>" in found["examples"]
    shown = [row for row in rows if html.escape(row["fields"]["response"][:60]) in found["examples"]]
    assert len(shown) == min(5, len(rows))
