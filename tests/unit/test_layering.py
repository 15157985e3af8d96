"""Layering: no import cycle among synthgen's modules, nor among its packages (synthgen.stages, synthgen.backends, ...,
each top-level module a node of its own). Imports inside functions count (they are still dependencies); imports
under `if TYPE_CHECKING:` do not (they never run)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "synthgen"

def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those in `if TYPE_CHECKING:` bodies (their `else:` counts)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]))
        else:
            yield from _import_nodes(node)


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The synthgen modules that module `name` imports (`from pkg import mod` names the module `pkg.mod`)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:
            found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {target for target in found if target in known and target != name}


def module_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, set(known)) for name, path in known.items()}


def package_of(module: str) -> str:
    """`synthgen.stages.dedup` -> `synthgen.stages`; a top-level module (`synthgen.recipe`) is its own node."""
    parts = module.split(".")
    return ".".join(parts[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        edges = packages.setdefault(package_of(module), set())
        edges.update(package_of(target) for target in targets if package_of(target) != package_of(module))
    return packages


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles as paths that return to their start: in each strongly connected component, a shortest cycle through
    each of its nodes (so every module caught in a cycle is named), duplicates dropped."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    found: dict[tuple[str, ...], list[str]] = {}
    for component in components:
        for start in sorted(component):
            cycle = _cycle_through(graph, component, start)
            turn = cycle.index(min(cycle[:-1]))
            found.setdefault(tuple(cycle[turn:-1] + cycle[:turn]), cycle)
    return list(found.values())


def _cycle_through(graph: dict[str, set[str]], component: set[str], start: str) -> list[str]:
    """A shortest cycle through `start` (breadth-first search back to it)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def describe(found: list[list[str]]) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in found)


def test_the_walk_sees_function_level_imports_and_skips_type_checking_ones() -> None:
    graph = module_graph()
    assert "synthgen.sim" in graph["synthgen.backends.factory"]  # imported inside sim_backend()
    assert "synthgen.stages.base" not in graph["synthgen.stages.registry"]  # only under TYPE_CHECKING
    assert "synthgen.stages.registry" in graph["synthgen.recipe"]


def test_cycles_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert package_graph({"synthgen.x.a": {"synthgen.y.b"}, "synthgen.y.b": {"synthgen.x.c"}, "synthgen.x.c": set()}) == {
        "synthgen.x": {"synthgen.y"}, "synthgen.y": {"synthgen.x"}}


def test_no_module_import_cycle() -> None:
    found = cycles(module_graph())
    assert not found, "import cycles between modules:\n" + describe(found)


def test_no_package_import_cycle() -> None:
    found = cycles(package_graph(module_graph()))
    assert not found, "import cycles between packages (or top-level modules):\n" + describe(found)


def test_the_recipe_model_imports_no_stage_implementation() -> None:
    graph = module_graph()
    stage_modules = {m for m in graph if m.startswith(("synthgen.stages.", "synthgen.recipes."))}
    allowed = {"synthgen.stages.base", "synthgen.stages.registry", "synthgen.stages.source"}  # kinds, names, input config
    assert graph["synthgen.recipe"] & stage_modules <= allowed
