"""Self-Instruct's ROUGE-L filter: time to check 1,000 new instructions against a pool of 50,000.

    python bench/self_instruct_filter.py [--pool 50000] [--queries 1000] [--naive-sample 200] [--threshold 0.7]

The pool is the 175 seed instructions plus seeded word-level recombinations of them (splices of two
instructions, then 5-60% of the words replaced, dropped or inserted), so it holds real near duplicates.
The queries are more recombinations from another random stream, checked against the fixed pool
(F1 > threshold rejects). Methods, one line each:
- naive (Python loop): rapidfuzz LCS on every (query, pool entry) pair, as `naive_most_similar` does;
  timed on `--naive-sample` queries and extrapolated to all of them (the output says so);
- naive (rapidfuzz cdist): the same all-pairs LCS in rapidfuzz's C++ `cdist` on every core;
- ours (RougePool): token-overlap prefilter, exact LCS only on candidates that can pass the threshold.
The script checks that all three reject exactly the same queries and that the scores agree.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from synthgen.recipes.rouge import RougePool, naive_most_similar, rouge_tokens

SEEDS = Path(__file__).resolve().parent.parent / "recipes" / "data" / "self_instruct_seed_tasks.jsonl"


def seed_instructions(path: Path) -> list[str]:
    """The seed tasks' instructions."""
    return [json.loads(line)["instruction"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def recombine(rng: random.Random, seeds: list[list[str]], vocabulary: list[str]) -> list[str]:
    """A near or far variant of the seed instructions: a splice of two, then random word edits."""
    first, second = rng.choice(seeds), rng.choice(seeds)
    words = first[: rng.randint(1, len(first))] + second[rng.randint(0, len(second) - 1):]
    rate = rng.uniform(0.05, 0.6)
    out: list[str] = []
    for word in words:
        roll = rng.random()
        if roll < rate / 3:
            out.append(rng.choice(vocabulary))
        elif roll < 2 * rate / 3:
            continue
        elif roll < rate:
            out += [word, rng.choice(vocabulary)]
        else:
            out.append(word)
    return out or [rng.choice(vocabulary)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--naive-sample", type=int, default=200, help="queries the Python-loop baseline is timed on")
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--seeds", type=Path, default=SEEDS)
    args = parser.parse_args()

    seeds = [text.split() for text in seed_instructions(args.seeds)]
    vocabulary = sorted({word for words in seeds for word in words})
    build_rng, query_rng = random.Random(1), random.Random(2)
    pool_texts = [" ".join(words) for words in seeds]
    pool_texts += [" ".join(recombine(build_rng, seeds, vocabulary)) for _ in range(args.pool - len(pool_texts))]
    query_texts = [" ".join(recombine(query_rng, seeds, vocabulary)) for _ in range(args.queries)]
    pool_tokens = [rouge_tokens(text) for text in pool_texts]
    query_tokens = [rouge_tokens(text) for text in query_texts]
    print(f"pool {len(pool_tokens):,} instructions (mean {np.mean([len(t) for t in pool_tokens]):.1f} tokens), "
          f"{len(query_tokens):,} new instructions, threshold {args.threshold}, {os.cpu_count()} cores")

    start = time.perf_counter()
    pool = RougePool(args.threshold)
    for tokens in pool_tokens:
        pool.add(tokens)
    build = time.perf_counter() - start
    start = time.perf_counter()
    ours = [pool.most_similar(tokens) for tokens in query_tokens]
    ours_time = time.perf_counter() - start
    ours_rejects = {i for i, match in enumerate(ours) if match is not None}

    sample = min(args.naive_sample, len(query_tokens))
    start = time.perf_counter()
    naive = [naive_most_similar(tokens, pool_tokens) for tokens in query_tokens[:sample]]
    naive_time = (time.perf_counter() - start) * len(query_tokens) / sample
    naive_rejects = {i for i, match in enumerate(naive) if match.score > args.threshold}

    start = time.perf_counter()
    lengths = np.array([len(t) for t in pool_tokens])
    all_pairs_rejects, best_scores = set(), []
    for first in range(0, len(query_tokens), 100):
        chunk = query_tokens[first: first + 100]
        lcs = process.cdist(chunk, pool_tokens, scorer=LCSseq.similarity, dtype=np.int32, workers=-1)
        f1 = 2 * lcs / np.maximum(np.array([len(t) for t in chunk])[:, None] + lengths[None, :], 1)
        best_scores += f1.max(axis=1).tolist()
        all_pairs_rejects |= {first + int(i) for i in np.flatnonzero(f1.max(axis=1) > args.threshold)}
    cdist_time = time.perf_counter() - start

    per = 1000 / len(query_tokens)
    extrapolated = f"timed on {sample} queries, extrapolated" if sample < len(query_tokens) else "all queries"
    print(f"naive (Python loop, rapidfuzz LCS per pair):  {naive_time * per:8.2f} s per 1,000  ({extrapolated})")
    print(f"naive (rapidfuzz cdist, C++, all cores):      {cdist_time * per:8.2f} s per 1,000")
    print(f"ours  (RougePool, overlap prefilter):         {ours_time * per:8.2f} s per 1,000  "
          f"(+ {build:.2f} s to index the pool once)")
    print(f"speed-up: {naive_time / ours_time:.0f}x over the Python loop, {cdist_time / ours_time:.1f}x over cdist")

    same_sample = naive_rejects == {i for i in ours_rejects if i < sample}
    same_all = all_pairs_rejects == ours_rejects
    scores_agree = all(abs(best_scores[i] - match.score) < 1e-12 for i, match in enumerate(ours) if match is not None)
    print(f"rejected: {len(ours_rejects)} of {len(query_tokens)}; same set as cdist on all queries: {same_all}; "
          f"same as the Python loop on its {sample}: {same_sample}; scores agree: {scores_agree}")
    if not (same_all and same_sample and scores_agree):
        raise SystemExit("MISMATCH between the prefiltered pool and the all-pairs reference")


if __name__ == "__main__":
    main()
