"""Gap filling (`embed_augment` with `operation: gaps`) against random-pair mixup and noise on real queries.

    python bench/gaps.py                 # target vectors only: where the targets land (no LLM)
    python bench/gaps.py --llamacpp      # also realised by the embedded SmolLM2-135M (a few minutes on 2 cores)

Data: recipes/data/banking77_sample.csv (160 Banking77 queries, 8 intents; `label_field: category`), the default
MiniLM encoder. Emptiness is a target's cosine distance to its nearest existing query: higher means it lies in a
hole of the set rather than on top of a record; the mean nearest-neighbour distance and the Vendi score of the
set after adding the targets (or the realised texts) say whether they spread it.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np
import orjson

from synthgen.embedding.diversity import vendi_score
from synthgen.embedding.encoder import Encoder
from synthgen.embedding.interpolate import emptiness, gaps, interpolate, nearest_neighbour_distances
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "recipes" / "data" / "banking77_sample.csv"


def spread(vectors: np.ndarray) -> str:
    return f"mean NN {nearest_neighbour_distances(vectors).mean():.4f}, Vendi {vendi_score(vectors):.2f}"


def targets_only(vectors: np.ndarray, labels: np.ndarray, count: int) -> None:
    print(f"before: {spread(vectors)}")
    for seed in (0, 1, 2):
        rng = np.random.default_rng(seed)
        targets, _, empty, kinds = gaps(vectors, labels, count, rng)
        a, b = rng.integers(0, len(vectors), count), rng.integers(0, len(vectors), count)
        mixed = interpolate(vectors[a], vectors[b], rng.uniform(0.2, 0.8, count))
        print(f"seed {seed}: emptiness gaps {empty.mean():.3f} ({kinds.count('cell')} cells) vs mixup "
              f"{emptiness(mixed, vectors).mean():.3f} | +gaps {spread(np.vstack([vectors, targets]))} | "
              f"+mixup {spread(np.vstack([vectors, mixed]))}")


def realised(encoder: Encoder, count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="gaps-bench-") as tmp:
        for operation in ("gaps", "mixup", "noise"):
            recipe = Path(tmp) / f"{operation}.yaml"
            recipe.write_text(f"""
name: gaps-{operation}
seed: 9
prompts_dir: {ROOT / 'prompts'}
source: {{path: {DATA}}}
backend: {{kind: llamacpp, options: {{slots: 4, context_per_slot: 1024}}}}
stages:
  - embed_augment: {{operation: {operation}, text_field: text, label_field: category, count: {count}, decode: llm,
                     tau: 0.6, max_attempts: 2, sampling: {{temperature: 0.9, max_tokens: 48}}}}
""")
            run = run_recipe(load_recipe(recipe), Path(tmp) / operation).run_dir
            rows = [orjson.loads(line) for line in run.dataset_path.read_bytes().splitlines()]
            inputs = [r["fields"]["text"] for r in rows if "operation" not in r["fields"]]
            added = [r["fields"]["text"] for r in rows if "operation" in r["fields"]]
            reasons: dict[str, int] = {}
            for line in run.rejects_path.read_bytes().splitlines():
                reason = orjson.loads(line)["reason"]
                reasons[reason] = reasons.get(reason, 0) + 1
            print(f"{operation}: kept {len(added)} of {count}, rejects {reasons}; "
                  f"after: {spread(encoder.encode(inputs + added))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=16, help="new records per operation")
    parser.add_argument("--llamacpp", action="store_true", help="also realise them with the embedded SmolLM2-135M")
    args = parser.parse_args()
    with DATA.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    encoder = Encoder()
    vectors = encoder.encode([row["text"] for row in rows])
    targets_only(vectors, np.array([row["category"] for row in rows]), args.count)
    if args.llamacpp:
        realised(encoder, args.count)


if __name__ == "__main__":
    main()
