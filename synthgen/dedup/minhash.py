"""MinHash signatures of many documents at once, with numpy, equal to datasketch's.

A document's shingles are word n-grams or character n-grams (over the UTF-8 bytes) of its normalised
text. Each shingle is hashed to 32 bits by `shingle_hash`: a polynomial over its bytes (mod 2^32), with
word n-grams combining their words' hashes. That same function, handed to datasketch as `hashfunc`,
makes `datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash, scheme="affine32")` produce exactly our
signatures (the test suite checks it), because we apply datasketch's "affine32" scheme: the MurmurHash3
finaliser, then h -> a*h + b in uint32 with datasketch's own (a, b) for the seed, then the minimum.

Speed comes from never looping per word or shingle in Python: a batch of raw documents is normalised
into one byte array (`normalize_batch`), word hashes are differences of one prefix sum (using P's
inverse mod 2^32), shingle hashes are a few whole-array multiply-adds, and the permutations run as
(permutations x shingles) blocks followed by a `minimum.reduceat` per document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from datasketch import MinHash

from synthgen.dedup.text import normalize, normalize_batch

SCHEME = "affine32"  # datasketch >= 2 scheme our signatures follow; stored with any saved index
_P = np.uint32(0x01000193)  # byte polynomial base (odd, so invertible mod 2^32)
_P_INV = np.uint32(pow(0x01000193, -1, 1 << 32))
_Q = np.uint32(0x9E3779B1)  # word-combining base for word n-grams
_SPACE = 32
_BLOCK = 8192  # shingles per permutation block: 128 x 8192 x 4 bytes stays in cache

Unit = Literal["word", "char"]


@dataclass(frozen=True)
class Shingling:
    """How a text becomes a set of shingles: `n` consecutive words, or `n` consecutive bytes."""

    unit: Unit = "word"
    n: int = 5

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"shingle size must be >= 1, got {self.n}")

    def shingles(self, text: str) -> list[str]:
        """The shingles of normalised `text` as strings (a text shorter than `n` is one shingle)."""
        if self.unit == "word":
            words = text.split()
            count = max(1, len(words) - self.n + 1) if words else 0
            return [" ".join(words[i : i + self.n]) for i in range(count)]
        data = text.encode()
        count = max(1, len(data) - self.n + 1) if data else 0
        return [data[i : i + self.n].decode(errors="surrogateescape") for i in range(count)]

    def shingle_hash(self, shingle: str | bytes) -> int:
        """The 32-bit hash of one shingle; pass it to datasketch as `hashfunc` to get our signatures."""
        data = shingle.encode(errors="surrogateescape") if isinstance(shingle, str) else shingle
        if self.unit == "char":
            return _poly(data, int(_P))
        value = 0
        for word in data.split(b" "):
            value = (value * int(_Q) + _poly(word, int(_P))) & 0xFFFFFFFF
        return value


def _poly(data: bytes, base: int) -> int:
    value = 0
    for byte in data:
        value = (value * base + byte) & 0xFFFFFFFF
    return value


class MinHasher:
    """Signatures (num_perm uint32 values) for batches of texts, normalised as `text.normalize` does."""

    def __init__(self, shingling: Shingling, num_perm: int = 128, seed: int = 1) -> None:
        if num_perm < 2:
            raise ValueError(f"num_perm must be >= 2, got {num_perm}")
        self.shingling, self.num_perm, self.seed = shingling, num_perm, seed
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
        self._a = np.asarray(a, dtype=np.uint32)[:, None]
        self._b = np.asarray(b, dtype=np.uint32)[:, None]

    def reference(self, text: str) -> MinHash:
        """datasketch's MinHash of `text` under the same seed, scheme and shingle hash (for checks and benches)."""
        minhash = MinHash(num_perm=self.num_perm, seed=self.seed, hashfunc=self.shingling.shingle_hash, scheme=SCHEME)
        minhash.update_batch(self.shingling.shingles(normalize(text)))
        return minhash

    def shingle_hashes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All shingle hashes of the normalised `texts` in one array, and each text's start offset in it."""
        joined, text_ends, words_per_text = normalize_batch(texts)
        separators = np.flatnonzero(joined == _SPACE)
        if self.shingling.unit == "char":
            return _char_shingles(joined, text_ends, self.shingling.n)
        return _word_shingles(joined, separators, words_per_text, self.shingling.n)

    def sketch(self, texts: Sequence[str]) -> Sketches:
        """Signatures and shingle hashes of a batch of texts."""
        hashes, offsets = self.shingle_hashes(texts)
        return Sketches(self._min_hash(hashes, offsets, len(texts)), hashes, offsets)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), num_perm) uint32 signatures; an empty text gets the all-max signature, as datasketch."""
        return self.sketch(texts).signatures

    def _min_hash(self, hashes: np.ndarray, offsets: np.ndarray, count: int) -> np.ndarray:
        mixed = _fmix32(hashes)
        result = np.full((count, self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        nonempty = np.flatnonzero(np.diff(offsets))
        block_start = 0
        while block_start < nonempty.size:  # blocks of whole documents, about _BLOCK shingles each
            first = offsets[nonempty[block_start]]
            end_index = int(np.searchsorted(offsets[nonempty + 1], first + _BLOCK, side="right"))
            end_index = max(end_index, block_start + 1)
            docs = nonempty[block_start:end_index]
            lo, hi = offsets[docs[0]], offsets[docs[-1] + 1]
            block = self._a * mixed[lo:hi][None, :]
            block += self._b
            result[docs] = np.minimum.reduceat(block, offsets[docs] - lo, axis=1).T
            block_start = end_index
        return result


@dataclass(frozen=True)
class Sketches:
    """A batch's signatures, plus its shingle hashes (document i owns hashes[offsets[i]:offsets[i+1]])."""

    signatures: np.ndarray
    hashes: np.ndarray
    offsets: np.ndarray

    def shingle_set(self, i: int) -> np.ndarray:
        """Document i's distinct shingle hashes, sorted (for exact Jaccard)."""
        return np.unique(self.hashes[self.offsets[i] : self.offsets[i + 1]])


