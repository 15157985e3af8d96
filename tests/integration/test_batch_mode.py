"""`mode: batch` end to end over HTTP against the sim's Files + Batches API: the same dataset as online,
failed and expired items sent again, and a run killed while polling resumes the same batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.sim import SimConfig, SimServer
from synthgen.sim.process import SimProcess, get_json
from tests.conftest import REPO, read_jsonl, synthgen, write

FAST_POLL = {"linger": 0.05, "poll_initial": 0.05, "poll_max": 0.2}


def recipe_file(tmp_path: Path, name: str, backend: dict[str, object], count: int = 40) -> Path:
    """The quickstart's first two stages (a schema'd generate + exact dedup) with `backend`."""
    recipe = {
        "name": name, "seed": 7, "backend": {"kind": "openai", "model": "sim-model", **backend},
        "stages": [
            {"generate": {"taxonomy": str(REPO / "taxonomies/quickstart.yaml"), "count": count, "max_retries": 1,
                          "schema": {"type": "object", "properties": {"instruction": {"type": "string"}},
                                     "required": ["instruction"]},
                          "sampling": {"temperature": 1.0, "max_tokens": 64}}},
            {"exact_dedup": {"fields": ["instruction"]}},
        ],
    }
    return write(tmp_path / f"{name}.yaml", yaml.safe_dump(recipe))


def records(run_dir: Path) -> list[tuple[str, dict[str, object]]]:
    return [(row["id"], row["fields"]) for row in read_jsonl(run_dir / "dataset.jsonl")]


def test_batch_mode_gives_the_online_dataset_and_resends_failed_items(tmp_path: Path) -> None:
    config = SimConfig(latency=0.0, batch_delay=0.1, batch_failed_items=0.2, batch_expired_items=0.1, seed=3)
    with SimServer(config) as sim:
        online = load_recipe(recipe_file(tmp_path, "online", {"base_url": sim.base_url}))
        run_recipe(online, tmp_path / "online")
        batch = load_recipe(recipe_file(tmp_path, "batch", {"base_url": sim.base_url, "mode": "batch", "batch": FAST_POLL}))
        result = run_recipe(batch, tmp_path / "batch")
        stats = sim.stats()
    assert records(tmp_path / "batch") == records(tmp_path / "online")
    assert len(records(tmp_path / "batch")) > 30
    assert stats["endpoints"]["/v1/chat/completions"] == 40  # only the online run used the online endpoint
    assert stats["batches"]["created"] >= 2 and stats["batches"].get("expired", 0) >= 1
    assert result.stats.retries["batch_resubmit"] > 0
    ledger = [json.loads(line) for line in (tmp_path / "batch" / "backend" / "batches.jsonl").read_text().splitlines()]
    assert len(ledger) == stats["batches"]["created"] and len(ledger[0]["keys"]) == 40
    recorded = json.loads((tmp_path / "batch" / "stats.json").read_text())["batches"]  # what the progress line shows
    assert list(recorded) == [entry["batch"] for entry in ledger]
    assert recorded[ledger[0]["batch"]]["total"] == 40 and "expired" in {b["status"] for b in recorded.values()}
    assert not any(b["running"] for b in recorded.values())


def test_failed_items_become_rejects_after_the_last_resubmit(tmp_path: Path) -> None:
    with SimServer(SimConfig(latency=0.0, batch_delay=0.05, batch_failed_items=1.0)) as sim:
        recipe = load_recipe(recipe_file(tmp_path, "failing", {"base_url": sim.base_url, "mode": "batch",
                                                                "batch": {**FAST_POLL, "max_resubmits": 1}}, count=5))
        run_recipe(recipe, tmp_path / "run")
        assert sim.stats()["batches"]["created"] == 2
    rejects = read_jsonl(tmp_path / "run" / "rejects.jsonl")
    assert len(rejects) == 5 and {r["reason"] for r in rejects} == {"backend_batch_http_500"}


def _ledger_written(run_dir: Path) -> bool:
    path = run_dir / "backend" / "batches.jsonl"
    return path.exists() and path.read_text().endswith("\n")


def test_killed_while_polling_resumes_the_same_batch(tmp_path: Path) -> None:
    with SimProcess("--latency", "0", "--batch-delay", "2") as server:
        recipe = recipe_file(tmp_path, "resume", {"mode": "batch", "batch": FAST_POLL}, count=30)
        run_dir = tmp_path / "run"
        args = [str(recipe), "--base-url", server.root + "/v1", "--out", str(run_dir)]
        process = subprocess.Popen([sys.executable, "-m", "synthgen", "run", *args], cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not _ledger_written(run_dir) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert _ledger_written(run_dir) and not (run_dir / "dataset.jsonl").exists()

        resumed = synthgen(*["run", *args], env={})
        assert resumed.returncode == 0, resumed.stderr
        stats = get_json(server.root + "/sim/stats")
    assert stats["batches"]["created"] == 1  # polled the batch the killed run created; nothing sent twice
    assert stats["endpoints"]["/v1/files"] == 1
    assert len(read_jsonl(run_dir / "dataset.jsonl")) + len(read_jsonl(run_dir / "rejects.jsonl")) == 30
