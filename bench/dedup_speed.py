"""MinHash signature speed from raw text: synthgen's batched numpy sketch vs datasketch's update loop and bulk.

Same documents (~1,000 characters of web-like text), 128 permutations, word 5-grams, one thread, all
timed from raw text (normalise + shingle + hash + sketch). datasketch is given xxhash's xxh32 as its
shingle hash (its fast configuration); a separate check hands it synthgen's shingle hash and confirms the
signatures are identical.

    python bench/dedup_speed.py [--docs 5000]
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import xxhash
from datasketch import MinHash

from synthgen.dedup.minhash import SCHEME, MinHasher, Shingling
from synthgen.dedup.text import normalize


def corpus(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(30000)]
    weights = [1.0 / (rank + 1) for rank in range(len(vocabulary))]
    docs = []
    for _ in range(count):
        words = rng.choices(vocabulary, weights, k=200)
        sentences = [" ".join(words[i : i + 12]).capitalize() + rng.choice([".", "!", "?", ";"]) for i in range(0, 200, 12)]
        docs.append(" ".join(sentences)[:1000])
    return docs


def rate(label: str, count: int, seconds: float, base: float | None = None) -> float:
    per_second = count / seconds
    versus = f"  ({per_second / base:.1f}x datasketch bulk)" if base else ""
    print(f"{label:42} {per_second:10,.0f} docs/s{versus}")
    return per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args()
    docs = corpus(args.docs)
    shingling = Shingling("word", 5)
    hasher = MinHasher(shingling, num_perm=128, seed=1)
    print(f"{len(docs)} docs, mean {sum(map(len, docs)) / len(docs):.0f} characters, 128 permutations, word 5-grams")

    def xxh32(shingle: str) -> int:
        return xxhash.xxh32_intdigest(shingle.encode())

    loop_docs = docs[: max(200, len(docs) // 10)]
    began = time.perf_counter()
    for doc in loop_docs:
        minhash = MinHash(num_perm=128, seed=1, hashfunc=xxh32, scheme=SCHEME)
        for shingle in shingling.shingles(normalize(doc)):
            minhash.update(shingle)
    rate("datasketch update() loop + xxh32", len(loop_docs), time.perf_counter() - began)

    began = time.perf_counter()
    MinHash.bulk((shingling.shingles(normalize(doc)) for doc in docs), num_perm=128, seed=1, hashfunc=xxh32, scheme=SCHEME)
    bulk = rate("datasketch MinHash.bulk + xxh32", len(docs), time.perf_counter() - began)

    began = time.perf_counter()
    for start in range(0, len(docs), args.batch):
        hasher.signatures(docs[start : start + args.batch])
    rate(f"synthgen MinHasher (batches of {args.batch})", len(docs), time.perf_counter() - began, bulk)

    sample = docs[:200]
    ours = hasher.signatures(sample)
    same = sum(np.array_equal(ours[i], hasher.reference(text).hashvalues) for i, text in enumerate(sample))
    print(f"signatures identical to datasketch's (same seed, scheme {SCHEME}, shingle hash): {same}/{len(sample)}")


if __name__ == "__main__":
    main()
