"""What the run report reads from a run directory: stats, the frozen recipe, dataset, rejects, seed records."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from synthgen.card import recipe_hash
from synthgen.config import load_yaml
from synthgen.errors import InputError, RunDirError, SynthgenError
from synthgen.taxonomy import Taxonomy


@dataclass
class Sample:
    """Per string field, the character lengths of every record seen; a seeded reservoir sample of
    (string fields, leaf) pairs; and how many records carry each taxonomy leaf."""

    size: int
    rng: random.Random
    count: int = 0
    lengths: dict[str, list[int]] = field(default_factory=dict)
    picked: list[tuple[dict[str, str], str]] = field(default_factory=list)
    leaves: Counter[str] = field(default_factory=Counter)

    def add(self, fields: dict[str, Any], leaf: str | None) -> None:
        texts = {name: value for name, value in fields.items() if isinstance(value, str)}
        for name, text in texts.items():
            self.lengths.setdefault(name, []).append(len(text))
        self.count += 1
        if leaf:
            self.leaves[leaf] += 1
        if len(self.picked) < self.size:
            self.picked.append((texts, leaf or "(no leaf)"))
        elif (slot := self.rng.randrange(self.count)) < self.size:
            self.picked[slot] = (texts, leaf or "(no leaf)")

    def texts(self) -> list[str]:
        """The sampled records' string fields, joined (what the embedding map embeds)."""
        return [record_text(fields) for fields, _ in self.picked]


class RunData:
    """What the report reads from a run directory: stats.json, the frozen recipe, dataset and rejects."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_dir():
            raise RunDirError(f"{path}: no such run directory")
        try:
            self.stats: dict[str, Any] = orjson.loads((path / "stats.json").read_bytes())
        except FileNotFoundError:
            raise RunDirError(f"{path}: no stats.json; is this a finished synthgen run directory?") from None
        except orjson.JSONDecodeError as exc:
            raise RunDirError(f"{path}: stats.json is not valid JSON ({exc})") from None
        recipe_path = path / "recipe.yaml"
        self.recipe_hash = recipe_hash(recipe_path.read_text(encoding="utf-8")) if recipe_path.exists() else "n/a"
        try:
            loaded = load_yaml(recipe_path)
        except SynthgenError:
            loaded = None
        self.recipe: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
        self.name = str(self.recipe.get("name") or path.name)
        stages = [s for s in self.recipe.get("stages") or [] if isinstance(s, dict)]
        generates = [(i, s["generate"]) for i, s in enumerate(stages) if isinstance(s.get("generate"), dict)]
        taxonomy_stage = next(((i, p) for i, p in generates if p.get("taxonomy")), None)
        self.leaf_stage = f"{taxonomy_stage[0]:02d}-generate" if taxonomy_stage else None
        self.taxonomy_params: dict[str, Any] = taxonomy_stage[1] if taxonomy_stage else {}

    def resolve(self, relative: str) -> Path:
        """A path the frozen recipe names, tried like Recipe.resolve would from the run directory (the folder of
        the recipe it was frozen from included)."""
        candidates = [self.path / relative, self.path.parent / relative]
        if origin := (self.recipe.get("run") or {}).get("recipe_dir"):
            candidates += [Path(origin) / relative, Path(origin).parent / relative]
        candidates.append(Path.cwd() / relative)
        return next((c for c in candidates if c.exists()), candidates[0])

    def rows(self, name: str) -> Iterator[dict[str, Any]]:
        """The JSON lines of a file in the run directory (none if it is absent)."""
        path = self.path / name
        if not path.exists():
            return
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield orjson.loads(line)
                    except orjson.JSONDecodeError:
                        raise InputError(str(path), number, "not a JSON line") from None

    def leaf(self, row: dict[str, Any]) -> str | None:
        """The taxonomy leaf a record was drawn from: its step of the first generate stage with a taxonomy,
        else that stage's `leaf_field` (which outlives steps a later stage merged away)."""
        for step in (row.get("meta") or {}).get("steps") or []:
            if step.get("leaf") and (self.leaf_stage is None or step.get("stage") == self.leaf_stage):
                return str(step["leaf"])
        value = (row.get("fields") or {}).get(self.taxonomy_params.get("leaf_field") or "")
        return value if isinstance(value, str) and value else None

    @staticmethod
    def is_real(row: dict[str, Any]) -> bool:
        """A dataset record that is a real document passed through, not a model's text: its `kind` field says
        `real` (the convention of mixes such as WRAP's real + rephrased documents)."""
        return (row.get("fields") or {}).get("kind") == "real"

    def seeds(self, sample: Sample) -> Sample | None:
        """The records that entered the first stage (the recipe's source), if it can still be read."""
        from synthgen.stages.source import Source, SourceConfig

        config = self.recipe.get("source")
        if not isinstance(config, dict):
            return None
        limit = (self.recipe.get("run") or {}).get("limit")
        try:
            source = Source(SourceConfig.model_validate(config), self.resolve(str(config.get("path"))))
            for record in islice(source, limit):
                sample.add(record.fields, None)
        except (SynthgenError, ValueError, OSError):
            return None
        return sample

    def targets(self) -> dict[str, float] | None:
        """Leaf probabilities of the first taxonomy generate stage, if its taxonomy file resolves."""

        if not self.taxonomy_params:
            return None
        try:
            taxonomy = Taxonomy.load(self.resolve(str(self.taxonomy_params["taxonomy"])))
            if self.taxonomy_params.get("taxonomy_branch"):
                taxonomy = taxonomy.branch(str(self.taxonomy_params["taxonomy_branch"]))
        except (SynthgenError, KeyError):
            return None
        return {leaf.path: leaf.probability for leaf in taxonomy.leaves}


def record_text(fields: dict[str, Any]) -> str:
    return "\n".join(value for value in fields.values() if isinstance(value, str))
