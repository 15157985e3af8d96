"""Task taxonomies: a YAML tree of weighted task categories whose leaves say what to generate.

File format::

    name: quickstart                # optional
    description: ...                # optional
    template: quickstart/instruction.j2   # optional on any node; inherited; the nearest one wins
    sampling: {temperature: 1.0}    # optional on any node; merged parent -> child
    placeholders:                   # optional on any node; name -> values; merged parent -> child
      audience: [students, engineers]
    children:
      - id: writing                 # letters, digits, '_', '.', '-'; unique among siblings
        weight: 2                   # relative to siblings; default 1; >= 0
        placeholders:
          tone: [formal, playful]
        children: [...]             # a node with children is a branch, without is a leaf

A leaf's probability is the product of its normalised weights along the path from the root.
Sampling picks a leaf by probability, then one value for each of its placeholders, all from one
`random.Random`, so a seeded rng gives the same draws on every run.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import itertools
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rich.text import Text
from rich.tree import Tree

from synthgen.config import load_yaml, validate
from synthgen.errors import ConfigError

_ID = re.compile(r"[A-Za-z0-9_.-]+")


class _Inherited(BaseModel):
    """Settings a node passes down to its descendants."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    template: str | None = None
    output_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    sampling: dict[str, Any] = Field(default_factory=dict)
    placeholders: dict[str, list[Any]] = Field(default_factory=dict)
    children: list[TaxonomyNode] = Field(default_factory=list)


class TaxonomyNode(_Inherited):
    """One task category in the YAML tree."""

    id: str
    weight: float = Field(default=1.0, ge=0, allow_inf_nan=False)


class TaxonomyFile(_Inherited):
    """The root of a taxonomy YAML file."""

    name: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Leaf:
    """A leaf task with everything inherited from its ancestors resolved."""

    path: str
    probability: float
    template: str | None
    sampling: dict[str, Any]
    placeholders: dict[str, list[Any]]
    schema: dict[str, Any] | None = None


class Taxonomy:
    """Weighted leaves of a task tree, and reproducible sampling from them."""

    def __init__(self, spec: TaxonomyFile, source: str) -> None:
        self.spec, self.source, self.name = spec, source, spec.name
        self.leaves: list[Leaf] = []
        _collect(spec, "", 1.0, spec.template, {}, {}, self.leaves)
        self._index()

    def _index(self) -> None:
        self._by_path = {leaf.path: leaf for leaf in self.leaves}
        self._cumulative = list(itertools.accumulate(leaf.probability for leaf in self.leaves))

    def branch(self, path: str) -> Taxonomy:
        """The leaves under `path` only, their probabilities renormalised; KeyError if there are none."""
        leaves = [leaf for leaf in self.leaves if leaf.path == path or leaf.path.startswith(path + "/")]
        total = sum(leaf.probability for leaf in leaves)
        if not leaves or total <= 0:
            raise KeyError(path)
        sub = copy.copy(self)
        sub.leaves = [dataclasses.replace(leaf, probability=leaf.probability / total) for leaf in leaves]
        sub._index()
        return sub

    @classmethod
    def load(cls, path: str | Path) -> Taxonomy:
        """Read and check a taxonomy YAML file."""
        return cls.from_data(load_yaml(path, recursive=True), str(path))  # from_data names a cycle's node

    @classmethod
    def from_data(cls, data: Any, source: str) -> Taxonomy:
        """Check already-parsed YAML `data`; errors name `source` and the field path."""
        if data is None:
            raise ConfigError(source, None, "empty file; a taxonomy is a mapping with a 'children' list")
        _check_cycles(data, source, "", [])
        spec = validate(TaxonomyFile, data, source)
        if not spec.children:
            raise ConfigError(source, "children", "a taxonomy needs at least one child node")
        _check_node(spec, source, "")
        return cls(spec, source)

    @classmethod
    def single(
        cls,
        template: str,
        sampling: dict[str, Any] | None = None,
        placeholders: dict[str, list[Any]] | None = None,
    ) -> Taxonomy:
        """A one-leaf taxonomy for a recipe that names only a template; the leaf is named after it."""
        leaf_id = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(template).name.removesuffix(".j2")) or "default"
        data = {
            "template": template,
            "sampling": sampling or {},
            "placeholders": placeholders or {},
            "children": [{"id": leaf_id}],
        }
        return cls.from_data(data, template)

    def sample(self, rng: random.Random, leaf_path: str | None = None) -> tuple[Leaf, dict[str, Any]]:
        """Draw a leaf by probability (or take the leaf at `leaf_path`) and one value per placeholder,
        using only `rng`; an unknown `leaf_path` raises KeyError."""
        if leaf_path is None:
            index = bisect.bisect_right(self._cumulative, rng.random() * self._cumulative[-1])
            leaf = self.leaves[min(index, len(self.leaves) - 1)]
        else:
            leaf = self._by_path[leaf_path]
        return leaf, {name: rng.choice(values) for name, values in leaf.placeholders.items()}

    def render_tree(self) -> Tree:
        """A rich tree: branches with their weights, leaves with probability, template and placeholders."""
        root = Tree(Text(self.name or self.source, style="bold"))
        _add_children(root, self.spec, "", self._by_path)
        return root


