"""Reading configuration files: YAML parsed once, validated by pydantic, errors naming file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from synthgen.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


class StrictModel(BaseModel):
    """Configuration data: unknown keys are errors, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid")


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error raises ConfigError with the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), None, "file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), None, f"invalid YAML: {where}{problem}") from None


def format_loc(loc: tuple[int | str, ...], prefix: str = "") -> str:
    """Turn a pydantic error location into a field path: ('stages', 2, 'template') -> 'stages[2].template'."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def validate(model: type[ModelT], data: Any, source: str, prefix: str = "") -> ModelT:
    """Validate `data` against `model`; the first error becomes a ConfigError naming `source` and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = format_loc(tuple(error["loc"]), prefix) or None
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(source, field, error["msg"] + suffix) from None
