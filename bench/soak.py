"""Soak: many requests through the sim with faults of every kind and SIGKILLs at random moments, then resume.

Prints lost records (requested draws in neither dataset.jsonl nor rejects.jsonl), duplicated ids, re-sent
finished requests (bodies the server received again after the client had cached their answer; the sim
hashes every body, and the script rebuilds each request the recipe can make to map cache keys to bodies),
and the client's resident memory when 20%, 50% and 100% of the requests were finished.

    python bench/soak.py                                   # 50,000 requests, 10% faults, 3 kills
    python bench/soak.py --requests 2000 --kills 1         # the reduced run CI makes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from synthgen.build import build_stages
from synthgen.recipe import load_recipe
from synthgen.runtime import Runtime
from synthgen.sim import FAULT_KINDS
from synthgen.sim.process import SimProcess, get_json
from synthgen.stats import RunStats

REPO = Path(__file__).resolve().parent.parent
RECIPE = """
name: soak
seed: 7
prompts_dir: {repo}/prompts
backend: {{kind: openai, model: sim-model, base_url: "{url}", max_concurrency: {concurrency}, timeout: 1.0,
          max_attempts: 8, retry_initial: 0.05, retry_max: 0.5}}
stages:
  - generate:
      taxonomy: {repo}/taxonomies/quickstart.yaml
      count: {requests}
      max_retries: 3
      sampling: {{temperature: 1.0, max_tokens: 64}}
      schema:
        type: object
        properties: {{instruction: {{type: string}}, input: {{type: string}}}}
        required: [instruction, input]
"""


def cached_keys(run_dir: Path) -> set[str]:
    path = run_dir / "cache.sqlite"
    if not path.exists():
        return set()
    for _ in range(20):
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2) as db:
                return {row[0] for row in db.execute("SELECT key FROM completions")}
        except sqlite3.OperationalError:
            time.sleep(0.1)
    return set()


def body_hashes(recipe_path: Path) -> dict[str, str]:
    """Cache key -> sha256 of the HTTP body, for every request the recipe can send (each attempt)."""
    recipe = load_recipe(recipe_path)
    (stage,) = build_stages(recipe, RunStats())
    runtime = Runtime(backend=None, loop=None, model=recipe.backend.model, backend_kind="openai", max_pending=0)  # type: ignore[arg-type]
    schema = stage.schemas[stage.taxonomy.leaves[0].path].schema  # type: ignore[attr-defined]
    mapping = {}
    for job in stage.jobs([]):  # type: ignore[attr-defined]
        for attempt in range(stage.params.max_retries + 1):  # type: ignore[attr-defined]
            request = runtime.request(job.messages, job.sampling, (recipe.seed, stage.ctx.label, job.origin), schema,
                                      job.sample, attempt)
            mapping[request.key()] = hashlib.sha256(orjson.dumps(request.body())).hexdigest()
    return mapping


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--fault-rate", type=float, default=0.10)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="synthgen-soak-"))
    faults = [f"--fault={kind}={args.fault_rate / len(FAULT_KINDS)}" for kind in FAULT_KINDS]
    with SimProcess("--latency", "0.01", "--hang-seconds", "3", "--track-bodies", *faults) as server:
        root = server.root
        recipe_path = work / "soak.yaml"
        recipe_path.write_text(RECIPE.format(repo=REPO, url=root + "/v1", concurrency=args.concurrency, requests=args.requests))
        bodies = body_hashes(recipe_path)
        run_dir = work / "run"
        marks = {round(args.requests * share): f"{share:.0%}" for share in (0.2, 0.5, 1.0)}
        rss: dict[str, float] = {}
        resent = 0
        finished_before: set[str] = set()
        began = time.monotonic()
        for phase in range(args.kills + 1):
            killing = phase < args.kills
            already = len(finished_before)  # kill somewhere in the work still to do, not in the cache replay
            stop_at = already + rng.uniform(0.15, 0.6) * (args.requests - already) if killing else float("inf")
            client = subprocess.Popen([sys.executable, "-m", "synthgen", "run", str(recipe_path), "--out", str(run_dir)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while client.poll() is None:
                done = len(cached_keys(run_dir))
                for mark, label in marks.items():
                    if done >= mark and label not in rss:
                        rss[label] = rss_mb(client.pid)
                if done >= stop_at:
                    os.kill(client.pid, signal.SIGKILL)
                    client.wait()
                    break
                time.sleep(0.25)
            if not killing and client.returncode != 0:
                raise SystemExit(f"the final run failed with exit code {client.returncode}")
            received = get_json(root + "/sim/bodies")
            get_json(root + "/sim/reset", "POST")
            finished_bodies = {bodies[key] for key in finished_before if key in bodies}
            resent += sum(1 for digest in received if digest in finished_bodies)  # type: ignore[union-attr]
            finished_before = cached_keys(run_dir)
            state = "killed" if killing else "finished"
            print(f"phase {phase + 1}: {state} with {len(finished_before):,} requests cached, "
                  f"{len(received):,} bodies received")  # type: ignore[arg-type]
        dataset = [orjson.loads(line) for line in (run_dir / "dataset.jsonl").read_bytes().splitlines()]
        rejects = [orjson.loads(line) for line in (run_dir / "rejects.jsonl").read_bytes().splitlines()]
        ids = [row["id"] for row in dataset] + [row["id"] for row in rejects]
        stats = json.loads((run_dir / "stats.json").read_text())
        print(f"{args.requests:,} draws, {args.fault_rate:.0%} faults of every kind {list(FAULT_KINDS)}, "
              f"{args.kills} SIGKILLs, {time.monotonic() - began:.0f} s")
        print(f"dataset {len(dataset):,}, rejects {len(rejects):,} {dict(stats['rejects_by_reason'])}")
        print(f"lost records: {args.requests - len(set(ids))}")
        print(f"duplicated ids: {len(ids) - len(set(ids))}")
        print(f"re-sent finished requests: {resent}")
        print("client RSS (MB) at " + ", ".join(f"{label} of requests: {mb:.0f}" for label, mb in rss.items()))


if __name__ == "__main__":
    main()
