"""The package's layering, read from the source with `ast` (no module is imported).

(a) The modules of imagic_steps/ import each other without a cycle, counting every import: at module level,
    under `if TYPE_CHECKING:` (a type-only loop is still two modules that each need the other) and inside functions
    (a lazy import only defers the loop to call time), with relative imports resolved. Layers then read one way,
    e.g. components <- families <- model_loading.
(b) No module of the package, the workflow's scripts, the benchmarks or the tests uses another module's `_private` name
    (`from x import _y`, or `x._y` on an imported module): what another module needs is public in its home.
    Checked for the project's own modules (imagic_steps, benchmarks, relative imports); a library's underscore
    names (`os._exit`) are that library's business.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "imagic_steps"
FIRST_PARTY = (PACKAGE, "benchmarks")


def module_name(path: Path, root: Path = REPO) -> str:
    """imagic_steps/digits/train.py -> imagic_steps.digits.train; a package's __init__.py -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((REPO / PACKAGE).rglob("*.py"))}


def absolute(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """The absolute name `from <level dots><module> import ...` means in `importer`."""
    if not level:
        return module or ""
    parts = importer.split(".") if is_package else importer.split(".")[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([module] if module else []))


def imported_names(path: Path, name: str) -> list[tuple[ast.AST, str, list[str]]]:
    """Every import statement of a file (module level, TYPE_CHECKING blocks, functions), as (node, absolute module,
    imported names); `import a.b` gives ("a.b", [])."""
    found = []
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node, absolute(node.module, node.level, name, is_package),
                          [alias.name for alias in node.names]))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (`from .a import b` counts a, and a.b where that is a module)."""
    modules = package_modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for _, module, names in imported_names(path, name):
            targets = [module] + [f"{module}.{n}" for n in names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) through each strongly connected group of modules that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm (the package has ~50 modules: recursion is fine)
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for group in groups:
        start = min(group)
        paths = {start: [start]}  # breadth-first within the group, back to start
        todo = [start]
        while todo:
            node = todo.pop(0)
            for target in sorted(graph[node] & group):
                if target == start:
                    cycles.append(paths[node] + [start])
                    todo = []
                    break
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    todo.append(target)
    return cycles


def test_the_package_imports_have_no_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (module level, TYPE_CHECKING and function-level imports all count): " + "; ".join(
        " -> ".join(cycle) for cycle in cycles)


def test_the_cycle_finder_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def first_party(module: str) -> bool:
    return module.split(".")[0] in FIRST_PARTY


def first_party_modules() -> set[str]:
    return {module_name(path) for folder in FIRST_PARTY for path in (REPO / folder).rglob("*.py")}


def private_uses(path: Path, known: set[str], root: Path = REPO) -> list[str]:
    """`file:line: what` for each use of another first-party module's private name in one file (`known`: the
    first-party module names)."""
    uses = []
    modules: dict[str, str] = {}  # local name -> the first-party module it is bound to
    for node, module, _ in imported_names(path, module_name(path, root)):
        if not first_party(module):
            continue
        if isinstance(node, ast.Import):  # `import a.b` binds a; `import a.b as c` binds c to a.b
            asname = next(alias.asname for alias in node.names if alias.name == module)
            modules[asname or module.split(".")[0]] = module if asname else module.split(".")[0]
            continue
        for alias in node.names:
            if private(alias.name):
                uses.append(f"{path.relative_to(root)}:{node.lineno}: from {module} import {alias.name}")
            if f"{module}.{alias.name}" in known:  # `from imagic_steps import memory`
                modules[alias.asname or alias.name] = f"{module}.{alias.name}"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and private(node.attr):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in modules:
                uses.append(f"{path.relative_to(root)}:{node.lineno}: {'.'.join([modules[value.id]] + chain)}."
                            f"{node.attr}")
    return uses


def test_no_module_uses_another_modules_private_names():
    files = [path for folder in ("imagic_steps", "workflow/scripts", "benchmarks", "tests")
             for path in sorted((REPO / folder).rglob("*.py"))]
    known = first_party_modules()
    uses = [use for path in files for use in private_uses(path, known)]
    assert not uses, "private names used outside their module (make them public in their home): " + "; ".join(uses)


def test_the_private_name_check_sees_imports_and_attributes(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    source = tmp_path / "benchmarks" / "example.py"
    source.write_text("import os\nimport imagic_steps.runs\nimport imagic_steps.memory as mem\n"
                      "from imagic_steps import provenance\nfrom imagic_steps.upscale import _hidden, shown\n"
                      "os._exit, imagic_steps.runs._identity, mem._frozen_gib, provenance._imports_in, mem.__name__\n")
    known = {"imagic_steps.runs", "imagic_steps.memory", "imagic_steps.provenance", "imagic_steps.upscale"}
    assert private_uses(source, known, tmp_path) == [
        "benchmarks/example.py:5: from imagic_steps.upscale import _hidden",
        "benchmarks/example.py:6: imagic_steps.runs._identity",
        "benchmarks/example.py:6: imagic_steps.memory._frozen_gib",
        "benchmarks/example.py:6: imagic_steps.provenance._imports_in",
    ]
