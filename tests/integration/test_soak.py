"""The soak benchmark, reduced: faults of every kind and a SIGKILL, then resume, lose and repeat nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_reduced_soak_loses_nothing_and_resends_nothing() -> None:
    result = subprocess.run([sys.executable, "bench/soak.py", "--requests", "1500", "--kills", "1", "--seed", "3"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for line in ("lost records: 0", "duplicated ids: 0", "re-sent finished requests: 0"):
        assert line in lines, result.stdout
    assert "phase 1: killed" in result.stdout and "phase 2: finished" in result.stdout
