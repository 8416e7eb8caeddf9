"""The import structure of lapgen/, read from the AST of every module: no cycles, and layers that read one way.

Every `import` and `from ... import` counts wherever it stands: at module level, inside a function (a lazy
import that closes a loop is still a loop), under `if TYPE_CHECKING:`, and `importlib.import_module("...")`
with a literal name. `from pkg import name` is an edge to `pkg.name` when that is a module of lapgen, else to
`pkg` (its `__init__`). Importing `a.b.c` also runs `a/__init__` and `a/b/__init__`; those implicit edges are
not counted, since a package's `__init__` importing its own submodules is how Python packages work.

Layers, top to bottom (docs/index.md): cli -> demo, studio -> models -> metrics -> data -> core (every module
directly under lapgen/). A module may import its own layer or any layer below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lapgen"

# Cycles that are known and not yet broken, each as the sorted tuple of its modules. Keep this empty: a new
# entry needs a reason beside it and an issue that removes it.
KNOWN_CYCLES: set[tuple[str, ...]] = set()

LAYERS = {"cli": 6, "demo": 5, "studio": 5, "models": 4, "metrics": 3, "data": 2}
ENTRY_POINTS = {"lapgen.__main__"}  # `python -m lapgen`: above everything, imports the CLI


def module_files(root: Path = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every .py file under `root`."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


def _import_targets(node: ast.AST, package: str) -> list[str]:
    """The dotted names one AST node imports (`package` resolves relative imports)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        return [module] + [f"{module}.{alias.name}" for alias in node.names]
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            return [str(node.args[0].value)]
    return []


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the lapgen modules it imports (anywhere in its file)."""
    modules = module_files(root)
    top = root.name
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = _import_targets(node, package)
            if isinstance(node, ast.ImportFrom):  # `from pkg import x`: pkg.x if it is a module, else pkg
                module, names = targets[0], targets[1:]
                submodules = [t for t in names if t in modules]
                targets = submodules + ([module] if len(submodules) < len(names) else [])
            for target in targets:
                if target != top and not target.startswith(top + "."):
                    continue
                while target and target not in modules:  # `import a.b.func`-like spellings: the module part
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:  # iterative, so a deep graph cannot hit the recursion limit
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
                    found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 1) if len(parts) > 1 else 1


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    return "; ".join(f"{a} -> {b}" for a in component for b in sorted(graph[a] & members))


def test_no_import_cycle_between_lapgen_modules():
    graph = import_graph()
    assert len(graph) > 100  # the whole package was read
    found = [c for c in cycles(graph) if tuple(c) not in KNOWN_CYCLES]
    assert not found, "import cycles: " + " | ".join(describe(c, graph) for c in found)


def test_known_cycle_list_holds_only_live_cycles():
    live = {tuple(c) for c in cycles(import_graph())}
    assert not KNOWN_CYCLES - live, f"cycles already broken, remove them from KNOWN_CYCLES: {KNOWN_CYCLES - live}"


def test_layers_read_one_way():
    graph = import_graph()
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() if a not in ENTRY_POINTS
                    for b in targets if layer(b) > layer(a))
    assert not upward, "imports against the layering (cli -> demo/studio -> models -> metrics -> data -> core): " \
        + ", ".join(upward)


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


@pytest.mark.parametrize("files, expected", [
    # a lazy import inside a function closes the loop as much as a module-level one
    ({"__init__.py": "", "a.py": "import pkg.b\n", "b.py": "def f():\n    from pkg import a\n"},
     [["pkg.a", "pkg.b"]]),
    # relative imports, a three-module loop through a package's __init__
    ({"__init__.py": "", "x/__init__.py": "from .y import thing\n", "x/y.py": "from ..z import other\n",
      "z.py": "from pkg.x import thing\n"}, [["pkg.x", "pkg.x.y", "pkg.z"]]),
    # importlib with a literal name, and TYPE_CHECKING-only imports
    ({"__init__.py": "", "a.py": "import importlib\nimportlib.import_module('pkg.b')\n",
      "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\n"},
     [["pkg.a", "pkg.b"]]),
    # a package __init__ importing its submodules, which import each other one way: no cycle
    ({"__init__.py": "from pkg.a import f\nfrom pkg.b import g\n", "a.py": "from pkg.b import g\n",
      "b.py": "import os\n"}, []),
])
def test_cycle_finder_on_small_packages(tmp_path, files, expected):
    graph = import_graph(_write_package(tmp_path, files))
    assert cycles(graph) == expected
