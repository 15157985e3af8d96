"""Compact storage for the near-duplicate index: growable numpy arrays, uint32 values appended to a file,
the MinHash sketches of many documents on disk, and a multimap of uint64 band keys in sorted arrays.

Memory per indexed document is what the candidate search needs (b uint64 band keys and b int32 ids, about
200 bytes at 17 bands); signatures and shingle sets go to files in a spill folder and are read back (one
`pread` each) only for the candidates being verified.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np

_TAIL_BYTES = 1 << 20  # values appended to a file are buffered up to this size, then written
_PENDING = 1 << 14  # band keys held in a dict before they become a sorted run


class GrowingArray:
    """A 1-d numpy array appended to in amortised O(1) time (its buffer doubles)."""

    def __init__(self, dtype: type | np.dtype, capacity: int = 1024) -> None:
        self._data = np.empty(capacity, dtype=dtype)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def extend(self, values: np.ndarray | list[int] | list[float]) -> None:
        """Append `values`."""
        values = np.asarray(values, dtype=self._data.dtype)
        end = self._size + values.size
        if end > self._data.size:
            grown = np.empty(max(end, 2 * self._data.size), dtype=self._data.dtype)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : end] = values
        self._size = end

    @property
    def values(self) -> np.ndarray:
        """The appended values (a view: valid until the next `extend`)."""
        return self._data[: self._size]


class KeyList:
    """Strings appended and read back by position, held as one UTF-8 buffer with offsets."""

    def __init__(self) -> None:
        self._bytes = bytearray()
        self._offsets = GrowingArray(np.int64)
        self._offsets.extend([0])

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        start, stop = self._offsets.values[i : i + 2]
        return self._bytes[start:stop].decode()

    def extend(self, keys: list[str]) -> None:
        """Append `keys`."""
        encoded = [key.encode() for key in keys]
        self._bytes += b"".join(encoded)
        self._offsets.extend(np.cumsum([len(e) for e in encoded], dtype=np.int64) + self._offsets.values[-1])


class AppendFile:
    """uint32 values appended to `path` and read back by position; the last MiB is buffered in memory."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb+", buffering=0)  # noqa: SIM115 - closed by `close`
        self._tail = bytearray()
        self._written = 0
        self.size = 0  # values appended

    def append(self, values: np.ndarray) -> None:
        """Append `values` (cast to uint32)."""
        data = np.ascontiguousarray(values, dtype=np.uint32)
        self._tail += data.tobytes()
        self.size += data.size
        if len(self._tail) >= _TAIL_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered values to the file."""
        self._file.write(self._tail)
        self._written += len(self._tail)
        self._tail.clear()

    def read(self, start: int, stop: int) -> np.ndarray:
        """Values [start, stop) (read-only)."""
        low, high = 4 * start, 4 * stop
        parts = []
        if low < self._written:
            parts.append(os.pread(self._file.fileno(), min(high, self._written) - low, low))
        if high > self._written:
            parts.append(bytes(self._tail[max(low - self._written, 0) : high - self._written]))
        return np.frombuffer(b"".join(parts), dtype=np.uint32)

    def chunks(self, values_per_chunk: int = 1 << 20) -> list[tuple[int, int]]:
        """[start, stop) ranges covering every value, for reading the file piece by piece."""
        return [(start, min(start + values_per_chunk, self.size)) for start in range(0, self.size, values_per_chunk)]

    def close(self) -> None:
        """Close the file (it is removed with its folder)."""
        self._file.close()


class SketchStore:
    """Signatures (num_perm uint32 each) and optional shingle sets of documents 0, 1, ..., in `folder`."""

    def __init__(self, folder: Path, num_perm: int) -> None:
        self.num_perm = num_perm
        self.signatures = AppendFile(folder / "signatures.u32")
        self.sets = AppendFile(folder / "sets.u32")
        self.set_offsets = GrowingArray(np.int64)
        self.set_offsets.extend([0])

    def append(self, signatures: np.ndarray, set_offsets: np.ndarray, set_values: np.ndarray) -> None:
        """Append documents: (m, num_perm) signatures, their sets as values[offsets[i]:offsets[i+1]] (empty: none)."""
        self.signatures.append(signatures)
        self.sets.append(set_values)
        self.set_offsets.extend(np.asarray(set_offsets[1:]) - set_offsets[0] + self.set_offsets.values[-1])

    def signature(self, i: int) -> np.ndarray:
        """Document i's signature."""
        return self.signatures.read(i * self.num_perm, (i + 1) * self.num_perm)

    def shingle_set(self, i: int) -> np.ndarray | None:
        """Document i's sorted distinct shingle hashes, or None when none were stored."""
        start, stop = self.set_offsets.values[i : i + 2]
        return self.sets.read(int(start), int(stop)) if stop > start else None

    def close(self) -> None:
        """Close both files."""
        self.signatures.close()
        self.sets.close()


class BandTable:
    """A multimap from uint64 band keys to int32 document ids: recent entries in a dict, the rest in sorted runs
    (keys with their ids) merged like a binary counter, so there are at most log2(n / 16k) runs and each entry
    is merged as often; a lookup is one `searchsorted` per run."""

    def __init__(self) -> None:
        self._pending: defaultdict[int, list[int]] = defaultdict(list)
        self._pending_count = 0
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, keys: list[int], ident: int) -> None:
        """Map each of `keys` to `ident`."""
        for key in keys:
            self._pending[key].append(ident)
        self._pending_count += len(keys)
        if self._pending_count >= _PENDING:
            self._flush()

    def add_run(self, keys: np.ndarray, ids: np.ndarray) -> None:
        """Map keys[i] to ids[i] for many entries at once (loading)."""
        order = np.argsort(keys, kind="stable")
        self._push(keys[order], ids[order].astype(np.int32))

    def get(self, keys: list[int]) -> list[int]:
        """The sorted distinct ids mapped from any of `keys`."""
        found = {i for key in keys for i in self._pending.get(key, ())}
        query = np.asarray(keys, dtype=np.uint64)
        for run_keys, run_ids in self._runs:
            starts = np.searchsorted(run_keys, query)
            hits = np.flatnonzero(run_keys[np.minimum(starts, run_keys.size - 1)] == query)
            if hits.size:
                stops = np.searchsorted(run_keys, query[hits], side="right")
                for start, stop in zip(starts[hits].tolist(), stops.tolist(), strict=True):
                    found.update(run_ids[start:stop].tolist())
        return sorted(found)

    def _flush(self) -> None:
        keys = np.fromiter((key for key, ids in self._pending.items() for _ in ids), np.uint64, self._pending_count)
        ids = np.fromiter((i for ids in self._pending.values() for i in ids), np.int32, self._pending_count)
        self._pending.clear()
        self._pending_count = 0
        self.add_run(keys, ids)

    def _push(self, keys: np.ndarray, ids: np.ndarray) -> None:
        self._runs.append((keys, ids))
        while len(self._runs) > 1 and self._runs[-2][0].size <= self._runs[-1][0].size:
            (keys_a, ids_a), (keys_b, ids_b) = self._runs.pop(-2), self._runs.pop()
            keys, ids = np.concatenate((keys_a, keys_b)), np.concatenate((ids_a, ids_b))
            order = np.argsort(keys, kind="stable")  # two sorted runs: timsort merges them in linear time
            self._runs.append((keys[order], ids[order]))
