"""Shared fixtures: an isolated environment and a simulated OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synthgen.sim import SimConfig, SimServer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's backend settings or keys."""
    for name in ("OPENAI_API_KEY", "SYNTHGEN_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(REPO)


@pytest.fixture
def sim() -> Iterator[SimServer]:
    """A fast, fault-free sim server."""
    with SimServer(SimConfig(latency=0.0)) as server:
        yield server


def write(path: Path, text: str) -> Path:
    """Write `text` to `path` (creating folders) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def synthgen(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the `synthgen` command in a subprocess from the repository root."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "SYNTHGEN_BASE_URL")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "synthgen", *args], cwd=REPO, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All rows of a JSONL file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_checkpoint_records(run_dir: Path, label: str) -> list[dict[str, Any]]:
    """The output of the finished stage `label` (`01-exact_dedup`) in a run directory, as `read_jsonl` rows."""
    from synthgen.checkpoints import read_checkpoint

    checkpoints = run_dir / "checkpoints"
    labels = sorted(done.stem for done in checkpoints.glob("*.done") if done.stem <= label)
    assert labels and labels[-1] == label, f"no finished checkpoint {label} in {checkpoints}"
    return [json.loads(record.to_json()) for record in read_checkpoint(checkpoints, labels)]


def disk_full_for(monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    """Make syncing any file whose name ends with `suffix` fail as on a full disk (ENOSPC)."""
    real_fsync = os.fsync

    def full(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
