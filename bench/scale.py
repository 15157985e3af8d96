"""Scale benchmark (issue 19): a recipe-shaped pipeline without LLM calls at 100k, 300k and 1M records.

    python bench/scale.py                         # sizes 100k,300k,1000k, local engine
    python bench/scale.py --sizes 100k --engine ray
    python bench/scale.py --sizes 1m --engine ray --end-to-end   # one fresh run, no per-stage rows

Input: a JSONL file of synthetic instruction-like records (~1.7 KB of JSON each: instruction, input, output),
with planted exact duplicates (5%), near duplicates (5%: an earlier record with a few words changed) and short
outputs (2%). Stages: exact_dedup, minhash_dedup, length_filter, export to Parquet, export to the HF layout.

How a stage is timed: stages run chained as generators, so in one run their times interleave. Instead each stage
runs on its own, in its own process: run k is the recipe's first k stages into the same run directory, so it
resumes from stage k-1's checkpoint and runs stage k alone. Its row is that process's time inside
`synthgen.run` (reading the checkpoint before it, the stage, writing its checkpoint and dataset.jsonl, plus the
fixed overhead shown in the `overhead` row: a run with nothing left to do, i.e. fingerprints of the input file and,
with Ray, starting Ray), records/s (records the stage took in / wall), peak RSS (the process tree's RSS sampled
every 50 ms with psutil, Ray's processes included; `anon` the same without file-backed pages, i.e. without
memory-mapped files such as the Arrow files the HF export maps, which the kernel drops under pressure; `driver`
is the driver's exact high-water mark, ru_maxrss) and
the disk it wrote: `ckpt` its checkpoint (output, rejects, .done), `plain` what that checkpoint took as plain
JSONL before issue 19, `disk` all it left (checkpoint, index, spills, export folder). The `all` row is one fresh
run of every stage end to end. `kept` is a digest of the ids a stage kept, in order, to compare decisions across
engines and versions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

STAGES: list[dict[str, Any]] = [
    {"exact_dedup": {"fields": ["instruction", "input", "output"]}},
    {"minhash_dedup": {"fields": ["instruction", "input", "output"], "preset": "document"}},
    {"length_filter": {"field": "output", "min_chars": 200}},
    {"export": {"format": "parquet", "layout": "records", "out": "export_parquet"}},
    {"export": {"format": "hf", "layout": "records", "out": "export_hf", "test_size": 0.05}},
]
WORDS = ("data model train token layer vector query answer result method value error system network function "
         "sample batch weight loss score index table field record output input prompt text label class graph "
         "node edge path cost time space memory disk cache file stream order group split merge sort filter").split()


def parse_size(text: str) -> int:
    """`100k`, `1m`, `1000k` or a plain number."""
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def make_input(path: Path, count: int, seed: int = 0) -> Path:
    """Write `count` synthetic records with planted duplicates to `path` (kept between runs)."""
    if path.exists():
        return path
    rng = random.Random(seed)
    sentences = [" ".join(rng.choices(WORDS, k=rng.randint(8, 18))).capitalize() + "." for _ in range(20_000)]
    made: list[dict[str, str]] = []  # a window of recent records to copy duplicates from
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        for n in range(count):
            roll = rng.random()
            if made and roll < 0.05:
                row = dict(rng.choice(made))  # exact duplicate
            elif made and roll < 0.10:
                row = dict(rng.choice(made))  # near duplicate: three words of the output changed
                words = row["output"].split()
                for _ in range(3):
                    words[rng.randrange(len(words))] = rng.choice(WORDS)
                row["output"] = " ".join(words)
            else:
                row = {"instruction": f"Task {n}: " + " ".join(rng.choices(sentences, k=2)),
                       "input": " ".join(rng.choices(sentences, k=3)),
                       "output": " ".join(rng.choices(sentences, k=1 if roll > 0.98 else 14))}
                made.append(row)
                if len(made) > 2_000:
                    made.pop(rng.randrange(len(made)))
            handle.write(orjson.dumps(row) + b"\n")
    tmp.replace(path)
    return path


def recipe(source: Path, stages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "scale", "backend": {"kind": "sim", "model": "none"},
            "source": {"path": str(source), "fields": ["instruction", "input", "output"]}, "stages": stages}


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one recipe (in this process) while sampling the process tree's RSS; what the parent reports."""
    import psutil

    from synthgen import api

    me, peak, stop = psutil.Process(), [0, 0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            total = anonymous = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    info = process.memory_info()
                except psutil.Error:
                    continue  # ended between the listing and the reading
                total += info.rss
                anonymous += info.rss - info.shared  # shared = file-backed pages (memory-mapped files) + shmem
            peak[0], peak[1] = max(peak[0], total), max(peak[1], anonymous)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    ray = None
    if spec["engine"] == "ray":
        from synthgen.engine.ray_engine import RayOptions

        ray = RayOptions(workers=2, num_cpus=2, object_store_mb=1024)  # Ray Data spills the rest to disk
    started = time.perf_counter()
    api.run(api.recipe_from_dict(spec["recipe"]), spec["out"], ray=ray)
    wall = time.perf_counter() - started
    stop.set()
    thread.join()
    return {"wall": wall, "peak": peak[0], "anon": peak[1],
            "driver": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({spec['out']}):\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def stage_disk(out: Path, label: str, stage: dict[str, Any]) -> tuple[int, int]:
    """Bytes of the stage's checkpoint (output, rejects, .done), and of all it left: its files in checkpoints/
    (index, spills) and its export folder."""
    files = {p.name: p.stat().st_size for p in (out / "checkpoints").glob(f"{label}.*") if p.is_file()}
    checkpoint = sum(files.get(f"{label}{suffix}", 0) for suffix in (".jsonl.zst", ".rejects.jsonl.zst", ".done"))
    params = next(iter(stage.values()))
    return checkpoint, sum(files.values()) + (folder_bytes(out / params["out"]) if "out" in params else 0)


def plain_bytes(out: Path, label: str) -> int:
    """What the stage's checkpoint took as plain JSONL: its output (dataset.jsonl) and its rejects."""
    from synthgen.rundir import read_lines

    rejects = out / "checkpoints" / f"{label}.rejects.jsonl.zst"
    return (out / "dataset.jsonl").stat().st_size + sum(len(line) + 1 for line in read_lines(rejects))


def kept_digest(out: Path) -> str:
    digest = hashlib.sha256()
    with (out / "dataset.jsonl").open("rb") as handle:
        for line in handle:
            digest.update(orjson.loads(line)["id"].encode())
    return digest.hexdigest()[:12]


def measure(size: int, work: Path, engine: str, stages: list[dict[str, Any]], per_stage: bool = True) -> list[dict[str, Any]]:
    """One row per stage (unless not `per_stage`), then the overhead and the end-to-end run, at `size` records."""
    source = make_input(work / f"input-{size}.jsonl", size)
    out, rows = work / f"run-{engine}-{size}", []
    shutil.rmtree(out, ignore_errors=True)
    for k, stage in enumerate(stages if per_stage else []):
        result = run_child({"recipe": recipe(source, stages[:k + 1]), "out": str(out), "engine": engine})
        label = f"{k:02d}-{next(iter(stage))}"
        counts = orjson.loads((out / "stats.json").read_bytes())["stages"][label]
        checkpoint, disk = stage_disk(out, label, stage)
        rows.append({"stage": label, **result, "records_in": counts["records_in"], "records_out": counts["records_out"],
                     "checkpoint": checkpoint, "plain": plain_bytes(out, label), "disk": disk, "kept": kept_digest(out)})
    if per_stage:
        overhead = run_child({"recipe": recipe(source, stages), "out": str(out), "engine": engine})
        rows.append({"stage": "overhead", **overhead, "records_in": 0})
        shutil.rmtree(out)
    whole = run_child({"recipe": recipe(source, stages), "out": str(out), "engine": engine})
    rows.append({"stage": "all", **whole, "records_in": size, "disk": folder_bytes(out), "kept": kept_digest(out)})
    shutil.rmtree(out)
    return rows


def show(size: int, rows: list[dict[str, Any]]) -> None:
    mb = 1 << 20
    print(f"\n{size:,} records")
    print(f"{'stage':18} {'wall s':>8} {'rec/s':>9} {'peak MB':>8} {'anon MB':>8} {'driver MB':>9} {'ckpt MB':>8} "
          f"{'plain MB':>8} {'disk MB':>8} {'out':>8}  kept")
    for row in rows:
        rate = row["records_in"] / row["wall"] if row["records_in"] else 0
        sizes = "".join(f"{'' if row.get(k) is None else f'{row[k] / mb:.1f}':>9}" for k in ("checkpoint", "plain", "disk"))
        print(f"{row['stage']:18} {row['wall']:8.1f} {rate:9,.0f} {row['peak'] / mb:8.0f} {row['anon'] / mb:8.0f} "
              f"{row['driver'] / mb:9.0f}"
              f"{sizes} {row.get('records_out', ''):>8}  {row.get('kept', '')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100k,300k,1000k", help="comma-separated record counts (k, m suffixes)")
    parser.add_argument("--engine", choices=["local", "ray"], default="local", help="ray: two local workers")
    parser.add_argument("--work", type=Path, default=Path("/tmp/synthgen-scale"), help="inputs and run directories")
    parser.add_argument("--stages", type=int, default=len(STAGES), help="run only the first N stages")
    parser.add_argument("--json", type=Path, help="also write every row here")
    parser.add_argument("--end-to-end", action="store_true", help="only the overhead and end-to-end rows")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    results = {}
    for size in map(parse_size, args.sizes.split(",")):
        results[size] = measure(size, args.work, args.engine, STAGES[:args.stages], not args.end_to_end)
        show(size, results[size])
    if len(results) > 1:
        first, last = min(results), max(results)
        peak = {size: max(row["peak"] for row in rows) for size, rows in results.items()}
        anon = {size: max(row["anon"] for row in rows) for size, rows in results.items()}
        wall = {size: next(row["wall"] for row in rows if row["stage"] == "all") for size, rows in results.items()}
        print(f"\n{first:,} -> {last:,} records ({last / first:.0f}x): peak RSS x{peak[last] / peak[first]:.2f} "
              f"(anonymous x{anon[last] / anon[first]:.2f}), "
              f"end-to-end time x{wall[last] / wall[first]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"engine": args.engine, "sizes": results}, indent=1))


if __name__ == "__main__":
    main()
