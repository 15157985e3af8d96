"""Few-shot accuracy with EDA (text edits) vs embedding-space augmentation vs none, side by side.

Same harness as `bench/mixup_eval.py` (logistic regression on MiniLM vectors, C tuned on the real shots,
5 seeds): poem sentiment (../shared/data/poem_sentiment_*.tsv), 2-16 verses per class. EDA variants are real
texts (4 operations x 2 copies per shot, rate 0.1, synonyms from embedding neighbours in the training
vocabulary), embedded like the shots.

    python bench/augment_compare.py [--seeds 5] [--shots 2 4 8 16]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import warnings
from pathlib import Path

import numpy as np
from mixup_eval import pick_shots, poem, tuned_c, with_mixup, with_smote
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from synthgen.dedup.text import normalize
from synthgen.embedding.encoder import Encoder
from synthgen.hashing import stable_int
from synthgen.stages.eda import OPERATIONS, augment, synonym_table
from synthgen.stopwords import STOP_WORDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--shots", type=int, nargs="+", default=[2, 4, 8, 16])
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    train_texts, train_y, test_texts, test_y = poem()
    with tempfile.TemporaryDirectory() as cache:
        encoder = Encoder(cache_dir=Path(cache))
        train_x, test_x = encoder.encode(train_texts), encoder.encode(test_texts)
        vocabulary = sorted({w for t in train_texts for w in normalize(t).split() if w.isalpha() and w not in STOP_WORDS})
        synonyms = synonym_table(vocabulary, encoder.encode(vocabulary), 0.6)
        print(f"poem_sentiment: {len(train_texts)} train, {len(test_texts)} test, {len(vocabulary)} vocabulary words; "
              f"accuracy % mean +- std over {args.seeds} seeds")
        methods = ("none", "eda", "smote", "mixup")
        print(f"{'shots':>5} " + " ".join(f"{m:>13}" for m in methods))
        for shots in args.shots:
            results: dict[str, list[float]] = {m: [] for m in methods}
            for seed in range(args.seeds):
                picked = pick_shots(train_y, shots, seed)
                x, y = train_x[picked], train_y[picked]
                c = tuned_c(x, y, seed)
                variants, labels = [], []
                for index in picked:
                    words = normalize(train_texts[index]).split()
                    for operation in OPERATIONS:
                        for copy in range(2):
                            edit_rng = random.Random(stable_int(seed, int(index), operation, copy))
                            variants.append(" ".join(augment(words, operation, 0.1, synonyms, edit_rng)))
                            labels.append(train_y[index])
                eda_x = np.vstack([x, encoder.encode(variants)])
                eda_y = np.concatenate([y, labels])
                sets = {"none": (x, y, np.ones(len(y))), "eda": (eda_x, eda_y, np.ones(len(eda_y))),
                        "smote": with_smote(x, y, np.random.default_rng(seed + 100)),
                        "mixup": with_mixup(x, y, np.random.default_rng(seed + 100))}
                for method, (ax, ay, weights) in sets.items():
                    model = LogisticRegression(C=c, max_iter=2000).fit(ax, ay, sample_weight=weights)
                    results[method].append(model.score(test_x, test_y))
            print(f"{shots:>5} " + " ".join(f"{100 * np.mean(v):6.1f} +-{100 * np.std(v):4.1f}" for v in results.values()))


if __name__ == "__main__":
    main()
