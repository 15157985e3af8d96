"""Errors retrying cannot fix end the run quickly with a message saying what to fix; keys never leak."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from synthgen.export import ExportConfig
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.report import build_report
from synthgen.sim import SimConfig, SimServer
from synthgen.stages.export import export_run
from tests.conftest import synthgen
from tests.integration.test_report import FakeEncoder

KEY = "sk-synthgen-test-SECRET-4b1d9c"


@pytest.fixture
def guarded_sim() -> Iterator[SimServer]:
    """A sim that wants KEY, serves one model, and has a small context window."""
    config = SimConfig(latency=0.0, api_key=KEY, models=["sim-model"], max_context_tokens=2000)
    with SimServer(config) as server:
        yield server


@pytest.mark.parametrize(
    ("extra", "env", "status", "fix"),
    [
        ((), {"OPENAI_API_KEY": "sk-wrong"}, "401", "OPENAI_API_KEY"),
        (("--model", "no-such-model"), {"OPENAI_API_KEY": KEY}, "404", "model 'no-such-model'"),
    ],
)
def test_fatal_errors_stop_the_run_with_a_fix(tmp_path: Path, guarded_sim: SimServer, extra: tuple[str, ...],
                                              env: dict[str, str], status: str, fix: str) -> None:
    started = time.monotonic()
    result = synthgen("run", "recipes/quickstart.yaml", "--base-url", guarded_sim.base_url, "--out", str(tmp_path / "r"),
                      *extra, env=env)
    assert result.returncode == 2
    assert f"backend answered {status}" in result.stderr and "fix:" in result.stderr and fix in result.stderr
    assert time.monotonic() - started < 20
    assert not (tmp_path / "r" / "dataset.jsonl").exists()
    assert guarded_sim.stats()["statuses"].get(status, 0) <= 2 * 64 + 64  # no retries: at most the first window


def test_context_too_long_is_fatal(tmp_path: Path, guarded_sim: SimServer) -> None:
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.parent.mkdir()
    recipe.write_text(Path("recipes/quickstart.yaml").read_text().replace("max_tokens: 256", "max_tokens: 5000"))
    result = synthgen("run", str(recipe), "--base-url", guarded_sim.base_url, "--out", str(tmp_path / "r"),
                      env={"OPENAI_API_KEY": KEY})
    assert result.returncode == 2
    assert "backend answered 400" in result.stderr and "lower max_tokens" in result.stderr


def test_unreachable_server_is_reported(tmp_path: Path) -> None:
    recipe = load_recipe("recipes/quickstart.yaml").with_backend(
        kind="openai", base_url="http://127.0.0.1:9/v1", max_attempts=2, retry_initial=0.01
    )
    from synthgen.errors import FatalBackendError

    with pytest.raises(FatalBackendError, match="cannot connect to http://127.0.0.1:9/v1"):
        run_recipe(recipe, tmp_path / "r", limit=3)


def test_api_key_is_in_no_output_file_export_card_report_or_log(tmp_path: Path, guarded_sim: SimServer,
                                                  monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    result = synthgen("run", "recipes/quickstart.yaml", "--base-url", guarded_sim.base_url, "--limit", "20",
                      "--out", str(out), env={"OPENAI_API_KEY": KEY})
    assert result.returncode == 0, result.stderr
    assert KEY not in result.stdout + result.stderr

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    recipe = load_recipe("recipes/quickstart.yaml").with_backend(kind="openai", base_url=guarded_sim.base_url)
    run_recipe(recipe, out, limit=25)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with pytest.raises(Exception) as failure:
        run_recipe(recipe, tmp_path / "other", limit=30)
    assert KEY not in str(failure.value) and KEY not in caplog.text

    export_run(out, ExportConfig(layout="alpaca", format="hf"))
    build_report(out, encoder=FakeEncoder())
    files = [p for p in out.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"dataset.jsonl", "cache.sqlite", "recipe.yaml", "stats.json", "README.md", "report.html"} <= names
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path
