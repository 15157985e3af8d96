"""Reading configuration files: YAML parsed once, validated by pydantic, errors naming file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from synthgen.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)
MAX_EXPANDED_NODES = 1_000_000  # a generous recipe or taxonomy has thousands; an alias bomb has billions


class StrictModel(BaseModel):
    """Configuration data: unknown keys are errors, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid")


def load_yaml(path: str | Path, recursive: bool = False) -> Any:
    """Parse a YAML file; a missing file or a syntax error raises ConfigError with the line. An alias inside the
    node it names makes a recursive structure: refused unless `recursive` (the caller then checks it itself)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), None, "file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc.strerror}") from None
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set(), recursive)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), None, f"invalid YAML: {where}{problem}") from None
    except RecursionError:
        raise ConfigError(str(path), None, "invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = (key_node.tag, key_node.value)
            if key in first_lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r} (first given at line {first_lines[key]})",
                    key_node.start_mark)
            first_lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], recursive: bool) -> int:
    """Nodes in the document once every alias is expanded; refuses expansions past MAX_EXPANDED_NODES (a few
    hundred bytes of nested aliases can otherwise expand to gigabytes). An alias inside the node it names (a
    cycle) counts once when `recursive`, and is refused otherwise."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        if recursive:
            return 1
        raise yaml.constructor.ConstructorError(
            None, None, "an alias refers to a node that contains it (a recursive structure)", node.start_mark)
    open_nodes.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1 + sum(_expanded_size(child, sizes, open_nodes, recursive) for child in children)
    open_nodes.discard(key)
    if size > MAX_EXPANDED_NODES:
        raise yaml.constructor.ConstructorError(
            None, None, f"aliases expand the document past {MAX_EXPANDED_NODES:,} nodes; write the data out instead",
            node.start_mark)
    sizes[key] = size
    return size


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
