"""Structured output: a JSON Schema (inline or from a pydantic model) and the check of each response."""

from __future__ import annotations

import importlib
import re
from typing import Any
from urllib.parse import unquote

import jsonschema
import orjson
from pydantic import BaseModel, ValidationError

from synthgen.errors import ConfigError

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class InvalidOutput(Exception):
    """A response that does not parse or does not match the schema; `reason` is a short label."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


class OutputSchema:
    """Parses a completion as JSON (tolerating a ```json fence) and validates it."""

    def __init__(self, schema: dict[str, Any], model: type[BaseModel] | None = None) -> None:
        self.schema = schema
        self._model = model
        self._validator = jsonschema.Draft202012Validator(schema)

    @classmethod
    def from_inline(cls, schema: dict[str, Any], source: str, field: str) -> OutputSchema:
        """From a schema written in the recipe; an invalid schema is a ConfigError at `field`."""
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path)
            raise ConfigError(source, field + path, f"not a valid JSON Schema: {exc.message}") from None
        _check_refs(schema, schema, source, field)
        return cls(schema)

    @classmethod
    def from_model(cls, dotted: str, source: str, field: str) -> OutputSchema:
        """From `package.module:Model`, a pydantic model; its own validation is used for responses."""
        module_name, _, attr = dotted.partition(":")
        try:
            model = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(source, field, f"cannot import '{dotted}' ({exc}); write it as package.module:Model") from None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigError(source, field, f"'{dotted}' is not a pydantic model")
        return cls(model.model_json_schema(), model)

    def parse(self, text: str) -> dict[str, Any]:
        """The validated object, or InvalidOutput naming what is wrong."""
        stripped = text.strip()
        fenced = _FENCE.match(stripped)
        try:
            value = orjson.loads(fenced.group(1) if fenced else stripped)
        except orjson.JSONDecodeError as exc:
            raise InvalidOutput("invalid_json", str(exc)) from None
        if self._model is not None:
            try:
                return self._model.model_validate(value).model_dump(mode="json")
            except ValidationError as exc:
                raise InvalidOutput("schema_mismatch", str(exc.errors(include_url=False)[0])) from None
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is not None:
            raise InvalidOutput("schema_mismatch", error.message)
        if not isinstance(value, dict):
            raise InvalidOutput("schema_mismatch", f"expected a JSON object, got {type(value).__name__}")
        return value


_SAME_INSTANCE = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else")  # subschemas applied to the same value


def _check_refs(node: Any, root: dict[str, Any], source: str, field: str) -> None:
    """Every `$ref` must point inside the schema (`#/...`) at something that exists, and must not lead back to
    itself through `$ref`s and allOf/anyOf/oneOf/not/if/then/else alone: such a cycle checks the same value
    forever. Recursion through `properties` or `items` (a tree whose nodes hold nodes) descends into the value
    and is fine."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _check_refs(item, root, source, f"{field}[{index}]")
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str):
        _resolve(ref, root, source, f"{field}.$ref")
        if _loops(node, root, []):
            raise ConfigError(source, f"{field}.$ref", f"$ref {ref!r} leads into a cycle of references that never "
                                                       "descends into a property or item")
    for key, value in node.items():
        if key not in ("const", "enum", "default", "examples"):
            _check_refs(value, root, source, f"{field}.{key}")


def _resolve(ref: str, root: dict[str, Any], source: str, field: str) -> Any:
    """The subschema `ref` (a JSON pointer into the schema, e.g. '#/$defs/item') points at."""
    if not ref.startswith("#") or (ref != "#" and not ref.startswith("#/")):
        raise ConfigError(source, field, f"$ref {ref!r}: only references inside the schema (#/...) are supported")
    target: Any = root
    for part in ref[2:].split("/") if ref != "#" else []:
        key = unquote(part).replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and key in target:
            target = target[key]
        elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
            target = target[int(key)]
        else:
            raise ConfigError(source, field, f"$ref {ref!r} points at nothing: the schema has no {key!r} there")
    return target


def _loops(node: Any, root: dict[str, Any], open_nodes: list[int]) -> bool:
    """Whether following `$ref`s and same-value keywords from `node` comes back to a node on the way."""
    if not isinstance(node, dict):
        return False
    if id(node) in open_nodes:
        return True
    open_nodes.append(id(node))
    following: list[Any] = []
    if isinstance(node.get("$ref"), str):
        following.append(_resolve(node["$ref"], root, "", ""))
    for key in _SAME_INSTANCE:
        value = node.get(key)
        following.extend(value if isinstance(value, list) else [value])
    found = any(_loops(child, root, open_nodes) for child in following)
    open_nodes.pop()
    return found
