"""One record's provenance for `synthgen view`: its prompts re-rendered, raw completions, lineage tree, word diff.

A generate step records its template, leaf and placeholders (meta.steps); the prompt is rendered again from those
and the fields of the record the stage took in (found among the record's ancestors in the previous stage's
checkpoint), with the frozen recipe's prompts folder. The raw completion is the request cache's entry for the
step's request key. Steps that do not record their variables (a judge's) show their template and completion only.
"""

from __future__ import annotations

import difflib
import re
import sqlite3
from typing import Any

from synthgen.backends.settings import BackendConfig
from synthgen.errors import SynthgenError
from synthgen.hashing import content_hash
from synthgen.prompts import PromptLibrary
from synthgen.report_data import record_text
from synthgen.stages.generate import template_variables
from synthgen.view.store import Row, RunStore

MAX_CHILDREN = 50  # per record in the lineage tree; the rest are counted
_WORDS = re.compile(r"\s+|[^\s]+")


def lineage(store: RunStore, record: Row, depth: int = 6) -> list[dict[str, Any]]:
    """The ancestors of `record` as a tree of {id, source, preview, parents}, `depth` levels up."""
    nodes = []
    for parent in (record.get("meta") or {}).get("parents") or []:
        found = store.find(str(parent))
        if found is None:
            nodes.append({"id": parent, "source": None, "preview": "(an input record, not stored in the run)", "parents": []})
            continue
        row = store.read(*found)
        nodes.append({"id": parent, "source": found[0], "preview": _preview(row),
                      "parents": lineage(store, row, depth - 1) if depth > 1 else []})
    return nodes


def descendants(store: RunStore, record_id: str, depth: int = 3) -> dict[str, Any]:
    """The records made from `record_id` (across every checkpoint and the rejects), as a tree `depth` levels down."""
    children: dict[str, tuple[str, Row]] = {}
    for source in [*store.labels, "dataset", "rejects"]:
        if source not in store.sources:
            continue
        listing = store.listing(source)
        for row in listing.children_rows(record_id):
            if len(children) >= MAX_CHILDREN:
                break
            record = store.read(source, row)
            children.setdefault(str(record["id"]), (source, record))
    nodes = [{"id": child_id, "source": source, "preview": _preview(row),
              "children": descendants(store, child_id, depth - 1)["children"] if depth > 1 else []}
             for child_id, (source, row) in children.items()]
    return {"id": record_id, "children": nodes}


def steps(store: RunStore, record: Row) -> list[dict[str, Any]]:
    """Each meta.steps entry with its re-rendered prompt (or why there is none) and its raw completion."""
    library = PromptLibrary(store.run.resolve(str(store.run.recipe.get("prompts_dir") or "prompts")))
    cache = _Cache(store)
    shown = []
    for step in (record.get("meta") or {}).get("steps") or []:
        item: dict[str, Any] = {"step": step, "messages": None, "note": "", "completion": cache.text(step.get("request"))}
        if "placeholders" not in step:
            item["note"] = "this step does not record its template variables; its prompt cannot be rendered again"
        else:
            variables = template_variables(step["placeholders"], step.get("leaf"), _input_fields(store, record, step))
            try:
                item["messages"] = library.render(str(step.get("template")), variables)
            except SynthgenError as exc:
                item["note"] = f"cannot render the prompt again: {exc}"
        shown.append(item)
    cache.close()
    return shown


def _input_fields(store: RunStore, record: Row, step: dict[str, Any]) -> dict[str, Any]:
    """The fields of the record the step's stage took in: the ancestor found in the previous stage's checkpoint."""
    label = str(step.get("stage"))
    if label not in store.labels or store.labels.index(label) == 0:
        return {}  # the first stage's input is the source (or nothing, for a `count` generation)
    previous = store.listing(store.labels[store.labels.index(label) - 1])
    frontier, seen = [record], set()
    while frontier:
        current = frontier.pop(0)
        row = previous.row_of(str(current["id"]))
        if row is not None:
            fields: dict[str, Any] = store.read(previous.name, row).get("fields") or {}
            return fields
        for parent in (current.get("meta") or {}).get("parents") or []:
            if parent not in seen and (found := store.find(str(parent))) is not None:
                seen.add(parent)
                frontier.append(store.read(*found))
    return {}


class _Cache:
    """The run's request cache, opened read-only, looked up by a step's request key under each backend of the recipe."""

    def __init__(self, store: RunStore) -> None:
        path = store.path / "cache.sqlite"
        recipe = store.run.recipe
        recorded = (recipe.get("run") or {}).get("backend")  # the run's own: it holds what a backend adds (a model
        self.identities = [content_hash(recorded)] if recorded else []  # file's sha256), which no config says
        for config in [recipe.get("backend"), *(recipe.get("backends") or {}).values()]:
            try:
                identity = content_hash(BackendConfig.model_validate(config or {}).identity())
            except (ValueError, SynthgenError):
                continue
            if identity not in self.identities:
                self.identities.append(identity)
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True) if path.exists() else None

    def text(self, request: str | None) -> str | None:
        if self.db is None or not request:
            return None
        for identity in self.identities:
            try:
                row = self.db.execute("SELECT text FROM completions WHERE key = ?",
                                      (content_hash([identity, request]),)).fetchone()
            except sqlite3.Error:
                return None
            if row is not None:
                return str(row[0])
        return None

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """(op, text) pieces turning `before` into `after` word by word; op is equal, delete or insert."""
    old, new = _WORDS.findall(before), _WORDS.findall(after)
    pieces: list[tuple[str, str]] = []
    for op, a1, a2, b1, b2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if op == "equal":
            pieces.append(("equal", "".join(old[a1:a2])))
            continue
        if a2 > a1:
            pieces.append(("delete", "".join(old[a1:a2])))
        if b2 > b1:
            pieces.append(("insert", "".join(new[b1:b2])))
    return pieces


def compare(parent: Row, record: Row) -> list[dict[str, Any]]:
    """Per field of either record: the parent's text, the record's, and the word diff between them."""
    old, new = parent.get("fields") or {}, record.get("fields") or {}
    return [{"field": name, "parent": _text(old.get(name)), "record": _text(new.get(name)),
             "diff": word_diff(_text(old.get(name)), _text(new.get(name)))}
            for name in dict.fromkeys([*old, *new])]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _preview(row: Row, limit: int = 160) -> str:
    text = " ".join(record_text(row.get("fields") or {}).split())
    return text if len(text) <= limit else text[:limit] + " ..."
