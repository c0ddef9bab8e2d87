"""The user's own components: modules named by a suite's ``imports:`` and installed packages that declare the
entry-point group ``segbench.plugins`` are imported before any name is resolved, and every registration records
where it came from (package and version, or module file and its sha256).

Importing is what registers: a plugin module calls ``@segbench.register_model`` (and the other decorators) at import
time, as timm's ``@register_model`` and MMSegmentation's ``custom_imports`` work.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from segbench.errors import UserError

ENTRY_POINT_GROUP = "segbench.plugins"
USER_MODULES: set[str] = set()  # the modules imported from imports: and entry points (their code is the user's)


@dataclass(frozen=True)
class Origin:
    """Where a registered component comes from, recorded in results.json and MLflow."""

    module: str
    file: str | None = None
    sha256: str | None = None
    package: str | None = None  # the installed distribution that holds the module, if any
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record kept in results.json: where the code comes from, and that it ran (a user's code always does)."""
        return {k: v for k, v in asdict(self).items() if v is not None} | {"executes_code": True}

    def label(self) -> str:
        """A short mark for listings: ``package version`` or the module's name."""
        return f"{self.package} {self.version}" if self.package else self.module


def _sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


@cache
def _distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def origin_of(obj: Any) -> Origin:
    """The origin of a function or class: its module, the module's file and sha256, and the installed
    distribution (with its version) that holds it."""
    name = getattr(obj, "__module__", None) or "__main__"
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    package = version = None
    dists = _distributions().get(name.partition(".")[0]) or []
    if dists and name.partition(".")[0] != "segbench":
        package = dists[0]
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            package = None
    return Origin(name, file, _sha256(file) if file else None, package, version)


def user_module_of(exc: BaseException) -> str | None:
    """The user's module (``imports:``, a plugin) whose code is innermost in ``exc``'s traceback, or None."""
    found, frame = None, exc.__traceback__
    while frame is not None:
        name = frame.tb_frame.f_globals.get("__name__", "")
        if any(name == m or name.startswith(m + ".") for m in USER_MODULES):
            found = name
        frame = frame.tb_next
    return found


def users_failure(exc: BaseException) -> str | None:
    """The one line for ``exc`` when a user's module raised it (its code is in the traceback), or None when segbench's
    own code did: the user's mistake, not segbench's bug (exit 2)."""
    user = user_module_of(exc)
    if user is None:
        return None
    return f"a user's module ({user}) raised {_first_line(exc)[:300]}; the command stopped unfinished"


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"


def import_module(name: str, search: Sequence[Path] = ()) -> None:
    """Import a user's module by dotted name (from the working folder, ``search`` and ``sys.path``) or by the path
    of a ``.py`` file; a module that cannot be imported, or that raises, is a UserError naming it."""
    try:
        if name.endswith(".py"):
            path = Path(name).expanduser()
            candidates = [path] + [folder / path for folder in search if not path.is_absolute()]
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise UserError(f"imports: module file '{name}' does not exist")
            _check_shadowing(name, found)
            spec = importlib.util.spec_from_file_location(found.stem, found)
            if spec is None or spec.loader is None:
                raise UserError(f"imports: '{name}' is not a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[found.stem] = module
            USER_MODULES.add(found.stem)
            spec.loader.exec_module(module)
            return
        for folder in [Path.cwd(), *search]:
            if str(folder) not in sys.path:
                sys.path.append(str(folder))
        if name not in sys.modules:  # not one segbench or Python already holds
            USER_MODULES.add(name)
        importlib.import_module(name)
    except UserError as exc:
        if str(exc).startswith("imports:"):
            raise
        raise UserError(f"imports: module '{name}': {exc}") from None
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise UserError(f"imports: cannot import module '{name}': no module named '{exc.name}' (expected a module "
                            "on PYTHONPATH or in the working folder, or a path to a .py file)") from None
        raise UserError(f"imports: module '{name}' failed to import: {_first_line(exc)}") from None
    except SystemExit as exc:
        raise UserError(f"imports: module '{name}' called sys.exit({exc.code}) while being imported (a module must not "
                        "end the process)") from None
    except Exception as exc:
        raise UserError(f"imports: module '{name}' failed to import: {_first_line(exc)}") from None


def _check_shadowing(name: str, path: Path) -> None:
    """Refuse a module file whose name is one of Python's own modules, of a module already imported from elsewhere
    or of an installed one: importing it would replace that module for the whole process (and for segbench)."""
    stem = path.stem
    loaded = sys.modules.get(stem)
    loaded_file = getattr(loaded, "__file__", None)
    if loaded_file is not None and Path(loaded_file).resolve() == path.resolve():
        return  # the same file again
    if stem in sys.stdlib_module_names:
        raise UserError(f"imports: '{name}' would replace Python's own module '{stem}' for the whole process; rename "
                        "the file")
    if loaded is not None:
        raise UserError(f"imports: '{name}' would replace the module '{stem}' already imported from "
                        f"{loaded_file or 'elsewhere'}; rename the file")
    elsewhere = [p for p in sys.path if Path(p or ".").resolve() != path.parent.resolve()]  # not the file's folder
    try:
        installed = importlib.machinery.PathFinder.find_spec(stem, elsewhere)
    except (ImportError, ValueError):
        installed = None
    origin = getattr(installed, "origin", None)
    if origin and Path(origin).resolve() != path.resolve():
        raise UserError(f"imports: '{name}' would replace the installed module '{stem}' ({origin}) for the whole "
                        "process; rename the file")


def import_modules(names: Sequence[str], search: Sequence[Path] = ()) -> None:
    """Import the modules of a suite's ``imports:`` (after the installed plugins), in order."""
    load_entry_points()
    for name in names:
        import_module(str(name), search)


@cache
def load_entry_points() -> tuple[str, ...]:
    """Import every installed package's ``segbench.plugins`` entry point (once per process); return their names."""
    loaded = []
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        package = entry.dist.name if entry.dist is not None else "an installed package"
        USER_MODULES.add(entry.module)
        try:
            entry.load()
        except UserError as exc:
            raise UserError(f"plugin '{entry.name}' of {package} ({entry.value}): {exc}") from None
        except SystemExit as exc:
            raise UserError(f"plugin '{entry.name}' of {package} ({entry.value}) called sys.exit({exc.code}) while "
                            "being imported") from None
        except Exception as exc:
            raise UserError(f"plugin '{entry.name}' of {package} ({entry.value}) failed to load: "
                            f"{_first_line(exc)}") from None
        loaded.append(entry.name)
    return tuple(loaded)
