"""Structured output: a JSON Schema (inline or from a pydantic model) and the check of each response."""

from __future__ import annotations

import importlib
import re
from typing import Any

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
