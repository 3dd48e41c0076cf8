"""The package's modules import each other without a cycle, counting imports inside functions.

An import inside a function hides a cycle from Python (it runs late) but not from a reader:
two modules that need each other are one module split in two. So every import of a package
module counts here, wherever it is written. Left out: the lazy re-exports of a package's
``__init__`` (its PEP 562 ``__getattr__``), which name the package's public surface, and
``if TYPE_CHECKING:`` blocks, which only annotations read and Python never runs (a module
may name in a signature the type of a module above it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import dmu_migrate

PACKAGE = "dmu_migrate"
ROOT = Path(dmu_migrate.__file__).parent


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(tree: ast.Module, is_init: bool) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement but an ``__init__``'s lazy re-exports and annotation-only ones."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if is_init and isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    is_init = path.name == "__init__.py"
    package = name if is_init else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _walk(ast.parse(path.read_text(), str(path)), is_init):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(alias.name)
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        targets.add(source)
        for alias in node.names:
            # `from pkg import name` imports the submodule pkg.name when there is one.
            targets.add(f"{source}.{alias.name}")
    found = set()
    for target in targets:
        # `import a.b.c` runs a, a.b and a.b.c; the edge that matters is to the deepest module.
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name and target.startswith(PACKAGE):
            found.add(target)
    # Importing a submodule runs its package's __init__ first; a package's own modules are
    # not made to depend on it for that, as Python imports the package before any of them.
    return {t for t in found if not name.startswith(t + ".")}


def import_graph() -> dict[str, set[str]]:
    names = module_names()
    modules = set(names)
    return {name: imports_of(name, path, modules) for name, path in names.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that starts and ends at the same module, or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for start in sorted(graph):
        if colour[start] != white:
            continue
        path = [start]
        iters = [iter(sorted(graph[start]))]
        colour[start] = grey
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                iters.pop()
            elif colour.get(nxt, black) == grey:
                return path[path.index(nxt) :] + [nxt]
            elif colour.get(nxt) == white:
                colour[nxt] = grey
                path.append(nxt)
                iters.append(iter(sorted(graph[nxt])))
    return None


def test_the_checker_sees_imports_inside_functions_and_relative_ones() -> None:
    graph = import_graph()
    # cli/__init__ imports its command modules with `from dmu_migrate.cli import admin, ...`.
    assert "dmu_migrate.cli.admin" in graph["dmu_migrate.cli"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_the_package_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
