"""The import graph of the project's own modules is a DAG, and the packages are layered
(issue 24): read with ``ast`` from the files, every import counted, those inside functions too
(an import in a function hides a circle, it does not remove it); only imports under
``if TYPE_CHECKING:`` are left out.

Layers, lowest first: a package may import its own modules and those of lower packages only.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("search_spaces", "trainables", "study", "analysis", "builtin_studies", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project's modules that ``name`` imports (a package import counts as its __init__)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from package import submodule` needs the submodule (and runs the package's
            # __init__, which imports nothing of its own: see the test below); any other name
            # imported from a module is an edge to that module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_back():
    found = cycles(graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_package_imports_a_higher_one():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets
                    if rank[b.split(".")[0]] > rank[a.split(".")[0]])
    assert not upward, "imports from a lower package to a higher one: " + ", ".join(upward)


def test_the_graph_sees_imports_inside_functions():
    edges = graph()
    assert "study.stages" in edges["study.protocol"]          # protocol.train_seeds imports it in a function


def test_package_inits_import_nothing_of_their_own_package():
    """A package's __init__ that imported its modules would close a circle with every module that
    imports a sibling as ``from package import sibling``."""
    edges = graph()
    own = {name: sorted(t for t in targets if t.startswith(name + "."))
           for name, targets in edges.items() if (ROOT / name.replace(".", "/") / "__init__.py").is_file()}
    assert not any(own.values()), own
