"""Retrieval triplets from a corpus (recipes/corpus_triplets.yaml) on the dolma pages: how many generated queries
pass the round trip, how many hard negatives each kept query gets, and what the false-negative guard drops.

    python bench/corpus_triplets.py [--backend sim|llamacpp] [--pages 0,1,2] [--fresh] [--out outputs/bench-corpus-triplets]

The shipped recipe runs unchanged (top_k 1, min_similarity 0.3, k 3, max_positive_fraction 0.95) except for its backend and the
pages it reads; `--backend llamacpp` is the packaged SmolLM2-135M (about 160 tok/s on CPU: its default pages
make 22 passages, ~8 minutes on 2 cores). The pass share for a looser top_k, without the similarity floor, is
read off the ranks the filter records (a kept query's meta.scores.round_trip_rank, a reject's "ranked N"), so
one run answers for every top_k. Mining runs before
the round trip, so its guard counts are known for every query: `false_negatives_skipped` holds both rules, and
for a query whose passage ranks first the positive-aware rule (a candidate above 95% of the positive's score,
NV-Retriever's TopK-PercPos) is the only one that can fire.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import Counter
from pathlib import Path

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent
PAGES = REPO / "recipes" / "data" / "dolma_cc_en_head-0091.jsonl"
DEFAULT_PAGES = {"sim": "all", "llamacpp": "0,1,2,4,5,6,8,9"}  # llamacpp: all but the longest pages


def read_jsonl(path: Path) -> list[dict]:
    """All rows of a JSONL file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sim", "llamacpp"], default="sim")
    parser.add_argument("--pages", default=None, help="comma-separated line numbers of the dolma file, or all")
    parser.add_argument("--fresh", action="store_true", help="discard an earlier run of the bench (and its cache)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench-corpus-triplets")
    args = parser.parse_args()
    lines = PAGES.read_text(encoding="utf-8").splitlines()
    pages = args.pages or DEFAULT_PAGES[args.backend]
    chosen = lines if pages == "all" else [lines[int(i)] for i in pages.split(",")]
    out = args.out / args.backend
    out.mkdir(parents=True, exist_ok=True)
    (out / "pages.jsonl").write_text("\n".join(chosen) + "\n", encoding="utf-8")
    recipe_path = out / "corpus_triplets.yaml"
    recipe_path.write_text((REPO / "recipes" / "corpus_triplets.yaml").read_text(encoding="utf-8").replace(
        "path: data/dolma_cc_en_head-0091.jsonl", f"path: {out / 'pages.jsonl'}").replace(
        "name: corpus_triplets", f"name: corpus_triplets\nprompts_dir: {REPO / 'prompts'}").replace(
        "taxonomy: taxonomies/", f"taxonomy: {REPO / 'taxonomies'}/"), encoding="utf-8")
    recipe = load_recipe(recipe_path)
    if args.backend == "sim":
        recipe = recipe.with_backend(kind="sim", sim={"latency": 0.0})
    else:
        recipe = recipe.with_backend(kind="llamacpp", options={"slots": 4, "context_per_slot": 1024})
    result = run_recipe(recipe, out / "run", fresh=args.fresh)  # without --fresh: the cache replays requests
    run = result.run_dir
    kept, rejects = read_jsonl(run.dataset_path), read_jsonl(run.rejects_path)
    failed = [r for r in rejects if r["reason"] in ("round_trip_failed", "round_trip_low_similarity")]
    ranks = [r["meta"]["scores"]["round_trip_rank"] for r in kept]
    ranks += [int(re.search(r"ranked (\d+)", r["detail"]).group(1)) for r in failed]  # type: ignore[union-attr]
    passages = len({r["fields"]["text"] for r in kept + failed})
    negatives = [len(r["fields"]["mined_negatives"]) for r in kept]
    guard_kept = [r["meta"]["scores"]["false_negatives_skipped"] for r in kept]
    guard_all = guard_kept + [r["meta"]["scores"]["false_negatives_skipped"] for r in failed]
    triplets = read_jsonl(run.path / "export" / "train.jsonl")
    print(f"backend {args.backend}: pages {len(chosen)}, passages with queries {passages}, queries {len(ranks)} "
          f"(rejects {dict(Counter(r['reason'] for r in rejects))})")
    print(f"  kept by the recipe (top_k 1, min_similarity 0.3): {len(kept)}/{len(ranks)} ({len(kept) / max(len(ranks), 1):.1%})")
    for k in (1, 3, 5):
        print(f"  rank only, top_k={k}: {sum(rank <= k for rank in ranks)}/{len(ranks)} pass "
              f"({sum(rank <= k for rank in ranks) / max(len(ranks), 1):.1%})")
    if kept:
        print(f"  negatives mined per kept query: mean {statistics.mean(negatives):.2f}, "
              f"with all 3: {sum(n == 3 for n in negatives)}/{len(kept)}; triplet rows exported {len(triplets)}")
        print(f"  guard drops per kept query (TopK-PercPos 0.95 only): mean {statistics.mean(guard_kept):.2f}, "
              f"queries with a drop {sum(g > 0 for g in guard_kept)}/{len(kept)}")
    print(f"  guard drops per query, all queries (both rules): mean {statistics.mean(guard_all or [0]):.2f}, "
          f"queries with a drop {sum(g > 0 for g in guard_all)}/{len(guard_all)}")


if __name__ == "__main__":
    main()
