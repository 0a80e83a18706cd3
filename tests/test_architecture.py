"""The package's layers (docs/architecture.md): every import between stasc's packages points one way.

Each module under stasc/ is parsed with `ast` (nothing is imported), every import it makes is
collected (at the top, inside functions and under TYPE_CHECKING alike), and each edge between two
layers must be one the table below allows. A new package or top-level module must be added to it.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stasc"

# The base: small modules any layer may use.
BASE = {"stasc", "errors", "config", "log", "data"}

# layer -> the layers its modules may import (the picture in docs/architecture.md)
ALLOWED: dict[str, set[str]] = {
    "stasc": set(),  # stasc/__init__.py: the version
    "errors": set(),
    "log": set(),
    "config": {"errors"},
    "data": {"errors"},
    "core": {"errors", "config"},  # the algorithm: pure, see test_core_does_no_io
    "modeling": BASE | {"core"},
    "distributed": BASE | {"core", "modeling"},
    "sampling": BASE | {"core", "modeling", "distributed"},
    "training": BASE | {"core", "modeling", "distributed", "sampling"},  # the sampler's shared-prefix threshold
    "run": BASE | {"core", "modeling", "distributed", "sampling", "training"},
    "hub": BASE | {"core", "modeling", "run"},
    "results": BASE | {"core", "run"},
    "app": BASE | {"core", "modeling", "sampling", "run", "hub", "results"},
    "cli": BASE | {"core", "modeling", "distributed", "sampling", "training", "run", "hub", "results", "app"},
}
# Top-level modules that are entry points only (`python -m stasc`, `python -m stasc.space`).
ENTRY_POINTS = {"__main__": "cli", "space": "cli"}
# What core may not import even from the standard library: files, processes, the network.
IO_MODULES = {"os", "io", "pathlib", "shutil", "subprocess", "socket", "tempfile", "urllib", "http", "glob"}
# arrays in, arrays out: the bootstrap intervals of the metrics; strings in, a verdict out: math answers' equality
PURE_PACKAGES = {"numpy", "math_verify"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "stasc"
    return ENTRY_POINTS.get(parts[1], parts[1])


def imported_names(module: str) -> Iterable[str]:
    """Every dotted name the module imports, relative imports resolved."""
    path = MODULES[module]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def stasc_imports(module: str) -> set[str]:
    """The stasc modules this module imports (`from stasc.hub import space` is stasc.hub.space)."""
    found = set()
    for name in imported_names(module):
        if name.split(".")[0] != "stasc":
            continue
        while name not in MODULES:
            name = name.rsplit(".", 1)[0]
        found.add(name)
    return found - {module}


def module_graph() -> dict[str, set[str]]:
    return {module: stasc_imports(module) for module in MODULES}


def layer_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """(importing layer, imported layer) -> the imports that make the edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, targets in graph.items():
        for target in sorted(targets):
            if layer(module) != layer(target):
                edges.setdefault((layer(module), layer(target)), []).append(f"{module} imports {target}")
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_parser_sees_every_kind_of_import() -> None:
    assert {"stasc", "stasc.run.layout", "stasc.sampling.base"} <= stasc_imports("stasc.run.loop")
    assert "stasc.hub.push" in stasc_imports("stasc.cli.train")  # imported inside a function
    assert "stasc.app.handlers" in stasc_imports("stasc.cli.app")  # imported under TYPE_CHECKING
    assert "stasc.hub.space" in stasc_imports("stasc.cli.space")  # `from stasc.hub import space`


def test_every_module_has_a_layer_in_the_table() -> None:
    unknown = sorted({layer(module) for module in MODULES} - set(ALLOWED))
    assert not unknown, f"add these packages or modules to ALLOWED (and docs/architecture.md): {unknown}"
    for allowed in ALLOWED.values():
        assert allowed <= set(ALLOWED)


def test_imports_point_only_where_the_table_allows() -> None:
    forbidden = [
        f"{why} ({importer} may import only {', '.join(sorted(ALLOWED[importer])) or 'nothing of stasc'})"
        for (importer, imported), reasons in sorted(layer_edges(module_graph()).items())
        if imported not in ALLOWED[importer]
        for why in reasons
    ]
    assert not forbidden, "imports against the layers:\n" + "\n".join(forbidden)


def test_no_import_cycles_between_packages_or_modules() -> None:
    assert find_cycle(ALLOWED) is None, "the table itself must point one way"
    layers: dict[str, set[str]] = {}
    for importer, imported in layer_edges(module_graph()):
        layers.setdefault(importer, set()).add(imported)
    assert find_cycle(layers) is None, f"packages import each other: {' -> '.join(find_cycle(layers) or [])}"
    modules = find_cycle(module_graph())
    assert modules is None, f"modules import each other: {' -> '.join(modules or [])}"


@pytest.mark.parametrize("module", sorted(name for name in MODULES if layer(name) == "core"))
def test_core_does_no_io(module: str) -> None:
    """Core imports the standard library (no file, process or network modules), numpy and math-verify only."""
    outside = sorted(
        name for name in imported_names(module)
        if name.split(".")[0] != "stasc"
        and name.split(".")[0] not in PURE_PACKAGES
        and (name.split(".")[0] not in sys.stdlib_module_names or name.split(".")[0] in IO_MODULES)
    )
    assert not outside, f"{module} imports {outside}: core is pure (strings and numbers in, strings and numbers out)"
