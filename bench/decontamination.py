"""Decontamination on Banking77: caught share of planted copies of evaluation items, per kind of edit, and clean
records dropped, for the MinHash near-duplicate check used before (character 5-gram Jaccard >= 0.8) and the
word n-gram coverage check (`synthgen.dedup.contamination`) in one run.

3,000 training queries are the evaluation set, the other ~7,000 are clean records, and `--plants` copies of
evaluation items are planted per kind: verbatim, re-cased, re-punctuated, one word replaced (by a word of the
corpus), two adjacent words swapped. Each clean record dropped is classed by the item it matched: a near copy
(normalised, equal or one word edit apart: replaced, inserted, deleted, swapped with its neighbour), a text that
contains the item whole, or 2-3 edits apart, or other.

    python bench/decontamination.py
"""

from __future__ import annotations

import argparse
import csv
import random
import string
from collections import Counter
from pathlib import Path

from synthgen.dedup.contamination import DEFAULT_NGRAM, DEFAULT_THRESHOLD, ContaminationIndex, edit_distance
from synthgen.dedup.index import NearDuplicateIndex
from synthgen.dedup.minhash import MinHasher, Shingling
from synthgen.dedup.text import normalize

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77_train.csv"  # ../shared/data
KINDS = ("verbatim", "re-cased", "re-punctuated", "one word replaced", "adjacent words swapped")
EDITED = KINDS[3:]


def plant(kind: str, text: str, vocabulary: list[str], rng: random.Random) -> str:
    """A copy of `text` edited as `kind` says (texts of one word are only re-cased for the word edits)."""
    words = text.split()
    if kind == "re-cased":
        return text.upper() if rng.random() < 0.5 else text.lower()
    if kind == "re-punctuated":
        return text.rstrip(string.punctuation + " ") + rng.choice(["!", "??", " ...", ";"])
    if kind == "one word replaced" and len(words) > 1:
        i = rng.randrange(len(words))
        words[i] = rng.choice([w for w in rng.sample(vocabulary, 5) if w != words[i]])
    elif kind == "adjacent words swapped" and len(words) > 1:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def kind_of_drop(record: str, item: str) -> str:
    """How a dropped clean record relates to the evaluation item it matched."""
    words, item_words = normalize(record).split(), normalize(item).split()
    if f" {' '.join(item_words)} " in f" {' '.join(words)} " and len(words) > len(item_words):
        return "contains it"
    distance = edit_distance(words, item_words)
    return "near copy" if distance <= 1 else f"{distance} edits" if distance < 4 else "other"


def minhash_verdicts(evaluation: list[str], records: list[str]) -> list[int | None]:
    """The check used before: character 5-gram MinHash, verified Jaccard >= 0.8 to any evaluation item."""
    hasher, index = MinHasher(Shingling("char", 5), 128, 1), NearDuplicateIndex(0.8, 128, 1, "exact")
    sketches = hasher.sketch(evaluation)
    for i in range(len(evaluation)):
        index.add(str(i), sketches.signatures[i], sketches.shingle_set(i))
    sketches = hasher.sketch(records)
    found = (index.find(sketches.signatures[i], sketches.shingle_set(i)) for i in range(len(records)))
    return [None if match is None else int(match.key) for match in found]


def coverage_verdicts(evaluation: list[str], records: list[str], args: argparse.Namespace) -> list[int | None]:
    index = ContaminationIndex(args.threshold, args.ngram)
    for i, text in enumerate(evaluation):
        index.add(str(i), text)
    return [None if (match := index.find(text)) is None else int(match.key) for text in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-size", type=int, default=3000)
    parser.add_argument("--plants", type=int, default=100, help="planted copies per kind")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--ngram", type=int, default=DEFAULT_NGRAM)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with DATA.open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    rng = random.Random(args.seed)
    rng.shuffle(texts)
    evaluation, clean = texts[: args.eval_size], texts[args.eval_size :]
    vocabulary = sorted({w for t in texts for w in normalize(t).split()})
    plants = [(kind, plant(kind, rng.choice(evaluation), vocabulary, rng)) for kind in KINDS for _ in range(args.plants)]
    records = clean + [text for _, text in plants]
    print(f"{len(evaluation)} evaluation items, {len(clean)} clean records, {len(plants)} plants ({args.plants} per kind)")
    print(f"{'check':<40} " + " ".join(f"{kind[:13]:>13}" for kind in KINDS) + f" {'edited':>7}  clean dropped")
    for name, verdicts in (("before: MinHash char 5-gram Jaccard 0.8", minhash_verdicts(evaluation, records)),
                           (f"after: containment {args.threshold} (n={args.ngram})",
                            coverage_verdicts(evaluation, records, args))):
        caught = Counter(kind for (kind, _), hit in zip(plants, verdicts[len(clean):], strict=True) if hit is not None)
        dropped = Counter(kind_of_drop(text, evaluation[hit])
                          for text, hit in zip(clean, verdicts, strict=False) if hit is not None)
        total = sum(dropped.values())
        edited = sum(caught[k] for k in EDITED) / (len(EDITED) * args.plants)
        print(f"{name:<40} " + " ".join(f"{caught[kind] / args.plants:>13.0%}" for kind in KINDS)
              + f" {edited:>7.0%}  {total} ({total / len(clean):.2%}: "
              + ", ".join(f"{n} {k}" for k, n in sorted(dropped.items())) + ")")


if __name__ == "__main__":
    main()
