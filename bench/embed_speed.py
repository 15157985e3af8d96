"""Encoding overhead of synthgen's Encoder (content-hash keys + SQLite cache) over a bare
`SentenceTransformer.encode` of the same texts, and the time of a second, fully cached pass.

    python bench/embed_speed.py [--texts 3000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from synthgen.embedding.encoder import Encoder
from synthgen.stages.source import Source, SourceConfig

DATA = Path(__file__).resolve().parent.parent / "recipes" / "data" / "self_instruct_seed_tasks.jsonl"


def texts(count: int) -> list[str]:
    """Real instructions and their instance inputs/outputs, cycled and numbered to `count` distinct texts."""
    rows = list(Source(SourceConfig(path=str(DATA)), DATA))
    pool = [r.fields["instruction"] for r in rows]
    pool += [i["input"] or i["output"] for r in rows for i in r.fields["instances"] if i["input"] or i["output"]]
    return [f"{pool[i % len(pool)]} ({i // len(pool)})" for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=3000)
    args = parser.parse_args()
    batch = texts(args.texts)
    bare = Encoder()
    bare.encode(batch[:64])  # warm up the model
    began = time.perf_counter()
    bare.model.encode(batch, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    plain = time.perf_counter() - began
    with tempfile.TemporaryDirectory() as folder:
        cached = Encoder(cache_dir=Path(folder))
        began = time.perf_counter()
        cached.encode(batch)
        first = time.perf_counter() - began
        began = time.perf_counter()
        cached.encode(batch)
        second = time.perf_counter() - began
        assert cached.encoded == len(batch)
    print(f"{len(batch)} texts, all-MiniLM-L6-v2 on CPU, batch 64")
    print(f"bare SentenceTransformer.encode      {plain:7.2f} s  {len(batch) / plain:7.0f} texts/s")
    print(f"synthgen Encoder, empty cache        {first:7.2f} s  overhead {100 * (first - plain) / plain:+.1f}%")
    print(f"synthgen Encoder, second pass cached {second:7.2f} s  ({plain / second:.0f}x faster than encoding)")


if __name__ == "__main__":
    main()
