"""A growing numpy array for whole-set stages: chunks of rows appended into one buffer, so n vectors cost
n x d x itemsize bytes and no list of per-chunk arrays (nor their concatenated copy) is ever held.

The buffer grows in place with `ndarray.resize`, i.e. `realloc`: large buffers are memory-mapped by the
allocator, which moves their pages (mremap) instead of copying them, so growing never holds two copies.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Rows:
    """Rows of one dtype appended chunk by chunk; `array` is the (n, ...) result, valid until the next append."""

    def __init__(self, dtype: Any = np.float32) -> None:
        self._data: np.ndarray | None = None
        self._dtype = np.dtype(dtype)
        self.count = 0

    def append(self, chunk: np.ndarray) -> None:
        """Copy `chunk` (rows of the same trailing shape) to the end."""
        chunk = np.asarray(chunk, dtype=self._dtype)
        if self._data is None:
            self._data = np.empty((max(len(chunk), 1), *chunk.shape[1:]), dtype=self._dtype)
        needed = self.count + len(chunk)
        if needed > len(self._data):
            self._data.resize((max(needed, len(self._data) * 5 // 4), *self._data.shape[1:]), refcheck=False)
        self._data[self.count:needed] = chunk
        self.count = needed

    @property
    def array(self) -> np.ndarray:
        """The appended rows (a view: take a copy to keep it past the next `append`)."""
        if self._data is None:
            return np.zeros((0, 0), dtype=self._dtype)
        return self._data[:self.count]

    def trim(self) -> np.ndarray:
        """Release the spare capacity and return the rows (call once appending is over)."""
        if self._data is not None and len(self._data) > self.count:
            self._data.resize((self.count, *self._data.shape[1:]), refcheck=False)
        return self.array
