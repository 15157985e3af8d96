"""Generating to a quota, steered, against static sampling at an equal request budget.

On the sim, the quickstart taxonomy's four most weighted leaves repeat themselves (60% of their answers come from
four fixed texts), the other four 5% of the time; the recipe is the quickstart's instruction step then exact and
MinHash dedup. Three variants spend the same number of requests:
  (a) static: `count: BUDGET` draws by the taxonomy's weights, dedup after;
  (b) adaptive: `target:` (unreachable, so it stops at the budget) with the bandit over leaves and novelty;
  (c) adaptive + gap filling: (b) with a tenth of the budget moved to `embed_augment` `operation: gaps`
      (`decode: llm`, at most 2 attempts per gap) after the dedup stages.
Columns: records kept, kept records within cosine 0.9 of an earlier kept one (near copies that exact and
MinHash dedup let through), leaves covered (of 8), Vendi score of the kept instructions (MiniLM), requests sent
(cache misses), requests per kept record, distinct records (kept minus near copies) per request and Vendi
score against (a)'s, records the gap stage added.
`--repeat paraphrase` makes the repeating leaves reword their fixed texts (sim `leaf_repeat`) instead of
repeating them byte for byte; `--reject-within 0.9` gives (b) and (c) `novelty.reject_within` and adds
  (s) static + semantic dedup: (a) with `semantic_dedup` at that cosine after MinHash, the same check without steering.
On the sim one more variant shows what steering could at best reach:
  (r) reference: (a), or (s) with `--reject-within`, on a sim where no leaf repeats more than 5%.
`--seeds 1,2,3` runs every variant for each seed and ends with each variant's mean and least ratio to (a).
`--llamacpp` runs the same on the embedded SmolLM2-135M (no repeating leaves there: whatever the model repeats
by itself), with a small budget.

    python bench/steering.py [--budget 400] [--seeds 1] [--repeat paraphrase --reject-within 0.9]
    python bench/steering.py --llamacpp --budget 60
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from synthgen.embedding.diversity import vendi_score
from synthgen.embedding.encoder import Encoder
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent
REPEATING = ["writing/creative", "reasoning/math-word-problems", "coding/python-functions", "writing/persuasive"]
FRESH = ["writing/summarisation", "reasoning/logic-puzzles", "coding/debugging", "coding/sql"]
SCHEMA = {"type": "object", "properties": {"instruction": {"type": "string", "minLength": 10}, "input": {"type": "string"}},
          "required": ["instruction", "input"], "additionalProperties": False}


def recipe(variant: str, budget: int, seed: int, backend: dict, max_tokens: int, reject_within: float | None) -> dict:
    """The recipe of one variant (a, b, c or s) at `budget` requests."""
    gaps = budget // 10 if variant == "c" else 0
    generate: dict = {"taxonomy": str(REPO / "taxonomies" / "quickstart.yaml"), "count": budget - 2 * gaps,
                      "leaf_field": "leaf", "schema": SCHEMA, "sampling": {"temperature": 1.0, "max_tokens": max_tokens}}
    if variant in "bc":
        generate["target"] = {"records": budget, "round": max(8, budget // 16), "stall": budget,
                              "after": "minhash_dedup"}  # the gap stage adds records: it is no filter to probe
        if reject_within is not None:
            generate["target"]["novelty"] = {"weight": 1.0, "reject_within": reject_within}
    stages: list[dict] = [{"generate": generate}, {"exact_dedup": {"fields": ["instruction", "input"]}},
                          {"minhash_dedup": {"fields": ["instruction", "input"], "threshold": 0.8}}]
    if variant == "s" or variant == "r" and reject_within is not None:
        stages.append({"semantic_dedup": {"fields": ["instruction", "input"], "threshold": reject_within}})
    if gaps:
        stages.append({"embed_augment": {"operation": "gaps", "text_field": "instruction", "label_field": "leaf",
                                         "count": gaps, "decode": "llm", "max_attempts": 2,
                                         "sampling": {"temperature": 0.9, "max_tokens": max_tokens}}})
    return {"name": f"steering-{variant}", "seed": seed, "backend": backend, "prompts_dir": str(REPO / "prompts"),
            "stages": stages}


def measure(data: dict, folder: Path, encoder: Encoder) -> list[object]:
    """Run one recipe; its row of the table."""
    path = folder / f"{data['name']}.json"
    path.write_text(json.dumps(data))
    result = run_recipe(load_recipe(path), folder / data["name"], fresh=True)
    rows = [json.loads(line) for line in result.run_dir.dataset_path.read_text().splitlines() if line.strip()]
    stats = json.loads((result.run_dir.path / "stats.json").read_text())
    sent = stats["requests"]["http_sent"]
    filled = sum(m.get("accepted", 0) for label, m in stats["metrics"].items() if label.endswith("embed_augment"))
    texts = [f"{row['fields'].get('instruction', '')}\n{row['fields'].get('input') or ''}" for row in rows]
    leaves = {row["fields"].get("leaf") for row in rows} - {None}
    vectors = encoder.encode(texts) if texts else np.zeros((0, 1))
    vendi = vendi_score(vectors) if texts else 0.0
    return [len(rows), near_copies(vectors), len(leaves), round(vendi, 1), sent, round(sent / max(len(rows), 1), 2), filled]


def near_copies(vectors: np.ndarray, within: float = 0.9) -> int:
    """How many rows have a cosine of at least `within` to an earlier row."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return int((np.tril(unit @ unit.T, k=-1) >= within).any(axis=1).sum())


