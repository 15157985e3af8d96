"""Recall of approximate SemDeDup (FAISS IVF, k-means partitions) against the exact rule on synthetic embeddings
with planted near duplicates, and how well the stage's sampled `approx_recall` estimates it.

    python bench/semantic_recall.py [--rows 100000] [--dim 384] [--no-exact]
    python bench/semantic_recall.py --stage-rows 100000   # peak RSS of diversity_select (fake encoder)

The set mimics sentence embeddings: `rows / 100` topics in a `--latent`-dimensional subspace (a row is its
topic's centre plus noise), a fifth of the rows noisy copies of other rows (cosine 0.93-0.99 to their source,
about half above the 0.95 threshold). The exact rule (O(n^2 d): minutes at 100k on two cores) is the reference; with `--no-exact`
(300k rows) only the sampled estimate is printed.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from synthgen.embedding import approximate, diversity
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.semantic import DiversitySelect, DiversitySelectParams


def embeddings(rows: int, dim: int, latent: int = 32, spread: float = 1.0, seed: int = 0) -> np.ndarray:
    """Topic-clustered unit vectors with planted near duplicates, drawn in `latent` dimensions and rotated into
    `dim` (sentence embeddings fill a low-dimensional part of their space: that is what makes partitions miss)."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(max(1, rows // 100), latent)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    originals = rows - rows // 5
    noise = rng.normal(scale=spread / np.sqrt(latent), size=(originals, latent)).astype(np.float32)
    z = topics[rng.integers(0, len(topics), originals)] + noise  # `spread`: the noise vector's norm
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    scale = rng.uniform(0.12, 0.4, size=(rows // 5, 1)).astype(np.float32) / np.sqrt(latent)  # cosine ~0.93-0.99
    copies = z[rng.integers(0, originals, rows // 5)] + scale * rng.normal(size=(rows // 5, latent)).astype(np.float32)
    z = np.concatenate([z, copies])[rng.permutation(rows)]
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    rotation = np.linalg.qr(rng.normal(size=(dim, latent)))[0].astype(np.float32)  # orthonormal columns
    return np.ascontiguousarray(z @ rotation.T, dtype=np.float32)


def measured(function: Callable[[], Any]) -> tuple[Any, float, float]:
    """function()'s result, wall seconds, and the peak RSS growth in MB (sampled every 20 ms)."""
    process, peak, done = psutil.Process(), [0], threading.Event()
    start_rss = process.memory_info().rss

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], process.memory_info().rss - start_rss)

    thread = threading.Thread(target=sample)
    thread.start()
    started = time.perf_counter()
    try:
        result = function()
    finally:
        done.set()
        thread.join()
    return result, time.perf_counter() - started, peak[0] / 2**20


class HashEncoder:
    """A stand-in for the sentence encoder: random unit vectors seeded by each chunk's first text."""

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.random.default_rng(zlib.crc32(texts[0].encode())).normal(size=(len(texts), 384))
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class FakeEncoderContext(StageContext):
    def encoder(self, model: str, batch_size: int = 64) -> Any:
        return HashEncoder()


def stage_memory(rows: int) -> None:
    """Peak RSS growth of diversity_select (random half, with a score and a label) over `rows` records."""
    records = (Record(f"{i:016x}", {"q": f"question number {i}", "topic": f"t{i % 77}"}, {"scores": {"rating": i % 5}})
               for i in range(rows))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ctx = FakeEncoderContext(label="01-select", index=1, seed=0, recipe_path=folder / "r.yaml", prompts_dir=folder,
                                 resolve=lambda name: folder / name, workdir=folder)
        params = DiversitySelectParams(fields=["q"], fraction=0.5, method="random", score="rating", label_field="topic")
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        kept = sum(1 for _ in DiversitySelect(params, ctx).run(records))
        growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(f"diversity_select over {rows:,} records: kept {kept:,}, {time.perf_counter() - started:.1f} s, "
          f"peak RSS +{growth:.0f} MB")


def dropped_mask(found: list[tuple[int, int, float]], rows: int) -> np.ndarray:
    mask = np.zeros(rows, dtype=bool)
    mask[[d for d, _, _ in found]] = True
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--latent", type=int, default=32, help="dimensions the vectors really vary in")
    parser.add_argument("--threshold", type=float, default=diversity.DEFAULT_THRESHOLD)
    parser.add_argument("--exact", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--probes", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument("--stage-rows", type=int, help="measure diversity_select's memory instead")
    args = parser.parse_args()
    if max(args.rows, args.stage_rows or 0) > 300_000:
        parser.error("at most 300,000 rows (the machine is shared)")
    if args.stage_rows:
        stage_memory(args.stage_rows)
        return
    x = embeddings(args.rows, args.dim, args.latent)
    print(f"{args.rows:,} rows x {args.dim} float32 ({x.nbytes / 2**20:.0f} MB, latent {args.latent}), "
          f"threshold {args.threshold}")
    exact = None
    if args.exact:
        found, seconds, rss = measured(lambda: diversity.semantic_duplicates(x, args.threshold, exact_limit=len(x)))
        exact = dropped_mask(found, len(x))
        print(f"{'exact':<12} {seconds:7.1f} s  +{rss:6.0f} MB RSS  dropped {exact.sum():,}")
    methods: list[tuple[str, Callable[[], list[tuple[int, int, float]]]]] = [
        ("kmeans", lambda: diversity.semantic_duplicates(x, args.threshold, 0, 0, "kmeans"))]
    if approximate.backend("auto") == "faiss":
        methods += [(f"faiss p={p}", lambda p=p: approximate.faiss_duplicates(x, args.threshold, 0, p))
                    for p in args.probes]
    for name, method in methods:
        found, seconds, rss = measured(method)
        mask = dropped_mask(found, len(x))
        estimate, check_seconds, _ = measured(lambda m=mask: approximate.sampled_recall(x, m, args.threshold))
        line = (f"{name:<12} {seconds:7.1f} s  +{rss:6.0f} MB RSS  dropped {mask.sum():,}  "
                f"sampled approx_recall {estimate} ({check_seconds:.1f} s)")
        if exact is not None:
            line += (f"  recall of exact's drops {(mask & exact).sum() / max(1, exact.sum()):.4f}"
                     f"  decisions agree {(mask == exact).mean():.4f}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
