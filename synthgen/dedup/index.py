"""A near-duplicate index: datasketch's MinHashLSH finds candidates, and every candidate is verified.

LSH only says two signatures share a band, a probability, not a rule. So each candidate is checked:
by the exact Jaccard of the two shingle-hash sets when they are kept (`verify="exact"`, the default:
a few hundred uint32 per document, about the size of its signature), else by the signature estimate.
Because false positives are removed by verification, the LSH bands and rows are derived from the
threshold (datasketch's optimiser) with false negatives weighted 49x false positives: a pair exactly at
the threshold becomes a candidate with probability >= 0.96 (0.98 at 0.8 with 128 permutations), at the
cost of more candidates to verify.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

from synthgen.dedup.minhash import SCHEME

Verify = Literal["exact", "estimate"]
LSH_WEIGHTS = (0.02, 0.98)  # (false positive, false negative) weights for datasketch's band/row optimiser


@dataclass(frozen=True, slots=True)
class Match:
    """The kept document a query duplicates, and their measured Jaccard similarity."""

    key: str
    similarity: float


class NearDuplicateIndex:
    """Documents kept so far; `find` returns a verified match at or above `threshold`, or None."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, seed: int = 1, verify: Verify = "exact") -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold, self.num_perm, self.seed, self.verify = threshold, num_perm, seed, verify
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
        self.signatures: dict[str, np.ndarray] = {}
        self.shingle_sets: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.signatures)

    def __contains__(self, key: str) -> bool:
        return key in self.signatures

    def find(self, signature: np.ndarray, shingles: np.ndarray | None = None) -> Match | None:
        """The most similar verified match among LSH candidates; `shingles` (sorted unique) for exact checks."""
        best: Match | None = None
        for key in self.lsh.query(self._lean(signature)):
            similarity = self._similarity(key, signature, shingles)
            if similarity >= self.threshold and (best is None or similarity > best.similarity):
                best = Match(key, similarity)
        return best

    def add(self, key: str, signature: np.ndarray, shingles: np.ndarray | None = None) -> None:
        """Index a kept document under `key`."""
        self.lsh.insert(key, self._lean(signature), check_duplication=False)
        self.signatures[key] = signature
        if self.verify == "exact" and shingles is not None:
            self.shingle_sets[key] = shingles

    def save(self, path: str | Path) -> None:
        """Write the index (keys, signatures, shingle sets, parameters and the MinHash scheme) to an .npz file."""
        keys = list(self.signatures)
        sets = [self.shingle_sets.get(key, np.empty(0, np.uint32)) for key in keys]
        with open(path, "wb") as handle:
            np.savez_compressed(
                handle, keys=np.array(keys, dtype=str),
                signatures=np.array([self.signatures[k] for k in keys], dtype=np.uint32).reshape(len(keys), self.num_perm),
                set_offsets=np.cumsum([0] + [s.size for s in sets]),
                set_values=np.concatenate(sets) if sets else np.empty(0, np.uint32),
                params=np.array([self.threshold, self.num_perm, self.seed]), scheme=np.array(SCHEME),
                verify=np.array(self.verify),
            )

    @classmethod
    def load(cls, path: str | Path) -> NearDuplicateIndex:
        """Read an index written by `save`; refuses one made with another MinHash scheme."""
        with np.load(path) as data:
            if str(data["scheme"]) != SCHEME:
                raise ValueError(f"{path}: index uses MinHash scheme {data['scheme']}, this version uses {SCHEME}")
            threshold, num_perm, seed = data["params"]
            index = cls(float(threshold), int(num_perm), int(seed), str(data["verify"]))  # type: ignore[arg-type]
            offsets, values = data["set_offsets"], data["set_values"]
            for i, key in enumerate(data["keys"]):
                shingles = values[offsets[i] : offsets[i + 1]]
                index.add(str(key), data["signatures"][i], shingles if shingles.size else None)
        return index

    def _lean(self, signature: np.ndarray) -> LeanMinHash:
        return LeanMinHash(seed=self.seed, hashvalues=signature, scheme=SCHEME)

    def _similarity(self, key: str, signature: np.ndarray, shingles: np.ndarray | None) -> float:
        stored = self.shingle_sets.get(key)
        if shingles is not None and stored is not None:
            common = np.intersect1d(shingles, stored, assume_unique=True).size
            return common / (shingles.size + stored.size - common)
        return float(np.count_nonzero(self.signatures[key] == signature)) / self.num_perm
