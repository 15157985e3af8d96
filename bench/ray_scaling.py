"""Ray engine scaling: the same generation recipe on the local engine and on a local Ray with 1 and 2 workers,
against one sim server in its own process (fixed latency, so throughput is bounded by requests in flight);
then a MinHash dedup recipe over planted near duplicates on both engines (same dataset checked).

Each worker is a Ray actor with its own backend window (`max_concurrency`), so 2 workers keep twice as many
requests in flight; on one machine the gain stops where client + server CPU saturates the cores.

    python bench/ray_scaling.py                          # 8,000 requests, 100 ms latency, window 64 per worker
    python bench/ray_scaling.py --requests 1000 --latency 0.05 --dedup-families 2000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

from synthgen.dedup.evaluate import planted_corpus
from synthgen.engine.ray_engine import RayExecutor, RayOptions
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.sim.process import SimProcess
from synthgen.stages.base import run_locally

REPO = Path(__file__).resolve().parent.parent


def recipe_path(folder: Path, base_url: str, requests: int, window: int) -> Path:
    recipe = {
        "name": "ray-scaling", "seed": 3, "prompts_dir": str(REPO / "prompts"),
        "backend": {"kind": "openai", "model": "sim-model", "base_url": base_url, "max_concurrency": window},
        "stages": [{"generate": {"taxonomy": str(REPO / "taxonomies/quickstart.yaml"), "count": requests,
                                 "output": "text", "sampling": {"max_tokens": 32}}}],
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def dedup_recipe_path(folder: Path, families: int) -> Path:
    texts = folder / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": text}) + "\n" for text in planted_corpus(families, seed=4, edits=(0.005, 0.05))))
    recipe = {"name": "ray-dedup", "source": {"path": str(texts)},
              "stages": [{"minhash_dedup": {"preset": "document", "threshold": 0.8}}]}
    path = folder / "dedup.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def timed_run(path: Path, out: Path, executor: object) -> tuple[float, int]:
    recipe = load_recipe(path)
    start = time.perf_counter()
    result = run_recipe(recipe, out, fresh=True, executor=executor)  # type: ignore[arg-type]
    return time.perf_counter() - start, result.stats.finished_requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--window", type=int, default=64, help="max_concurrency of each backend (per worker)")
    parser.add_argument("--block-size", type=int, default=1000)
    parser.add_argument("--dedup-families", type=int, default=8000, help="planted families (~2.5 texts each)")
    args = parser.parse_args()

    import ray

    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"ray.init: {time.perf_counter() - started:.1f} s (not counted below)")
    ideal_one = args.window / args.latency
    print(f"{args.requests} requests, {args.latency * 1000:.0f} ms latency, window {args.window} per backend "
          f"(ideal {ideal_one:.0f} req/s per window)")
    print(f"{'engine':<18} {'seconds':>8} {'req/s':>8} {'vs local':>9}")
    with tempfile.TemporaryDirectory() as tmp, SimProcess("--latency", str(args.latency)) as server:
        path = recipe_path(Path(tmp), server.root + "/v1", args.requests, args.window)
        seconds, finished = timed_run(path, Path(tmp) / "local", run_locally)
        local_rate = finished / seconds
        print(f"{'local':<18} {seconds:>8.1f} {local_rate:>8.0f} {1.0:>9.2f}")
        for workers in (1, 2):
            options = RayOptions(workers=workers, block_size=args.block_size)
            recipe = load_recipe(path)
            with RayExecutor(recipe, Path(tmp) / f"ray{workers}", None, options) as executor:
                seconds, finished = timed_run(path, Path(tmp) / f"ray{workers}", executor)
            rate = finished / seconds
            print(f"{f'ray, {workers} worker(s)':<18} {seconds:>8.1f} {rate:>8.0f} {rate / local_rate:>9.2f}")

        path = dedup_recipe_path(Path(tmp), args.dedup_families)
        seconds, _ = timed_run(path, Path(tmp) / "dedup-local", run_locally)
        recipe = load_recipe(path)
        with RayExecutor(recipe, Path(tmp) / "dedup-ray", None, RayOptions(block_size=args.block_size)) as executor:
            ray_seconds, _ = timed_run(path, Path(tmp) / "dedup-ray", executor)
        outputs = [(Path(tmp) / run / "dataset.jsonl").read_bytes() for run in ("dedup-local", "dedup-ray")]
        kept, total = outputs[0].count(b"\n"), sum(1 for _ in open(Path(tmp) / "texts.jsonl"))
        print(f"\nminhash_dedup of {total} texts ({total - kept} near duplicates dropped): local {seconds:.1f} s, "
              f"ray {ray_seconds:.1f} s; same dataset: {outputs[0] == outputs[1]}")
    ray.shutdown()


if __name__ == "__main__":
    main()
