"""The package's shape: no import cycle between modules of ``exporter/`` and no module too long to read.

The graph is built statically from the source (every ``import`` and ``from`` at any depth, function-level ones
included), so a cycle hidden behind a deferred import still fails here: a cycle means a piece sits in the
wrong module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "exporter"
MAX_LINES = 600


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    root = package.parent
    return {module_name(p, root): p for p in sorted(package.rglob("*.py"))}


def _base(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` statement names, resolving ``from .`` and ``from ..x`` forms."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = package[:len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def imported(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Modules of ``known`` that ``name`` imports; ``from pkg import module`` counts as importing the module."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(name, path, node)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # ``import a.b.c`` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    found = modules(package)
    return {name: set(imported(name, path, set(found))) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan), each as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_through(graph, set(c)) for c in components]


def _path_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A concrete cycle inside ``component``, starting and ending at its first module (breadth first)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node] & component):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if succ not in previous:
                    previous[succ] = node
                    following.append(succ)
        frontier = following
    return sorted(component)


def test_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_module_too_long() -> None:
    lengths = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in modules().values()}
    too_long = {path: n for path, n in lengths.items() if n > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


# --- the graph builder itself, on a small package written here ---------------------------------------------

def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path / "pkg"


@pytest.mark.parametrize("a_imports", [
    "from pkg.b import thing",
    "from . import b",
    "from .b import thing",
    "import pkg.b",
    "from pkg import b",
    "def later():\n    from pkg.b import thing\n",
])
def test_cycle_found_in_every_import_form(tmp_path: Path, a_imports: str) -> None:
    pkg = _package(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": a_imports + "\n",
                              "pkg/b.py": "from pkg.a import x\n"})
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_parent_relative_import_and_subpackage(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {"pkg/__init__.py": "", "pkg/sub/__init__.py": "from .c import y\n",
                              "pkg/sub/c.py": "from ..d import z\n", "pkg/d.py": "import pkg.sub\n"})
    graph = import_graph(pkg)
    assert graph["pkg.sub"] == {"pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.d"} and graph["pkg.d"] == {"pkg.sub"}
    assert cycles(graph) == [["pkg.d", "pkg.sub", "pkg.sub.c", "pkg.d"]]


def test_no_cycle_without_a_way_back(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from pkg import b\nimport os\n",
                              "pkg/b.py": "import json\n"})
    assert cycles(import_graph(pkg)) == []
