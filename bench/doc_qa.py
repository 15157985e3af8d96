"""The grounded Q&A recipe (recipes/doc_qa.yaml): rows per chunk and what the grounding check rejects, and why.

    python bench/doc_qa.py [--backend sim|llamacpp] [--limit 24] [--dump kept.jsonl] [--run-dir DIR]

Runs the shipped recipe over the first `--limit` chunks of recipes/data/doc_qa_chunks.jsonl on the sim server or
the packaged SmolLM2-135M-Instruct (embedded llama.cpp; ~160 tok/s on a laptop CPU: keep `--limit` small).
Printed: question tasks and generated rows per chunk (a generate failure is a task without a row), the share of
generated rows each grounding check rejects (by reason and by question kind), and the rows kept per chunk.
`--dump` writes the kept rows (kind, question, quote, answer) for a hand check of support by the quote.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sim", help="sim (default) or llamacpp")
    parser.add_argument("--limit", type=int, default=24, help="chunks to use")
    parser.add_argument("--dump", type=Path, help="write the kept rows here (JSONL)")
    parser.add_argument("--run-dir", type=Path, help="keep the run here (a rerun resumes); default: a temporary one")
    args = parser.parse_args()
    recipe = load_recipe(REPO / "recipes" / "doc_qa.yaml")
    sim = {"sim": {"latency": 0.0}} if args.backend == "sim" else {}
    recipe = recipe.with_backend(kind=args.backend, **sim)
    with tempfile.TemporaryDirectory() as work:
        result = run_recipe(recipe, args.run_dir or Path(work) / "run", limit=args.limit)
        kept, rejects = read_jsonl(result.run_dir.dataset_path), read_jsonl(result.run_dir.rejects_path)
        wall = result.stats.elapsed
    chunks = min(args.limit, len(read_jsonl(REPO / "recipes" / "data" / "doc_qa_chunks.jsonl")))
    failed = [r for r in rejects if "generate" in r["stage"]]
    grounding = [r for r in rejects if "grounding" in r["stage"]]
    later = [r for r in rejects if r not in failed and r not in grounding]
    generated = len(kept) + len(grounding) + len(later)
    tasks = generated + len(failed)
    print(f"backend {args.backend}: {chunks} chunks, {tasks} question tasks ({tasks / chunks:.2f} per chunk), "
          f"{generated} rows generated ({generated / chunks:.2f} per chunk; {len(failed)} requests failed: "
          f"{dict(Counter(r['reason'] for r in failed))}), {wall:.0f} s")
    print(f"grounding check rejects {len(grounding)} / {generated} ({len(grounding) / max(generated, 1):.1%}):")
    for reason, n in Counter(r["reason"] for r in grounding).most_common():
        print(f"  {reason:26s} {n:4d}  {n / max(generated, 1):6.1%}")
    kinds = Counter(r["fields"].get("kind") for r in kept)
    made = Counter(r["fields"].get("kind") for r in [*kept, *grounding, *later])
    for kind in sorted(made):
        reasons = Counter(r["reason"] for r in grounding if r["fields"].get("kind") == kind)
        print(f"  {kind:12s} generated {made[kind]:3d}, kept {kinds[kind]:3d}; rejected: {dict(reasons)}")
    print(f"later stages (dedup) drop {len(later)}; kept {len(kept)} rows ({len(kept) / chunks:.2f} per chunk)")
    if args.dump:
        args.dump.write_text("".join(json.dumps({k: r["fields"].get(k) for k in ("kind", "question", "quote", "answer")},
                                                ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")


if __name__ == "__main__":
    main()
