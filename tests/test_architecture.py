"""The package's shape: packages by concept whose imports follow the flow and never form a circle (top-level,
function-local and ``TYPE_CHECKING`` imports alike), no module over 400 lines, no package over 12 modules."""

from __future__ import annotations

import ast
from pathlib import Path

import segbench

PACKAGE = Path(segbench.__file__).parent
MAX_LINES = 400
MAX_MODULES_PER_PACKAGE = 12
# The flow, upstream first: a package may import only packages before it (and itself). ``cli`` is the entry,
# ``pipeline`` the orchestration of one command; ``core`` and ``errors`` are below everything.
FLOW = ("errors", "core", "config", "data", "metrics", "results", "models", "train", "deploy", "evaluation", "report",
        "gate", "pipeline", "zoo", "api", "cli")
TOP_LEVEL_MODULES = {"__init__", "__main__", "errors"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str], name: str | None = None) -> set[str]:
    """segbench modules that ``path`` imports anywhere in its code (a ``from package import name`` counts as
    importing the submodule ``package.name`` when there is one)."""
    name = name or module_name(path)
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {module for module in found if module in modules} - {name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_function_local_and_relative_imports_are_seen(tmp_path):
    modules = {"segbench.config.schema", "segbench.data.registry", "segbench.data.layouts.folder"}
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from segbench.data import registry\n    import segbench.config.schema\n"
                      "from .layouts import folder\n"
                      "if TYPE_CHECKING:\n    from segbench.config import schema\n")
    found = imports_of(source, modules | {"segbench.data.layouts"}, "segbench.data.x")
    assert found == {"segbench.data.registry", "segbench.config.schema", "segbench.data.layouts",
                     "segbench.data.layouts.folder"}


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_module_over_400_lines():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "segbench"


def test_imports_follow_the_flow():
    against = []
    for module, targets in import_graph().items():
        source = _package(module)
        if source in ("segbench", "__main__"):
            continue
        for target in targets:
            if (package := _package(target)) != "segbench" and FLOW.index(package) > FLOW.index(source):
                against.append(f"{module} -> {target}")
    assert against == []


def test_the_package_holds_packages_by_concept():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL_MODULES
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages <= set(FLOW)
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init} needs a docstring saying what it owns and may import"
        modules = [p for p in init.parent.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= MAX_MODULES_PER_PACKAGE, f"{init.parent} holds {len(modules)} modules"
