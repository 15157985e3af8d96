"""Does vector-space augmentation help a few-shot classifier? Logistic regression on MiniLM embeddings,
2-16 examples per class, C tuned on the training shots (cross-validation), with and without SMOTE /
Gaussian noise / mixup (soft labels as sample weights) added to the shots; mean and spread over 5 seeds.

Datasets, shipped in bench/data/ (licences in bench/data/SOURCES.md): poem_sentiment_{train,test}.tsv (4 classes)
and banking77_train.csv (77 intents; 20% held out per class as test). The harness scores vectors only; the same split can score
LLM-realised texts (`embed_augment` with decode: llm) once a real model is behind the backend.

    python bench/mixup_eval.py [--seeds 5] [--shots 2 4 8 16]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from synthgen.embedding.encoder import Encoder
from synthgen.embedding.interpolate import add_noise, interpolate, smote

DATA = Path(__file__).resolve().parent / "data"
C_GRID = [0.01, 0.1, 1.0, 4.0, 10.0, 100.0]
Augmenter = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray, np.ndarray]]


def poem() -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    def read(name: str) -> tuple[list[str], np.ndarray]:
        lines = (DATA / f"poem_sentiment_{name}.tsv").read_text(encoding="utf-8").splitlines()
        rows = [line.split("\t") for line in lines if line.strip()]
        return [r[1] for r in rows], np.array([r[2] for r in rows])
    return (*read("train"), *read("test"))


def banking() -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    rows = list(csv.DictReader((DATA / "banking77_train.csv").open(encoding="utf-8")))
    rng = np.random.default_rng(0)
    test = {i for label in {r["category"] for r in rows}
            for i in rng.permutation([j for j, r in enumerate(rows) if r["category"] == label])[:20]}
    train_rows = [r for i, r in enumerate(rows) if i not in test]
    test_rows = [r for i, r in enumerate(rows) if i in test]
    return ([r["text"] for r in train_rows], np.array([r["category"] for r in train_rows]),
            [r["text"] for r in test_rows], np.array([r["category"] for r in test_rows]))


def none(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return x, y, np.ones(len(y))


def with_smote(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    extra = [smote(x, y, label, 2 * int((y == label).sum()), 3, rng)[0] for label in np.unique(y)]
    labels = np.concatenate([[label] * len(e) for label, e in zip(np.unique(y), extra, strict=True)])
    return np.vstack([x, *extra]), np.concatenate([y, labels]), np.ones(len(y) + len(labels))


def with_noise(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    noisy = np.vstack([add_noise(x, 0.5, rng) for _ in range(2)])
    return np.vstack([x, noisy]), np.concatenate([y, y, y]), np.ones(3 * len(y))


def with_mixup(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = rng.integers(0, len(y), 2 * len(y)), rng.integers(0, len(y), 2 * len(y))
    alpha = rng.beta(0.4, 0.4, len(a))
    mixed = interpolate(x[a], x[b], alpha)
    return (np.vstack([x, mixed, mixed]), np.concatenate([y, y[a], y[b]]),
            np.concatenate([np.ones(len(y)), 1 - alpha, alpha]))


def pick_shots(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Indices of `shots` random examples of every class, seeded."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(np.flatnonzero(labels == label))[:shots] for label in np.unique(labels)])


def tuned_c(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    folds = min(3, int(np.bincount(np.unique(y, return_inverse=True)[1]).min()))
    if folds < 2:
        return 4.0
    scores = []
    for c in C_GRID:
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        scores.append(np.mean([LogisticRegression(C=c, max_iter=2000).fit(x[tr], y[tr]).score(x[te], y[te])
                               for tr, te in cv.split(x, y)]))
    return C_GRID[int(np.argmax(scores))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--shots", type=int, nargs="+", default=[2, 4, 8, 16])
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    warnings.filterwarnings("ignore", message="The number of unique classes")  # 77 classes x 2 shots
    augmenters: dict[str, Augmenter] = {"none": none, "smote": with_smote, "noise": with_noise, "mixup": with_mixup}
    with tempfile.TemporaryDirectory() as cache:
        encoder = Encoder(cache_dir=Path(cache))
        for name, load in (("poem_sentiment", poem), ("banking77", banking)):
            began = time.perf_counter()
            train_texts, train_y, test_texts, test_y = load()
            train_x, test_x = encoder.encode(train_texts), encoder.encode(test_texts)
            print(f"\n{name}: {len(train_texts)} train, {len(test_texts)} test, {len(np.unique(train_y))} classes "
                  f"(encoded in {time.perf_counter() - began:.0f} s); accuracy mean +- std over {args.seeds} seeds")
            print(f"{'shots':>5} " + " ".join(f"{a:>15}" for a in augmenters))
            for shots in args.shots:
                results: dict[str, list[float]] = {a: [] for a in augmenters}
                for seed in range(args.seeds):
                    picked = pick_shots(train_y, shots, seed)
                    x, y = train_x[picked], train_y[picked]
                    c = tuned_c(x, y, seed)
                    for label, augment in augmenters.items():
                        ax, ay, weights = augment(x, y, np.random.default_rng(seed + 100))
                        model = LogisticRegression(C=c, max_iter=2000).fit(ax, ay, sample_weight=weights)
                        results[label].append(model.score(test_x, test_y))
                print(f"{shots:>5} " + " ".join(f"{100 * np.mean(v):8.1f} +-{100 * np.std(v):4.1f}" for v in results.values()))


if __name__ == "__main__":
    main()
