"""`synthgen report`: the HTML page of a real sim run, rendered in headless Chromium, and its error paths."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from synthgen.embedding.encoder import Encoder
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.report import build_report
from tests.conftest import read_jsonl, synthgen, write

SECTIONS = ("funnel", "rejects", "lengths", "coverage", "embedding-map", "duplicates", "judge", "timeline", "steering",
            "examples")
PNG = re.compile(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{200,}" alt="[^"]+">')


class FakeEncoder:
    """Seeded random unit vectors: the report's plumbing without loading a model."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.random.default_rng(0).normal(size=(len(texts), 8)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def sections(page: str) -> dict[str, str]:
    """Section id -> its HTML."""
    return dict(re.findall(r'<section id="([a-z-]+)">(.*?)</section>', page, flags=re.S))


@pytest.fixture(scope="module")
def quickstart_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-draw quickstart run on the built-in sim, and its report."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    run_recipe(load_recipe("recipes/quickstart.yaml").with_backend(kind="sim"), run_dir, limit=40)
    return build_report(run_dir, encoder=Encoder(), max_points=500)


def test_report_of_a_quickstart_run_has_every_section_with_its_figure(quickstart_report: Path) -> None:
    run_dir = quickstart_report.parent
    assert quickstart_report == run_dir / "report.html" and not (run_dir / "report.html.tmp").exists()
    page = quickstart_report.read_text(encoding="utf-8")
    found = sections(page)
    assert list(found) == list(SECTIONS)
    stats = json.loads((run_dir / "stats.json").read_text())
    has_duplicates = any(row["meta"].get("duplicate_of") for row in read_jsonl(run_dir / "rejects.jsonl"))
    with_data = {"funnel", "lengths", "coverage", "embedding-map", "timeline"}
    with_data |= {"rejects"} if stats["rejects_by_reason"] else set()
    with_data |= {"duplicates"} if has_duplicates else set()
    for key, body in found.items():
        assert bool(PNG.search(body)) == (key in with_data), key
    assert "No seed data" in found["lengths"]  # the quickstart draws from a taxonomy alone
    assert "Total variation distance to the target weights" in found["coverage"]  # taxonomy file resolved
    assert "<h1>Run report: quickstart</h1>" in page and "http://" not in page and "https://" not in page


def test_report_renders_in_headless_chromium(quickstart_report: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium binary (apt-get install -y chromium)")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1200,4000", quickstart_report.resolve().as_uri()],
        capture_output=True, timeout=60, check=False,
    )
    assert shot.exists() and shot.stat().st_size > 20_000


def test_report_escapes_record_text_and_says_what_is_missing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write(run_dir / "stats.json", json.dumps({"stages": {"00-generate": {"records_in": 0, "records_out": 3, "rejected": 1}},
                                              "rejects_by_reason": {"bad<b>": 1}, "timeline": [[0.1, 0, 0]],
                                              "metrics": {"00-generate": {"vendi": 1.5}}}))
    rows = [{"id": str(i), "fields": {"text": f"record {i} <i>"}, "meta": {}} for i in range(3)]
    write(run_dir / "dataset.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    reject = {"id": "x", "stage": "00-generate", "reason": "bad<b>", "detail": "<script>alert(1)</script>", "fields": {}, "meta": {}}
    write(run_dir / "rejects.jsonl", json.dumps(reject) + "\n")
    out = build_report(run_dir, tmp_path / "page.html", encoder=FakeEncoder())  # type: ignore[arg-type]
    page = out.read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "bad&lt;b&gt;" in page
    found = sections(page)
    assert list(found) == list(SECTIONS)
    assert "Not available for this run" in found["coverage"] and "Not available for this run" in found["timeline"]
    assert PNG.search(found["embedding-map"]) and PNG.search(found["lengths"])
    assert "No duplicates removed" in found["duplicates"] and "vendi" in page


def test_cli_report_names_a_directory_that_is_not_a_finished_run(tmp_path: Path) -> None:
    result = synthgen("report", str(tmp_path))
    assert result.returncode == 2
    assert str(tmp_path) in result.stderr and "stats.json" in result.stderr and "Traceback" not in result.stderr
    missing = synthgen("report", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and str(tmp_path / "nowhere") in missing.stderr