def _fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, as datasketch applies it before the permutations."""
    h = values ^ (values >> np.uint32(16))
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


_POWERS: dict[int, np.ndarray] = {}


def _powers(base: np.uint32, count: int) -> np.ndarray:
    """base^0 .. base^(count-1) mod 2^32, cached and grown by doubling."""
    cached = _POWERS.get(int(base))
    if cached is None or cached.size < count:
        size = max(count, 2 * (cached.size if cached is not None else 4096))
        cached = np.empty(size, dtype=np.uint32)
        cached[0] = 1
        cached[1:] = base
        np.multiply.accumulate(cached[1:], out=cached[1:])
        _POWERS[int(base)] = cached
    return cached[:count]


def _span_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Polynomial hash (base P, mod 2^32) of each byte span [start, end) of `data`, without a Python loop.

    With S[i] = sum_{j<i} data[j] * P^-j, the hash of [s, e) is P^(e-1) * (S[e] - S[s]) mod 2^32.
    """
    scaled = data.astype(np.uint32) * _powers(_P_INV, data.size)
    prefix = np.zeros(data.size + 1, dtype=np.uint32)
    np.cumsum(scaled, out=prefix[1:])
    up = _powers(_P, data.size + 1)
    return up[np.maximum(ends - 1, 0)] * (prefix[ends] - prefix[starts])


def _char_shingles(data: np.ndarray, text_ends: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    text_starts = np.concatenate(([0], text_ends[:-1] + 1))
    starts, lengths, offsets = _windows(text_starts, text_ends - text_starts, n)
    return _span_hashes(data, starts, starts + lengths), offsets


def _windows(bases: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For groups of `counts` units starting at `bases`: the first unit of every n-unit window inside a group
    (a group shorter than n gets one window), each window's length, and each group's offset among windows."""
    windows = np.where(counts > 0, np.maximum(counts - n + 1, 1), 0)
    offsets = np.concatenate(([0], np.cumsum(windows)))
    starts = np.repeat(bases, windows) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], windows))
    lengths = np.repeat(np.minimum(counts, n), windows)
    return starts, lengths, offsets


def _word_shingles(data: np.ndarray, separators: np.ndarray, words_per_text: np.ndarray,
                   n: int) -> tuple[np.ndarray, np.ndarray]:
    word_starts = np.concatenate(([0], separators[:-1] + 1))
    nonempty = separators > word_starts  # an empty text leaves one empty word
    word_hashes = _span_hashes(data, word_starts[nonempty], separators[nonempty])
    first_words = np.concatenate(([0], np.cumsum(words_per_text)[:-1]))
    starts, lengths, offsets = _windows(first_words, words_per_text, n)
    full = np.zeros(max(word_hashes.size - n + 1, 0), dtype=np.uint32)  # every n-word window, text limits aside
    if full.size:
        full[:] = word_hashes[: full.size]
        for k in range(1, n):
            full *= _Q
            full += word_hashes[k : k + full.size]
    hashes = full[np.minimum(starts, full.size - 1)] if full.size else np.zeros(starts.size, np.uint32)
    for i in np.flatnonzero(lengths < n):  # texts shorter than n words: one shingle of all their words
        value = 0
        for word_hash in word_hashes[starts[i] : starts[i] + lengths[i]]:
            value = (value * int(_Q) + int(word_hash)) & 0xFFFFFFFF
        hashes[i] = value
    return hashes, offsets
