"""A near-duplicate index: LSH bands find candidates, and every candidate is verified.

LSH only says two signatures share a band, a probability, not a rule. So each candidate is checked:
by the exact Jaccard of the two shingle-hash sets when they are kept (`verify="exact"`, the default:
a few hundred uint32 per document, about the size of its signature), else by the signature estimate.
Because false positives are removed by verification, the LSH bands and rows are derived from the
threshold (datasketch's optimiser) with false negatives weighted 49x false positives: a pair exactly at
the threshold becomes a candidate with probability >= 0.96 (0.98 at 0.8 with 128 permutations), at the
cost of more candidates to verify.

Memory is what the candidate search needs, as in datasketch's `MinHashLSH` but without a Python set per
bucket: band i of a signature (values [i*r, (i+1)*r), datasketch's bands) is hashed to one uint64 key, kept
in a `BandTable` with the document's int32 id; keys are held as one UTF-8 buffer with offsets; signatures
and shingle sets are appended to files in a spill folder (in `folder`, removed with the index) and read back
for the candidates only. Two documents sharing a band always share its key, so the candidates include every
one `MinHashLSH` would return (a 64-bit collision only adds a candidate, which verification removes), and the
decisions are the same. Among equally similar matches the earliest indexed document is returned.

`save` writes an .npz (keys, signatures, set offsets and values, parameters, the MinHash scheme), streamed
from the spill files; `load` reads it back in chunks in linear time.
"""

from __future__ import annotations

import tempfile
import weakref
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from datasketch import MinHashLSH

from synthgen.dedup.minhash import SCHEME
from synthgen.dedup.store import BandTable, KeyList, SketchStore

Verify = Literal["exact", "estimate"]
LSH_WEIGHTS = (0.02, 0.98)  # (false positive, false negative) weights for datasketch's band/row optimiser
_ROWS_PER_CHUNK = 8192  # documents per chunk when saving and loading


