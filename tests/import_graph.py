"""The import graph of our apps, read with `ast` alone (nothing imported, no Django): every import of one of our
modules, at the top of a file or inside a function, with relative imports resolved and `from a import b` counted
as an import of `a.b` when `b` is a module. Used by tests/test_layers.py; docs/architecture.md §2 shows the numbers it
gives.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Layers, each importing only those before it.
LAYERS = ["mtm", "workers", "models_registry", "projects", "playground"]
RANK = {app: rank for rank, app in enumerate(LAYERS)}
# Composition roots: they wire every app together, so they may import any of them.
WIRING = frozenset({"mtm.api", "mtm.urls", "mtm.settings", "mtm.celery"})
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module of ours, dotted
    file: str  # relative to the repository root
    line: int
    in_function: bool

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def __str__(self) -> str:
        inside = " (inside a function)" if self.in_function else ""
        return f"{self.where} {self.source} -> {self.target}{inside}"


def app_of(module: str) -> str:
    return module.split(".")[0]


def module_name(path: Path, root: Path = ROOT) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def our_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the apps under `root`, migrations left out, by dotted name."""
    return {
        module_name(p, root): p
        for app in LAYERS
        for p in sorted((root / app).rglob("*.py"))
        if "migrations" not in p.relative_to(root).parts
    }


def _known(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of `name` that is one of our modules ('' for none: another project's import)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def _targets(node: ast.stmt, source: str, path: Path, modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = source.split(".")
        package = parts[: len(parts) - node.level + (path.name == "__init__.py")]
        base = ".".join(package + ([base] if base else []))
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]


def edges(modules: dict[str, Path], root: Path = ROOT) -> list[Edge]:
    """Every import of one of `modules` by another, top level and inside functions."""
    found: list[Edge] = []
    for source, path in modules.items():
        file = str(path.relative_to(root))
        stack = [(ast.parse(path.read_text(), filename=str(path)), False)]
        while stack:
            node, in_function = stack.pop()
            for child in ast.iter_child_nodes(node):
                inside = in_function or isinstance(child, FUNCTIONS)
                for name in _targets(child, source, path, modules) if isinstance(child, ast.stmt) else []:
                    target = _known(name, modules)
                    if target and target != source:
                        found.append(Edge(source, target, file, child.lineno, inside))
                stack.append((child, inside))
    return sorted(set(found), key=lambda e: (e.file, e.line, e.target))


def is_back_import(edge: Edge) -> bool:
    """An import from an app into one above it (playground is the top), composition roots aside."""
    source_app, target_app = app_of(edge.source), app_of(edge.target)
    return source_app != target_app and edge.source not in WIRING and RANK[target_app] > RANK[source_app]


def cycles(found: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative), each sorted."""
    graph: dict[str, list[str]] = {}
    for edge in found:
        graph.setdefault(edge.source, []).append(edge.target)
        graph.setdefault(edge.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(graph[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(components)
