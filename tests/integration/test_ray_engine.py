"""`--engine ray` on a local Ray (2 CPUs): the same kept ids and files as the local engine, duplicates found
across blocks, and a killed Ray job resumed without re-sending a finished request."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.sim.process import SimProcess, get_json
from tests.conftest import REPO, read_checkpoint_records, read_jsonl, synthgen, write
from tests.integration.test_resume import _cached

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")
BLOCK = 16


def recipe_file(tmp_path: Path, count: int, sim: dict[str, object] | None = None) -> Path:
    """Generation from a taxonomy, exact + MinHash dedup, a second generation, a filter and an export."""
    recipe = {
        "name": "ray-equal", "seed": 11, "prompts_dir": str(REPO / "prompts"),
        "backend": {"kind": "sim" if sim is not None else "openai", "model": "sim-model", "max_concurrency": 32,
                    "sim": sim or {}},
        "stages": [
            {"generate": {"taxonomy": str(REPO / "taxonomies/quickstart.yaml"), "count": count, "n": 2,
                          "output": "instruction", "sampling": {"temperature": 1.0, "max_tokens": 48}}},
            {"exact_dedup": {"fields": ["instruction"]}},
            {"minhash_dedup": {"fields": ["instruction"], "threshold": 0.7}},
            {"generate": {"template": "quickstart/response.j2", "output": "response",
                          "sampling": {"max_tokens": 64}}},
            {"length_filter": {"field": "response", "min_chars": 60}},
            {"export": {"out": "export", "layout": "alpaca", "format": "jsonl"}},
        ],
    }
    return write(tmp_path / "recipe.yaml", yaml.safe_dump(recipe))


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_engine_keeps_the_local_engines_ids_and_files(tmp_path: Path, local_ray: None) -> None:
    from synthgen.engine.ray_engine import RayExecutor, RayOptions

    recipe = load_recipe(recipe_file(tmp_path, 80, {"latency": 0.0, "duplicate_rate": 0.3}))
    local = run_recipe(recipe, tmp_path / "local")
    with RayExecutor(recipe, tmp_path / "ray", None, RayOptions(workers=2, block_size=BLOCK)) as executor:
        distributed = run_recipe(recipe, tmp_path / "ray", executor=executor)

    assert distributed.records == local.records > 0
    for name in ("dataset.jsonl", "rejects.jsonl", "export/train.jsonl"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    rejects = read_jsonl(tmp_path / "ray" / "rejects.jsonl")
    assert {"exact_duplicate", "near_duplicate"} <= {r["reason"] for r in rejects}
    position = {row["id"]: i for i, row in enumerate(read_checkpoint_records(tmp_path / "ray", "00-generate"))}
    crossing = [r for r in rejects if r["stage"] != "00-generate" and r["meta"].get("duplicate_of") in position
                and position[r["id"]] // BLOCK != position[r["meta"]["duplicate_of"]] // BLOCK]
    assert crossing  # duplicates whose first copy sat in another Ray block were found
    ray_stats, local_stats = (json.loads((tmp_path / d / "stats.json").read_text()) for d in ("ray", "local"))
    assert ray_stats["stages"] == local_stats["stages"]
    assert ray_stats["requests"]["finished"] == local_stats["requests"]["finished"]
    assert not list((tmp_path / "ray" / "checkpoints").glob("*.blocks"))  # block checkpoints go once a stage is done


@pytest.mark.slow
@pytest.mark.timeout(300)  # Ray start-up, a kill and a resume on a loaded 2-core machine
def test_killed_ray_job_resumes_without_resending_finished_requests(tmp_path: Path) -> None:
    with SimProcess("--latency", "0.05", "--duplicate-rate", "0.3") as server:
        recipe = recipe_file(tmp_path, 150)
        args = [str(recipe), "--base-url", server.root + "/v1", "--engine", "ray", "--block-size", "20"]
        reference = synthgen("run", *args, "--out", str(tmp_path / "ref"), timeout=300)
        assert reference.returncode == 0, reference.stderr
        total = json.loads((tmp_path / "ref" / "stats.json").read_text())["requests"]["finished"]

        run_dir = tmp_path / "run"
        process = subprocess.Popen([sys.executable, "-m", "synthgen", "run", *args, "--out", str(run_dir)], cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while _cached(run_dir) < total // 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        finished_before, stable_since = _cached(run_dir), time.monotonic()
        while time.monotonic() - stable_since < 3 and time.monotonic() < deadline:  # Ray workers outlive a driver briefly
            time.sleep(0.2)
            if (now := _cached(run_dir)) != finished_before:
                finished_before, stable_since = now, time.monotonic()
        assert 0 < finished_before < total and not (run_dir / "dataset.jsonl").exists()

        get_json(server.root + "/sim/reset", method="POST")
        resumed = synthgen("run", *args, "--out", str(run_dir), timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert get_json(server.root + "/sim/stats")["requests"] == total - finished_before
    assert (run_dir / "dataset.jsonl").read_bytes() == (tmp_path / "ref" / "dataset.jsonl").read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(300)  # Ray start-up and actors on a loaded 2-core machine
def test_embedding_stages_take_their_vectors_from_ray_workers(tmp_path: Path, local_ray: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from synthgen.embedding.encoder import Encoder
    from synthgen.engine.ray_engine import RayExecutor, RayOptions

    recipe_path = write(tmp_path / "embed.yaml", yaml.safe_dump({
        "name": "ray-embed", "seed": 5, "source": {"path": str(REPO / "recipes/data/banking77_sample.csv")},
        "stages": [{"semantic_dedup": {"threshold": 0.9}}, {"diversity_select": {"k": 40, "label_field": "category"}}],
    }))
    recipe = load_recipe(recipe_path)
    run_recipe(recipe, tmp_path / "local")
    encoded_here: list[int] = []
    original = Encoder._encode

    def spy(self: Encoder, texts: list[str]) -> object:
        encoded_here.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(Encoder, "_encode", spy)
    with RayExecutor(recipe, tmp_path / "ray", None, RayOptions(workers=2, block_size=50)) as executor:
        run_recipe(recipe, tmp_path / "ray", executor=executor)
    assert sum(encoded_here) == 0  # every vector came from the Ray workers, through the run's embedding cache
    local_ids = [row["id"] for row in read_jsonl(tmp_path / "local" / "dataset.jsonl")]
    assert [row["id"] for row in read_jsonl(tmp_path / "ray" / "dataset.jsonl")] == local_ids and len(local_ids) == 40


def test_missing_ray_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from synthgen.engine import ray_engine
    from synthgen.errors import ConfigError

    monkeypatch.setattr(ray_engine.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"synthgen\[ray\]"):
        ray_engine.RayExecutor(load_recipe(recipe_file(tmp_path, 4)), tmp_path / "run", None, ray_engine.RayOptions())


def test_a_workers_fatal_error_stops_the_run_with_its_message(tmp_path: Path, local_ray: None) -> None:
    from synthgen.engine.ray_engine import RayExecutor, RayOptions
    from synthgen.errors import SynthgenError
    from synthgen.sim import SimConfig, SimServer

    with SimServer(SimConfig(latency=0.0, api_key="right-key")) as sim:
        recipe = load_recipe(recipe_file(tmp_path, 8)).with_backend(base_url=sim.base_url)
        with RayExecutor(recipe, tmp_path / "run", None, RayOptions(block_size=4)) as executor, \
                pytest.raises(SynthgenError, match="backend answered 401") as caught:
            run_recipe(recipe, tmp_path / "run", executor=executor)
    assert "fix: set a valid key" in str(caught.value) and "Traceback" not in str(caught.value)
    assert not (tmp_path / "run" / "dataset.jsonl").exists()


def test_file_dedup_on_ray_writes_the_local_files(tmp_path: Path) -> None:
    from synthgen.dedup.evaluate import planted_corpus

    texts = planted_corpus(150, seed=2, words=(30, 60), edits=(0.01, 0.08))
    rows = texts + texts[:5]
    random.Random(3).shuffle(rows)  # exact copies among the rest, not at the end
    write(tmp_path / "in.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in rows))
    write(tmp_path / "eval.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in texts[10:12]))
    common = ["--field", "text", "--preset", "document", "--decontaminate", str(tmp_path / "eval.jsonl")]
    local = synthgen("dedup", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "local.jsonl"), *common)
    assert local.returncode == 0, local.stderr
    distributed = synthgen("dedup", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "ray.jsonl"), *common,
                           "--engine", "ray", "--block-size", "64", timeout=300)
    assert distributed.returncode == 0, distributed.stderr
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    rejects = [(r["line"], r["reason"]) for r in read_jsonl(tmp_path / "ray.jsonl.rejects.jsonl")]
    assert rejects == [(r["line"], r["reason"]) for r in read_jsonl(tmp_path / "local.jsonl.rejects.jsonl")]
    assert {"exact_duplicate", "near_duplicate", "contaminated"} <= {reason for _, reason in rejects}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.jsonl", "in.jsonl", "local.jsonl", "local.jsonl.rejects.jsonl",
                                                          "ray.jsonl", "ray.jsonl.rejects.jsonl"]  # no spill left behind