def _collect(
    node: _Inherited,
    path: str,
    probability: float,
    template: str | None,
    sampling: dict[str, Any],
    placeholders: dict[str, list[Any]],
    out: list[Leaf],
    schema: dict[str, Any] | None = None,
) -> None:
    """Append the leaves under `node` to `out`, depth first, merging inherited settings."""
    template = node.template or template
    schema = node.output_schema or schema
    sampling = {**sampling, **node.sampling}
    placeholders = {**placeholders, **node.placeholders}
    if not node.children:
        out.append(Leaf(path, probability, template, sampling, placeholders, schema))
        return
    total = sum(child.weight for child in node.children)
    for child in node.children:
        child_path = f"{path}/{child.id}" if path else child.id
        share = probability * child.weight / total
        _collect(child, child_path, share, template, sampling, placeholders, out, schema)


def _check_cycles(data: Any, source: str, field: str, ancestors: list[dict[str, Any]]) -> None:
    """Refuse raw YAML where a node contains itself (through aliases) before pydantic recurses into it."""
    if not isinstance(data, dict):
        return
    if any(data is ancestor for ancestor in ancestors):
        label = data.get("id") or data.get("name") or "root"
        raise ConfigError(source, field, f"cycle: node {label!r} contains itself")
    children = data.get("children")
    if isinstance(children, list):
        ancestors.append(data)
        prefix = f"{field}.children" if field else "children"
        for index, child in enumerate(children):
            _check_cycles(child, source, f"{prefix}[{index}]", ancestors)
        ancestors.pop()


def _check_node(node: _Inherited, source: str, field: str) -> None:
    """The checks pydantic cannot express: ids, placeholders, sibling ids, weight totals."""
    prefix = f"{field}." if field else ""
    label = repr(node.id) if isinstance(node, TaxonomyNode) else "the root"
    if isinstance(node, TaxonomyNode) and not _ID.fullmatch(node.id):
        raise ConfigError(source, f"{prefix}id", f"id {node.id!r} may only contain letters, digits, '_', '.', '-'")
    for name, values in node.placeholders.items():
        if not name.isidentifier():
            raise ConfigError(source, f"{prefix}placeholders", f"placeholder name {name!r} is not a valid identifier")
        if not values:
            raise ConfigError(source, f"{prefix}placeholders.{name}", f"placeholder {name!r} has no values")
    if node.children and sum(child.weight for child in node.children) == 0:
        raise ConfigError(source, f"{prefix}children", f"weights of the children of {label} sum to zero")
    seen: dict[str, int] = {}
    for index, child in enumerate(node.children):
        child_field = f"{prefix}children[{index}]"
        if child.id in seen:
            message = f"duplicate id {child.id!r} among siblings (first at {prefix}children[{seen[child.id]}])"
            raise ConfigError(source, f"{child_field}.id", message)
        seen[child.id] = index
        _check_node(child, source, child_field)


def _add_children(tree: Tree, node: _Inherited, path: str, by_path: dict[str, Leaf]) -> None:
    """Add a tree row for each child of `node`, recursing into branches."""
    for child in node.children:
        child_path = f"{path}/{child.id}" if path else child.id
        label = Text.assemble((child.id, "bold"), f"  weight {child.weight:g}")
        if child.children:
            _add_children(tree.add(label), child, child_path, by_path)
            continue
        leaf = by_path[child_path]
        label.append(f"  {leaf.probability:.2%}", style="green")
        if leaf.template:
            label.append(f"  {leaf.template}", style="cyan")
        if leaf.placeholders:
            label.append(f"  {{{', '.join(leaf.placeholders)}}}", style="magenta")
        tree.add(label)
