"""Near-dedup precision and recall against exact Jaccard, on a corpus with planted near duplicates.

Short texts (8-30 words, `short` preset: character 5-grams) get word edits of 5-50%, which spreads their
pairs' Jaccard across 0.3-0.95. One edited word breaks up to five word 5-grams, so documents (60-200
words, `document` preset) get 0.5-8% edits to put their pairs around the same thresholds.

    python bench/dedup_quality.py                 # both presets, thresholds 0.7 0.8 0.9
    python bench/dedup_quality.py --families 500 --presets short
"""

from __future__ import annotations

import argparse
import time

from synthgen.dedup.evaluate import exact_greedy_drops, planted_corpus, quality
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.dedup import MinHashDedup, MinHashDedupParams


def dedup_drops(texts: list[str], params: MinHashDedupParams) -> set[int]:
    dropped: set[int] = set()
    ctx = StageContext(label="bench", index=0, seed=0, recipe_path=None, prompts_dir=None, resolve=None,  # type: ignore[arg-type]
                       reject=lambda record, reason, detail: dropped.add(int(record.id)))
    records = (Record(str(i), {"text": text}) for i, text in enumerate(texts))
    for _ in MinHashDedup(params, ctx).run(records):
        pass
    return dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", type=int, default=3000)
    parser.add_argument("--presets", nargs="+", choices=["short", "document"], default=["short", "document"])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.7, 0.8, 0.9])
    parser.add_argument("--verify", choices=["exact", "estimate"], default="exact")
    args = parser.parse_args()
    for preset in args.presets:
        words, edits = ((8, 30), (0.05, 0.5)) if preset == "short" else ((60, 200), (0.005, 0.08))
        texts = planted_corpus(args.families, seed=7, words=words, edits=edits)
        print(f"{len(texts)} texts from {args.families} families, preset {preset}, word edits {edits[0]:.1%}-{edits[1]:.0%}, "
              f"verify {args.verify}")
        print(f"{'threshold':>9} {'truth':>6} {'dropped':>7} {'precision':>9} {'recall':>7} {'seconds':>7}")
        for threshold in args.thresholds:
            params = MinHashDedupParams(preset=preset, threshold=threshold, verify=args.verify)
            truth = exact_greedy_drops(texts, params.shingling(), threshold)
            began = time.perf_counter()
            result = quality(dedup_drops(texts, params), truth)
            seconds = time.perf_counter() - began
            print(f"{threshold:9.2f} {result.truth:6d} {result.dropped:7d} {result.precision:9.3f} {result.recall:7.3f} "
                  f"{seconds:7.2f}")

if __name__ == "__main__":
    main()
