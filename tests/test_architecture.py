"""The package's shape: packages by concept whose imports follow the flow and never form a circle (top-level,
function-local and ``TYPE_CHECKING`` imports alike), no module over 400 lines, no package over 12 modules, and each
package's docstring naming what it owns and which segbench packages it imports, as its code does."""

from __future__ import annotations

import ast
import re
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
DEVELOPMENT_PAGE = Path(__file__).parents[1] / "docs" / "development.md"
# A package's docstring ends with two parts (see docs/development.md): ``Owns:`` names each of its modules and
# subpackages as ``name``, each followed by what it holds in parentheses; the last, ``Imports:`` (a line, or wrapped to
# the docstring's end), names the segbench packages its modules import (``segbench.core, segbench.config``;
# ``segbench`` for the top-level module), or says ``nothing of segbench``.
OWNS = "Owns:"
IMPORTS = "Imports:"
IMPORTS_NOTHING = "nothing of segbench"


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
        modules = [p for p in init.parent.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= MAX_MODULES_PER_PACKAGE, f"{init.parent} holds {len(modules)} modules"


def packages() -> dict[str, Path]:
    """Every package of segbench (``segbench``, ``segbench.data``, ``segbench.data.layouts``, ...) and its folder."""
    return {module_name(init): init.parent for init in sorted(PACKAGE.rglob("__init__.py"))}


def docstring_parts(package: str, doc: str | None) -> tuple[set[str], set[str]]:
    """What a package's docstring says it owns (the ``name``s of its ``Owns:`` part outside parentheses) and which
    segbench packages it imports (its last part, ``Imports: ...``)."""
    assert doc, f"{package}: its __init__.py needs a docstring saying what it owns and which packages it imports"
    lines = doc.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(IMPORTS)]
    assert starts, f"{package}: the docstring must end with '{IMPORTS} segbench.X, ...' ('{IMPORTS} {IMPORTS_NOTHING}')"
    assert OWNS in doc, f"{package}: the docstring needs an '{OWNS}' part naming each module as ``name`` (what it is)"
    owns = doc[doc.index(OWNS) + len(OWNS):doc.rindex(IMPORTS)]
    while (shorter := re.sub(r"\([^()]*\)", "", owns)) != owns:  # descriptions, nested parentheses too
        owns = shorter
    named = set(re.findall(r"``([\w.]+)``", owns))
    listed = " ".join(lines[starts[-1]:])[len(IMPORTS):].strip().rstrip(".")  # one line, or wrapped to the end
    imports = set() if listed == IMPORTS_NOTHING else {name.strip() for name in listed.split(",")}
    return named, imports


def owned(folder: Path) -> set[str]:
    """The modules and subpackages directly in a package's folder."""
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    return modules | {p.parent.name for p in folder.glob("*/__init__.py")}


def _imported_package(target: str) -> str:
    """The segbench package an imported module counts for: ``segbench.X`` (``segbench.errors`` too), or ``segbench``
    for the top-level module."""
    return ".".join(target.split(".")[:2])


def package_imports(package: str, graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The segbench packages that the modules of ``package`` (its subpackages' too) import, each with the modules
    that import it. A subpackage's imports of its parent's other modules count as importing the parent's package;
    the top-level package is ``__init__`` and ``__main__`` (``errors`` has a place in the flow of its own)."""
    if package == "segbench":
        mine = {"segbench", "segbench.__main__"}
    else:
        mine = {module for module in graph if module == package or module.startswith(package + ".")}
    found: dict[str, set[str]] = {}
    for module in mine:
        for target in graph[module] - mine:
            found.setdefault(_imported_package(target), set()).add(module)
    return found


def test_package_docstrings_say_what_each_package_owns_and_imports():
    graph = import_graph()
    wrong = []
    for package, folder in packages().items():
        named, declared = docstring_parts(package, ast.get_docstring(ast.parse((folder / "__init__.py").read_text())))
        modules = owned(folder)
        wrong += [f"{package} owns {name} ({package}.{name}), which its docstring's '{OWNS}' part does not name"
                  for name in sorted(modules - named)]
        wrong += [f"{package}'s docstring's '{OWNS}' names ``{name}``, which is no module or subpackage of it"
                  for name in sorted(named - modules)]
        found = package_imports(package, graph)
        wrong += [f"{package} imports {name} (in {', '.join(sorted(found[name]))}), which its docstring's "
                  f"'{IMPORTS}' line does not declare" for name in sorted(found.keys() - declared)]
        wrong += [f"{package}'s docstring declares '{IMPORTS} {name}', which none of its modules imports"
                  for name in sorted(declared - found.keys())]
    assert wrong == [], "\n".join(wrong)


def test_declared_imports_follow_the_flow():
    """The docstrings and FLOW agree: a package declares only packages before it in FLOW (a subpackage also its own
    package; anyone the top-level module, which imports nothing of segbench when imported)."""
    wrong = []
    for package, folder in packages().items():
        if package == "segbench":  # its __main__ is the entry: it imports the cli
            continue
        _, declared = docstring_parts(package, ast.get_docstring(ast.parse((folder / "__init__.py").read_text())))
        source = _package(package)
        for name in sorted(declared - {"segbench", f"segbench.{source}"}):
            target = _package(name)
            if target not in FLOW:
                wrong.append(f"{package}'s docstring declares '{IMPORTS} {name}', which is no package in FLOW")
            elif FLOW.index(target) > FLOW.index(source):
                wrong.append(f"{package}'s docstring declares '{IMPORTS} {name}', which comes after {source} in FLOW: "
                             "FLOW (tests/test_architecture.py) or the import is wrong")
        if f"segbench.{source}" in declared and package.count(".") == 1:
            wrong.append(f"{package}'s docstring declares itself in '{IMPORTS}'")
    assert wrong == [], "\n".join(wrong)


def test_the_docstring_parser_reads_owns_and_imports():
    doc = ("A package.\n\nOwns: ``a`` (the ``x`` of it (nested ``y``)), ``b`` (more).\n"
           "Imports: segbench.core,\nsegbench.config")
    assert docstring_parts("p", doc) == ({"a", "b"}, {"segbench.core", "segbench.config"})
    assert docstring_parts("p", "P.\n\nOwns: ``a`` (it).\nImports: nothing of segbench") == ({"a"}, set())
    graph = {"segbench.data.layouts.voc": {"segbench.data.pairs", "segbench.errors", "segbench.data.layouts"},
             "segbench.data.layouts": set(), "segbench.data.pairs": {"segbench.config.schema"}}
    assert package_imports("segbench.data.layouts", graph) == {"segbench.data": {"segbench.data.layouts.voc"},
                                                                "segbench.errors": {"segbench.data.layouts.voc"}}
    assert package_imports("segbench.data", graph) == {"segbench.errors": {"segbench.data.layouts.voc"},
                                                       "segbench.config": {"segbench.data.pairs"}}


def test_the_development_page_draws_the_flow():
    """docs/development.md's drawing of the packages lists FLOW, in its order."""
    page = DEVELOPMENT_PAGE.read_text()
    drawing = page[page.index("## The packages and the flow between them"):]
    drawing = drawing[drawing.index("```text"):]
    drawing = drawing[:drawing.index("```", 3)]
    drawn = re.findall(r"^([a-z]+)\s{2,}", drawing, flags=re.M)
    assert drawn == list(FLOW), f"docs/development.md draws {drawn}; FLOW is {list(FLOW)}: make them agree"
