"""Peak RSS and records/s of `minhash_dedup` over quickstart-shaped records, and the load time of a saved index.

Records are ~1.7 KB of JSON (instruction, input, response of random words, 230 words each), 20% of them an
earlier record with three words replaced; the stage dedups the three fields joined (`short` preset: character
5-grams, ~1,700 shingles per record). Run one measurement per process (peak RSS is the process's):

    python bench/dedup_memory.py stage 100000 first      # or: longest
    python bench/dedup_memory.py load 20000               # index of N keys saved, then timed loading
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from synthgen.dedup.index import NearDuplicateIndex
from synthgen.dedup.minhash import MinHasher, Shingling, Sketches
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.dedup import MinHashDedup, MinHashDedupParams


def quickstart_rows(count: int, seed: int = 0) -> Iterator[Record]:
    """`count` records, one in five a near duplicate (three words replaced) of one of the last 5,000 bases."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(20000)]
    recent: list[list[str]] = []
    for i in range(count):
        if recent and rng.random() < 0.2:
            words = list(rng.choice(recent))
            for _ in range(3):
                words[rng.randrange(len(words))] = rng.choice(vocabulary)
        else:
            words = rng.choices(vocabulary, k=230)
        if len(recent) < 5000:
            recent.append(words)
        else:
            recent[rng.randrange(5000)] = words
        yield Record(f"{i:016x}", {"instruction": " ".join(words[:15]), "input": " ".join(words[15:30]),
                                   "response": " ".join(words[30:])})


def run_stage(count: int, keep: str, folder: Path) -> dict[str, object]:
    dropped = 0

    def reject(record: Record, reason: str, detail: str) -> None:
        nonlocal dropped
        dropped += 1

    ctx = StageContext(label="bench", index=0, seed=0, recipe_path=None, prompts_dir=None, resolve=None,  # type: ignore[arg-type]
                       reject=reject, workdir=folder)
    stage = MinHashDedup(MinHashDedupParams(fields=["instruction", "input", "response"], keep=keep), ctx)  # type: ignore[arg-type]
    began = time.perf_counter()
    kept = sum(1 for _ in stage.run(quickstart_rows(count)))
    seconds = time.perf_counter() - began
    return {"records": count, "keep": keep, "kept": kept, "dropped": dropped, "seconds": round(seconds, 1),
            "records_per_s": round(count / seconds), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "index_mb": round((folder / "bench.index.npz").stat().st_size / 2**20, 1)}


def time_load(count: int, folder: Path) -> dict[str, object]:
    hasher, index = MinHasher(Shingling("char", 5)), NearDuplicateIndex(0.8, folder=folder)
    texts = [" ".join(map(str, record.fields.values())) for record in quickstart_rows(count, seed=1)]
    for start in range(0, count, 1024):
        sketches = hasher.sketch(texts[start : start + 1024])
        index.extend([str(start + i) for i in range(len(sketches.signatures))], sketches.signatures,
                     *_sets(sketches))
    index.save(folder / "index.npz")
    began = time.perf_counter()
    loaded = NearDuplicateIndex.load(folder / "index.npz", folder=folder)
    return {"keys": len(loaded), "load_seconds": round(time.perf_counter() - began, 2)}


def _sets(sketches: Sketches) -> tuple[np.ndarray, np.ndarray]:
    """Each document's shingle set, as set offsets and values."""
    sets = [sketches.shingle_set(i) for i in range(len(sketches.signatures))]
    return np.cumsum([0, *(s.size for s in sets)]), np.concatenate(sets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["stage", "load"])
    parser.add_argument("count", type=int)
    parser.add_argument("keep", nargs="?", choices=["first", "longest"], default="first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = run_stage(args.count, args.keep, Path(folder)) if args.mode == "stage" else time_load(args.count, Path(folder))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
