"""The package's import graph: no module of ``cagnet`` imports a module that imports it back.

Read from the source with :mod:`ast`, so that an import inside a function counts as well: such
an import still makes its module depend on the imported one, and a circle through it is a
circle that was only hidden from the interpreter (two modules that cannot be read, tested or
moved apart). Importing ``a.b.c`` also runs the packages ``a`` and ``a.b``; a module's own
packages are already running when it is imported and do not count. A package's module-level
``__getattr__`` loads its own submodules when one of their names is first used (``cagnet.train``
loads the engine for ``cagnet.train.train``): a user of another submodule never runs it, so it
does not count either.
"""
from __future__ import annotations

import ast
from pathlib import Path

import cagnet

PACKAGE_DIR = Path(cagnet.__file__).resolve().parent

def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imported_names(tree: ast.Module, module_level: bool, package: bool) -> list[str]:
    """Dotted names imported by a module (``from a import b`` gives ``a.b``); with
    ``module_level``, without the bodies of functions (which run later, if ever); for a
    ``package``, without its lazy ``__getattr__``."""
    found, pending = [], [node for node in tree.body
                          if not (package and isinstance(node, ast.FunctionDef) and node.name == "__getattr__")]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
            found += [f"{node.module}.{alias.name}" for alias in node.names]
        if module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        pending += list(ast.iter_child_nodes(node))
    return found


def import_graph(module_level: bool) -> dict[str, set[str]]:
    """module -> the package modules its import statements run (their packages included)."""
    modules = _module_names()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own_packages = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)}
        targets = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for imported in _imported_names(tree, module_level, package=path.name == "__init__.py"):
            parts = imported.split(".")
            # the longest prefix that is a module, and every package above it
            for k in range(len(parts), 0, -1):
                if ".".join(parts[:k]) in modules:
                    targets.update(".".join(parts[:j]) for j in range(1, k + 1))
                    break
        graph[name] = {t for t in targets if t in modules and t != name and t not in own_packages}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_finds_circles():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    graph = import_graph(module_level=False)
    assert "cagnet.train.steps" in graph["cagnet.train.engine"]                 # a module-level import
    assert "cagnet.pretrain" in graph["cagnet.train.engine"]                    # an import in a function
    assert "cagnet.data" in graph["cagnet.evaluate"]                            # the package of an import
    assert "cagnet.data" not in graph["cagnet.data.datasets"]                   # its own package
    assert "cagnet.train.steps" not in import_graph(module_level=True)["cagnet.evaluate"]


def test_no_circle_at_module_level():
    assert find_circle(import_graph(module_level=True)) is None


def test_no_circle_through_imports_in_functions():
    graph = import_graph(module_level=False)
    assert find_circle(graph) is None