@dataclass(frozen=True, slots=True)
class Match:
    """The kept document a query duplicates, and their measured Jaccard similarity."""

    key: str
    similarity: float


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """LSH (bands, rows) for `threshold`: datasketch's optimiser with `LSH_WEIGHTS`."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
    return lsh.b, lsh.r


class NearDuplicateIndex:
    """Documents kept so far; `find` returns a verified match at or above `threshold`, or None. Spill files go to
    a temporary folder inside `folder` (the system's temp folder without one)."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, seed: int = 1, verify: Verify = "exact",
                 folder: Path | None = None) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold, self.num_perm, self.seed, self.verify = threshold, num_perm, seed, verify
        self.bands, self.rows = lsh_bands(threshold, num_perm)
        multipliers = np.random.default_rng(0x5EED).integers(1, 2**63, size=(self.bands, self.rows + 1), dtype=np.uint64)
        self._multipliers = multipliers[:, 1:] | np.uint64(1)
        self._band_salt = multipliers[:, 0]
        self._folder = tempfile.TemporaryDirectory(prefix="minhash-index-", suffix=".spill", dir=folder)
        self._sketches = SketchStore(Path(self._folder.name), num_perm)
        self._table = BandTable()
        self._keys = KeyList()
        self._release = weakref.finalize(self, _release, self._sketches, self._folder)

    def __len__(self) -> int:
        return len(self._keys)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its arrays (the Ray engine ships a reference index to its workers)."""
        params = (self.threshold, self.num_perm, self.seed, self.verify)
        chunks = list(self.chunks(len(self) or 1))
        return _unpickle, (params, chunks[0] if chunks else None)

    def keys(self) -> Iterator[str]:
        """The indexed keys, in insertion order."""
        for i in range(len(self)):
            yield self._keys[i]

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """(m, bands) uint64 keys of the LSH bands of (m, num_perm) signatures."""
        banded = signatures[:, : self.bands * self.rows].reshape(-1, self.bands, self.rows).astype(np.uint64)
        return (banded * self._multipliers).sum(axis=2, dtype=np.uint64) + self._band_salt

    def find(self, signature: np.ndarray, shingles: np.ndarray | None = None) -> Match | None:
        """The most similar verified match among LSH candidates; `shingles` (sorted unique) for exact checks."""
        best: tuple[int, float] | None = None
        for ident in self._table.get(self.band_keys(signature[None, :])[0].tolist()):
            similarity = self._similarity(ident, signature, shingles)
            if similarity >= self.threshold and (best is None or similarity > best[1]):
                best = ident, similarity
        return None if best is None else Match(self._keys[best[0]], best[1])

    def add(self, key: str, signature: np.ndarray, shingles: np.ndarray | None = None) -> None:
        """Index a kept document under `key`."""
        self._table.add(self.band_keys(signature[None, :])[0].tolist(), len(self))
        stored = shingles if self.verify == "exact" and shingles is not None else np.empty(0, np.uint32)
        self._sketches.append(signature, np.array([0, stored.size]), stored)
        self._keys.extend([key])

    def chunks(self, rows: int = _ROWS_PER_CHUNK) -> Iterator[tuple[list[str], np.ndarray, np.ndarray, np.ndarray]]:
        """The index in pieces of `rows` documents: keys, signatures, set offsets (from 0), set values."""
        set_offsets = self._sketches.set_offsets.values
        for start in range(0, len(self), rows):
            stop = min(start + rows, len(self))
            span = set_offsets[start : stop + 1]
            yield ([self._keys[i] for i in range(start, stop)],
                   self._sketches.signatures.read(start * self.num_perm, stop * self.num_perm).reshape(-1, self.num_perm),
                   span - span[0], self._sketches.sets.read(int(span[0]), int(span[-1])))

    def extend(self, keys: list[str], signatures: np.ndarray, set_offsets: np.ndarray, set_values: np.ndarray) -> None:
        """Index many documents at once (a chunk of `chunks`); an empty set means none was stored."""
        if self.verify != "exact":
            set_offsets, set_values = np.zeros(len(keys) + 1, np.int64), np.empty(0, np.uint32)
        first = len(self)
        banded = self.band_keys(signatures)
        self._table.add_run(banded.ravel(), np.repeat(np.arange(first, first + len(keys)), self.bands))
        self._sketches.append(signatures, set_offsets, set_values)
        self._keys.extend(keys)

    def save(self, path: str | Path) -> None:
        """Write the index (keys, signatures, shingle sets, parameters and the MinHash scheme) to an .npz file."""
        count, width = len(self), max((len(k) for k in self.keys()), default=1)
        spans = [(start, min(start + _ROWS_PER_CHUNK, count)) for start in range(0, count, _ROWS_PER_CHUNK)]
        signatures = self._sketches.signatures
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            _write_npy(archive, "keys", np.dtype(f"<U{width}"), (count,),
                       (np.array([self._keys[i] for i in range(a, b)], f"<U{width}") for a, b in spans), compress=True)
            _write_npy(archive, "signatures", np.dtype(np.uint32), (count, self.num_perm),
                       (signatures.read(a * self.num_perm, b * self.num_perm) for a, b in spans))
            _write_npy(archive, "set_offsets", np.dtype(np.int64), (count + 1,), iter([self._sketches.set_offsets.values]))
            sets = self._sketches.sets
            _write_npy(archive, "set_values", np.dtype(np.uint32), (sets.size,), (sets.read(a, b) for a, b in sets.chunks()))
            for name, value in (("params", np.array([self.threshold, self.num_perm, self.seed])),
                                ("scheme", np.array(SCHEME)), ("verify", np.array(self.verify))):
                _write_npy(archive, name, value.dtype, value.shape, iter([value]))

    @classmethod
    def load(cls, path: str | Path, threshold: float | None = None, verify: Verify | None = None,
             folder: Path | None = None) -> NearDuplicateIndex:
        """Read an index written by `save` (in linear time), with its own or the given `threshold` and `verify`;
        refuses one made with another MinHash scheme."""
        with np.load(path) as data:
            if str(data["scheme"]) != SCHEME:
                raise ValueError(f"{path}: index uses MinHash scheme {data['scheme']}, this version uses {SCHEME}")
            saved_threshold, num_perm, seed = data["params"]
            index = cls(threshold or float(saved_threshold), int(num_perm), int(seed), verify or str(data["verify"]),  # type: ignore[arg-type]
                        folder)
            keys, set_offsets = data["keys"], data["set_offsets"]
        with zipfile.ZipFile(path) as archive, archive.open("signatures.npy") as signatures, \
                archive.open("set_values.npy") as values:
            _skip_header(signatures)
            _skip_header(values)
            for start in range(0, len(keys), _ROWS_PER_CHUNK):
                stop = min(start + _ROWS_PER_CHUNK, len(keys))
                rows = np.frombuffer(signatures.read(4 * (stop - start) * index.num_perm), np.uint32)
                span = set_offsets[start : stop + 1]
                chunk = np.frombuffer(values.read(4 * int(span[-1] - span[0])), np.uint32)
                index.extend([str(k) for k in keys[start:stop]], rows.reshape(-1, index.num_perm), span - span[0], chunk)
        return index

    def close(self) -> None:
        """Remove the spill files (also done when the index is garbage-collected)."""
        self._release()

    def _similarity(self, ident: int, signature: np.ndarray, shingles: np.ndarray | None) -> float:
        stored = self._sketches.shingle_set(ident) if shingles is not None else None
        if shingles is not None and stored is not None:
            common = np.intersect1d(shingles, stored, assume_unique=True).size
            return common / (shingles.size + stored.size - common)
        return float(np.count_nonzero(self._sketches.signature(ident) == signature)) / self.num_perm


def _release(sketches: SketchStore, folder: tempfile.TemporaryDirectory[str]) -> None:
    sketches.close()
    folder.cleanup()


def _unpickle(params: tuple[float, int, int, Verify], arrays: tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None
              ) -> NearDuplicateIndex:
    index = NearDuplicateIndex(*params)
    if arrays is not None:
        index.extend(*arrays)
    return index


def _write_npy(archive: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...], chunks: Iterator[np.ndarray],
               compress: bool = False) -> None:
    """One .npy member written chunk by chunk (np.load reads it like `np.savez`'s)."""
    info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with archive.open(info, "w", force_zip64=True) as member:
        np.lib.format.write_array_header_2_0(member, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                                                      "shape": shape})
        for chunk in chunks:
            member.write(np.ascontiguousarray(chunk, dtype=dtype).reshape(-1).view(np.uint8).data)


def _skip_header(member: IO[bytes]) -> None:
    """Move past a .npy member's magic and header (to read its C-ordered data)."""
    version = np.lib.format.read_magic(member)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    read(member)
