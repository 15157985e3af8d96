"""SIGKILL in the middle of a run, then resume: the same dataset, and only unfinished requests are sent again."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from synthgen.sim.process import SimProcess, get_json
from tests.conftest import REPO, read_jsonl, synthgen, write


@pytest.fixture
def sim_process() -> Iterator[str]:
    """A sim server in its own process (so killing the client leaves it running)."""
    with SimProcess("--latency", "0.02") as server:
        yield server.root


def _cached(run_dir: Path) -> int:
    path = run_dir / "cache.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM completions").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_sigkill_then_resume_sends_only_unfinished_requests(tmp_path: Path, sim_process: str) -> None:
    recipe = write(tmp_path / "quickstart.yaml", (REPO / "recipes" / "quickstart.yaml").read_text().replace("count: 40", "count: 150"))
    args = [str(recipe), "--base-url", sim_process + "/v1", "--max-concurrency", "8"]
    reference = synthgen("run", *args, "--out", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr
    total = json.loads((tmp_path / "ref" / "stats.json").read_text())["requests"]["finished"]
    assert total > 250  # 150 instructions, then answers for the unique ones

    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "synthgen", "run", *args, "--out", str(run_dir)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while _cached(run_dir) < total // 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished_before_kill = _cached(run_dir)
    assert 0 < finished_before_kill < total
    assert not (run_dir / "dataset.jsonl").exists()

    get_json(sim_process + "/sim/reset", method="POST")
    resumed = synthgen("run", *args, "--out", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert get_json(sim_process + "/sim/stats")["requests"] == total - finished_before_kill
    assert (run_dir / "dataset.jsonl").read_bytes() == (tmp_path / "ref" / "dataset.jsonl").read_bytes()
    ids = [row["id"] for row in read_jsonl(run_dir / "dataset.jsonl")]
    assert len(ids) == len(set(ids)) > 0
