"""No import circles among the modules of ``rlm``.

The graph is read from the source with :mod:`ast` (nothing is imported):

* every module ``rlm/**/*.py`` is a node (a package is its ``__init__.py``);
* every ``import`` statement is an edge, wherever it is: at the top of the module, inside a
  function or a class, in a ``try`` block, and under ``if TYPE_CHECKING:`` too (a circle of
  types alone still makes two modules one unit; the shared types belong in a leaf module);
* ``import rlm.a.b`` is an edge to ``rlm.a.b``; ``from rlm.a import b`` is an edge to the
  module ``rlm.a.b`` when there is one, else to ``rlm.a`` (a name that ``rlm/a/__init__.py``
  defines or re-exports: a real edge to the package); relative imports are resolved;
* importing ``rlm.a.b`` runs ``rlm/a/__init__.py`` first, but that is not counted as an edge to
  ``rlm.a``: a package whose ``__init__`` imports its submodules, which import each other by
  their full names, has no circle.

A circle is a strongly connected component of more than one module; the test names each one
with a path through it and the lines of the imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def module_names(package_dir: Path) -> dict[str, Path]:
    """``{"rlm.a.b": path}`` for every module under ``package_dir`` (itself a package)."""
    base = package_dir.parent
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        if node.level:
            package = name.split(".") if is_package else name.split(".")[:-1]
            if node.level > 1:
                package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    found = []
    for target in candidates:
        while target and target not in modules:  # `import rlm.a.b.Name`-like spellings: the deepest module
            target = target.rpartition(".")[0]
        if target and target != name:
            found.append(target)
    return found


def import_graph(package_dir: Path) -> dict[str, dict[str, list[int]]]:
    """``{importer: {imported: [line, ...]}}`` over the modules of ``package_dir``."""
    modules = module_names(package_dir)
    graph: dict[str, dict[str, list[int]]] = {name: {} for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, name, path.name == "__init__.py", modules):
                    graph[name].setdefault(target, []).append(node.lineno)
    return graph


def circles(graph: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def describe(component: list[str], graph: dict[str, dict[str, list[int]]]) -> str:
    """One circle through ``component``: ``a (line 3) -> b (line 12) -> a``."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:  # breadth-first, for a short path from start back to start
        node = queue.pop(0)
        for succ in sorted(graph[node]):
            if succ == start:
                path = paths[node] + [start]
                return " -> ".join(f"{a} (line {graph[a][b][0]})" for a, b in zip(path[:-1], path[1:], strict=True)) + f" -> {start}"
            if succ in members and succ not in paths:
                paths[succ] = paths[node] + [succ]
                queue.append(succ)
    return ", ".join(component)


def test_no_import_circles_among_rlm_modules():
    graph = import_graph(ROOT / "rlm")
    assert len(graph) > 100 and graph["rlm.cli.app"], "the graph of rlm's modules was not read"
    found = circles(graph)
    assert not found, "import circles (move the shared names to a leaf module):\n" + "\n".join(
        f"{', '.join(c)}: {describe(c, graph)}" for c in found)


# ------------------------------------------------------------------ the finder itself, on made-up packages
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "pkg"


def test_a_circle_through_a_function_local_or_type_only_import_is_found(tmp_path):
    root = _tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import thing\n",
        "pkg/b.py": "def thing():\n    from pkg import c\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import X\n",
        "pkg/leaf.py": "import json\n",
    })
    graph = import_graph(root)
    assert circles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert describe(["pkg.a", "pkg.b", "pkg.c"], graph) == \
        "pkg.a (line 1) -> pkg.b (line 2) -> pkg.c (line 3) -> pkg.a"


def test_a_package_that_imports_its_submodules_is_no_circle(tmp_path):
    root = _tree(tmp_path, {
        "pkg/__init__.py": "from pkg.sub import run\n",
        "pkg/sub/__init__.py": "from .one import run\nfrom . import two\n",
        "pkg/sub/one.py": "from pkg.sub.two import helper\nimport pkg.sub.two\n",
        "pkg/sub/two.py": "from ..leaf import VALUE\n",
        "pkg/leaf.py": "VALUE = 1\n",
    })
    graph = import_graph(root)
    assert graph["pkg.sub"] == {"pkg.sub.one": [1], "pkg.sub.two": [2]}
    assert graph["pkg.sub.two"] == {"pkg.leaf": [1]}
    assert circles(graph) == []


def test_a_name_taken_from_the_package_is_an_edge_to_the_package(tmp_path):
    root = _tree(tmp_path, {
        "pkg/__init__.py": "from pkg.one import run\n",
        "pkg/one.py": "from pkg import two\nfrom pkg import CONSTANT\n",
        "pkg/two.py": "",
    })
    graph = import_graph(root)
    assert graph["pkg.one"] == {"pkg.two": [1], "pkg": [2]}
    assert circles(graph) == [["pkg", "pkg.one"]]
