"""Which selection of k of N covers the data best: intents covered and Vendi score per method.

The pool is Banking77's training set (10,003 customer-service texts, 77 intents); the intent labels are used
only to score a selection. Each method picks k texts from MiniLM embeddings of the pool; the table shows the
mean over seeds (mmr, scored by cosine to the pool centroid, has no randomness).

    python bench/diversity_eval.py                    # k = 77, 154, 500; 5 seeds
    python bench/diversity_eval.py --ks 77 --seeds 2
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from synthgen.embedding.diversity import k_center, kmeans_medoids, mmr, random_subset, vendi_score
from synthgen.embedding.encoder import Encoder

POOL = Path(__file__).resolve().parent / "data" / "banking77_train.csv"  # shipped: bench/data/SOURCES.md


def load_pool(path: Path) -> tuple[list[str], np.ndarray]:
    """Texts and their intent labels."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [row["text"] for row in rows], np.array([row["category"] for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=Path, default=POOL)
    parser.add_argument("--ks", type=int, nargs="+", default=[77, 154, 500])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--lambda", dest="lambda_", type=float, default=0.5)
    args = parser.parse_args()

    texts, labels = load_pool(args.pool)
    began = time.perf_counter()
    x = Encoder(batch_size=128).encode(texts)
    print(f"pool: {len(texts)} texts, {len(set(labels))} intents; encoded with MiniLM in {time.perf_counter() - began:.1f} s")
    centroid = x.mean(axis=0)
    relevance = x @ (centroid / np.linalg.norm(centroid))
    methods: dict[str, Callable[[int, int], np.ndarray]] = {
        "random": lambda k, seed: random_subset(x, k, seed),
        "k_center": lambda k, seed: k_center(x, k, seed),
        "mmr": lambda k, seed: mmr(x, k, relevance, args.lambda_),
        "kmeans_medoids": lambda k, seed: kmeans_medoids(x, k, seed),
    }
    print(f"{'k':>4} {'method':<15} {'intents':>7} {'vendi':>6} {'seconds':>7}")
    for k in args.ks:
        for name, select in methods.items():
            covered, vendi = [], []
            began = time.perf_counter()
            for seed in range(args.seeds):
                chosen = select(k, seed)
                covered.append(len(set(labels[chosen])))
                vendi.append(vendi_score(x[chosen]))
            seconds = (time.perf_counter() - began) / args.seeds
            print(f"{k:4d} {name:<15} {np.mean(covered):7.1f} {np.mean(vendi):6.1f} {seconds:7.2f}")


if __name__ == "__main__":
    main()
