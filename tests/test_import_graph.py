"""The kquant package's import graph, read statically: no cycles between modules, and nothing below the user-facing
layer imports ``kquant.api`` or ``kquant.cli``.

Every ``import`` counts, at module level and inside functions alike: an import deferred into a function hides a cycle
from the interpreter, not from the reader. ``from kquant.a import b`` is an edge to ``kquant.a.b`` when that is a
module, else to ``kquant.a``; the parent packages Python runs on the way are not edges (every module would then reach
``kquant/__init__.py`` and through it everything).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kquant"
TOP_MODULES = frozenset({"kquant.api", "kquant.cli"})
MAY_IMPORT_TOP = frozenset({"kquant", "kquant.api", "kquant.cli"})

def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``package`` (a package's ``__init__`` is the package)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body."""
    modules = module_names(package)
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, name, is_package)
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    targets.add(candidate if candidate in modules else base)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module
    parts = module.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a chain ``[a, b, ..., a]``, or None."""
    state: dict[str, str] = {}  # "open" while on the DFS stack, "done" after
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = "open"
        stack.append(name)
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def upward_imports(graph: dict[str, set[str]], top=TOP_MODULES, allowed=MAY_IMPORT_TOP) -> list[tuple[str, str]]:
    """(importer, top module) for each module outside ``allowed`` that imports one of ``top``."""
    return sorted((name, target) for name, targets in graph.items() if name not in allowed
                  for target in targets & top)


def chain(cycle: list[str]) -> str:
    return " -> ".join(cycle)


def test_kquant_has_no_import_cycles():
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, f"import cycle: {chain(cycle)}; move what both need into a lower module"


def test_only_the_user_facing_modules_import_api_and_cli():
    upward = upward_imports(import_graph(PACKAGE))
    assert not upward, ("modules below kquant.api import it or kquant.cli: "
                        + ", ".join(f"{a} -> {b}" for a, b in upward)
                        + "; pass what they need in as a parameter or move it down")


def _package(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_checker_reports_a_cycle_through_a_function_level_and_a_relative_import(tmp_path):
    package = _package(tmp_path, {
        "__init__.py": "",
        "graph.py": "def check():\n    from pkg.summarize import summary\n",
        "summarize.py": "from .graph import check\n",
        "leaf.py": "import os\n",
    })
    graph = import_graph(package)
    assert graph["pkg.leaf"] == set()
    assert chain(find_cycle(graph)) == "pkg.graph -> pkg.summarize -> pkg.graph"


def test_the_checker_reports_an_import_of_api_from_below(tmp_path):
    package = _package(tmp_path, {
        "__init__.py": "from pkg.api import run\n",
        "api.py": "from pkg.sub.low import helper\n",
        "sub/__init__.py": "",
        "sub/low.py": "def helper():\n    from pkg import api\n",
    })
    graph = import_graph(package)
    top, allowed = {"pkg.api", "pkg.cli"}, {"pkg", "pkg.api", "pkg.cli"}
    assert upward_imports(graph, top, allowed) == [("pkg.sub.low", "pkg.api")]
    assert chain(find_cycle(graph)) == "pkg.api -> pkg.sub.low -> pkg.api"
