"""orchestr's modules import each other in one direction: no module imports one that imports it back."""

import ast
from pathlib import Path

from orchestr.graph import depth_first

PACKAGE = Path(__file__).resolve().parent.parent / "orchestr"


def import_graph(package: Path) -> dict[str, set[str]]:
    """Each module under package (by dotted name; a package's __init__ by the package's) and the modules of it
    that it imports anywhere: at the top, in functions, in TYPE_CHECKING blocks."""
    paths = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return {name: _imports(name, path, set(paths)) for name, path in paths.items()}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]  # what `from .` means
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            origin = node.module or ""
            if node.level:
                origin = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
            # `from . import commands` names a module; `from .spec import load` a name in one
            targets = [f"{origin}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # down to the module that holds it; `yaml` comes down to ""
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[str]:
    return [" -> ".join([*cycle, cycle[0]]) for cycle in depth_first(sorted(graph), lambda m: sorted(graph[m]))[1]]


def test_no_module_of_orchestr_imports_one_that_imports_it_back():
    graph = import_graph(PACKAGE)
    assert {"orchestr", "orchestr.cli", "orchestr.spec", "orchestr.planner"} <= set(graph)
    assert "orchestr.commands" in graph["orchestr.cli"]
    assert cycles(graph) == []


def test_the_walk_finds_cycles_through_relative_imports_and_imports_in_functions(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("import os\nfrom .sub import b\n")
    (root / "sub" / "__init__.py").write_text("from .c import thing\n")
    (root / "sub" / "b.py").write_text("def later():\n    from .. import a\n")
    (root / "sub" / "c.py").write_text("import pkg.sub.b\nthing = 1\n")
    graph = import_graph(root)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.sub.b"}, "pkg.sub": {"pkg.sub.c"}, "pkg.sub.b": {"pkg.a"},
                     "pkg.sub.c": {"pkg.sub.b"}}
    assert cycles(graph) == ["pkg.a -> pkg.sub.b -> pkg.a"]