def sim_backend(repeat: str, repeating: bool) -> dict:
    """The sim with REPEATING leaves repeating 60% of the time (5% when not `repeating`) and FRESH leaves 5%."""
    rates = {leaf: 0.6 if repeating else 0.05 for leaf in REPEATING} | {leaf: 0.05 for leaf in FRESH}
    return {"kind": "sim", "sim": {"latency": 0.0, "leaf_duplicate_rates": rates, "leaf_repeat": repeat}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=400)
    parser.add_argument("--seeds", default="1", help="comma-separated seeds; each runs every variant")
    parser.add_argument("--llamacpp", action="store_true", help="the embedded SmolLM2-135M instead of the sim")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--repeat", choices=["exact", "paraphrase"], default="exact",
                        help="how a repeating leaf repeats itself on the sim (sim `leaf_repeat`)")
    parser.add_argument("--reject-within", type=float, default=None,
                        help="novelty.reject_within for (b) and (c); default none")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    variants = "abc" + ("s" if args.reject_within is not None else "") + ("" if args.llamacpp else "r")
    names = {"a": "(a) static + dedup", "b": "(b) adaptive", "c": "(c) adaptive + gaps",
             "s": "(s) static + semantic dedup", "r": "(r) reference, no repeats"}
    encoder = Encoder()
    ratios: dict[str, list[tuple[float, float]]] = {variant: [] for variant in variants}
    print(f"{'llamacpp SmolLM2-135M' if args.llamacpp else 'sim, ' + args.repeat + ' repeats'}, budget {args.budget}"
          f" requests, reject_within {args.reject_within}")
    for seed in seeds:
        table = {}
        with tempfile.TemporaryDirectory() as tmp:
            for variant in variants:
                backend = {"kind": "llamacpp"} if args.llamacpp else sim_backend(args.repeat, variant != "r")
                data = recipe(variant, args.budget, seed, backend, args.max_tokens, args.reject_within)
                table[variant] = measure(data, Path(tmp), encoder)
        print(f"\nseed {seed}")
        print(f"{'variant':<30}{'kept':>6}{'near copies':>13}{'leaves':>8}{'vendi':>8}{'requests':>10}{'req/kept':>10}"
              f"{'distinct/req vs a':>19}{'vendi vs a':>12}{'gap fills':>11}")
        distinct = {variant: (row[0] - row[1]) / max(row[4], 1) for variant, row in table.items()}
        for variant, row in table.items():
            ratio = (distinct[variant] / distinct["a"] if distinct["a"] else 0.0,
                     row[3] / table["a"][3] if table["a"][3] else 0.0)
            ratios[variant].append(ratio)
            print(f"{names[variant]:<30}{row[0]:>6}{row[1]:>13}{row[2]:>8}{row[3]:>8}{row[4]:>10}{row[5]:>10}"
                  f"{ratio[0]:>19.2f}{ratio[1]:>12.2f}{row[6]:>11}")
    if len(seeds) > 1:
        print(f"\nover seeds {args.seeds}: mean (least) ratio to (a)")
        print(f"{'variant':<30}{'distinct/req vs a':>22}{'vendi vs a':>16}")
        for variant in variants[1:]:
            pairs = ratios[variant]
            cells = [f"{statistics.mean(p[k] for p in pairs):.2f} ({min(p[k] for p in pairs):.2f})" for k in (0, 1)]
            print(f"{names[variant]:<30}{cells[0]:>22}{cells[1]:>16}")


if __name__ == "__main__":
    main()
