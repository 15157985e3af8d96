"""The offline encoder and its on-disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthgen.embedding.encoder import Encoder

TEXTS = ["How do I reset my password?", "Where is my parcel?", "How do I reset my password?", ""]


def test_unit_vectors_and_the_cache_avoids_a_second_encode(tmp_path: Path) -> None:
    encoder = Encoder(cache_dir=tmp_path)
    first = encoder.encode(TEXTS)
    assert first.shape == (4, encoder.dimension) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-4)
    assert np.array_equal(first[0], first[2]) and float(first[0] @ first[1]) < 0.9
    assert encoder.encoded == 3  # the repeated text is encoded once
    again = Encoder(cache_dir=tmp_path)  # a later stage or a re-run: same file, nothing encoded
    assert np.array_equal(again.encode(TEXTS), first) and again.encoded == 0
    assert np.allclose(Encoder().encode(TEXTS[:2]), first[:2], atol=1e-6)  # the cache returns what the model gives
    assert again.encode([]).shape == (0, encoder.dimension)
