"""The dataset every shipped recipe makes on the built-in sim, as one sha256 per recipe: run it before and after a
refactor and compare, to show behaviour is unchanged byte for byte.

    python bench/recipe_outputs.py --save /tmp/before.json      # on the old code
    python bench/recipe_outputs.py --compare /tmp/before.json   # on the new code: exits 1 on any difference
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent


def digests(limit: int) -> dict[str, str]:
    """Recipe file name -> sha256 of the dataset.jsonl it makes on the sim with `--limit limit`."""
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted((REPO / "recipes").glob("*.yaml")):
            recipe = load_recipe(path).with_backend(kind="sim")
            result = run_recipe(recipe, Path(tmp) / path.stem, limit=limit)
            dataset = result.run_dir.dataset_path.read_bytes().replace(str(REPO).encode(), b"<repo>")  # any clone
            found[path.name] = hashlib.sha256(dataset).hexdigest()
            print(f"{path.name:<26} {result.records:>5} records  {found[path.name][:16]}", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=12)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path)
    group.add_argument("--compare", type=Path)
    args = parser.parse_args()
    found = digests(args.limit)
    if args.save:
        args.save.write_text(json.dumps(found, indent=2))
        return
    before = json.loads(args.compare.read_text())
    changed = sorted(name for name in before.keys() | found.keys() if before.get(name) != found.get(name))
    print("identical" if not changed else f"different: {', '.join(changed)}")
    sys.exit(1 if changed else 0)


if __name__ == "__main__":
    main()
