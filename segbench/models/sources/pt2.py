"""A ``torch.export`` archive (``.pt2``) read as data: nothing in it is unpickled or run as Python.

``torch.export.load`` unpickles with ``weights_only=False`` wherever the archive says so (weights and constants
marked ``use_pickle``, opaque and TorchScript objects) and wherever ``weights_only=True`` fails (sample inputs, files
of the older format); it evaluates the program's symbolic expressions with sympy (Python's ``eval``), imports the
modules a tree spec names, loads compiled AOTInductor libraries, and ``module()`` compiles the program's guard code.
``load`` looks at every member of the archive first and refuses, naming the member, any of them torch would unpickle
other than plain tensors (checked with ``torch.load(weights_only=True)``), any symbolic expression that is more than
sympy's own classes, numbers and names, and any member the format does not define; guard code is dropped (it only
asserts input shapes, which segbench checks itself). The program's operators are then checked to be torch
operators before anything runs.
"""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from pathlib import Path
from typing import Any

from segbench.errors import UserError

ALLOWED = re.compile(r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|"
                     r"models/[\w.-]+\.json|data/weights/[\w.-]+|data/constants/[\w.-]+|"
                     r"data/sample_inputs/[\w.-]+\.pt|extra/[\w./-]+)")
TOKEN = re.compile(r"\s*(?:(?P<num>\d+\.?\d*(?:e[+-]?\d+)?)|(?P<str>'[\w.+-]*')|"
                   r"(?P<name>[A-Za-z_]\w*)(?P<kw>\s*=(?!=))?|(?P<op>\*\*|//|[-+*/%(),<>=!&|~^]))")
SYMBOL = re.compile(r"[a-z]{1,3}\d+")  # torch's size symbols: s0, u1, ...
MODULE_NAMES = (b"__enum__", b"default_factory_module")  # tree specs that make torch import a module


def _refuse(path: Path, member: str, why: str) -> UserError:
    return UserError(f"model 'export:{path}': member '{member}' of the archive {why}; segbench runs nothing from a "
                     "model file (save the program with torch.export.save, from plain tensors)")


def _sympy_name(name: str) -> bool:
    """Whether ``name`` is one of sympy's (or torch's sympy) classes or constants: nothing that runs code."""
    import sympy
    from torch.utils._sympy import functions

    if name in ("True", "False", "None") or SYMBOL.fullmatch(name):
        return True
    for space in (sympy, functions):
        value = getattr(space, name, None)
        if (isinstance(value, type) and issubclass(value, sympy.Basic)) or isinstance(value, sympy.Basic):
            return True
    return False


def _safe_expression(text: str) -> bool:
    """Whether a symbolic expression (which torch gives to sympy's ``eval``) holds only sympy's names, numbers,
    short quoted names and operators."""
    at = 0
    while at < len(text.rstrip()):
        match = TOKEN.match(text, at)
        if not match or match.end() == at:
            return False
        name = match.group("name")
        if name and not match.group("kw") and ("__" in name or not _sympy_name(name)):
            return False
        at = match.end()
    return True


def _expressions(node: Any) -> list[str]:
    """Every symbolic expression (``expr_str``) and range-constraint name in a program's JSON."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr_str" and isinstance(value, str):
                found.append(value)
            elif key == "range_constraints" and isinstance(value, dict):
                found.extend(value)
            found.extend(_expressions(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_expressions(value))
    return found


def _check_payloads(path: Path, members: dict[str, bytes], root: str, config: str) -> None:
    """Refuse weights or constants that torch would unpickle (``use_pickle``, objects other than tensors)."""
    entries = json.loads(members[config]).get("config", {})
    for name, entry in entries.items():
        member = f"{root}{config.rsplit('/', 1)[0]}/{entry.get('path_name')}"
        if "constants" in config and not str(entry.get("path_name", "")).startswith("tensor_"):
            raise _refuse(path, member, f"('{name}') is a pickled Python or TorchScript object, not a tensor")
        if entry.get("use_pickle"):
            raise _refuse(path, member, f"('{name}') is marked use_pickle (torch would unpickle it with "
                                        "weights_only=False)")


def _sanitised(path: Path, data: bytes) -> bytes:
    """The archive's bytes, checked member by member (see the module's docstring), without guard code."""
    import torch

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
        root = next(n for n in names if n.endswith("archive_format")).removesuffix("archive_format")
        members = {n.removeprefix(root): archive.read(n) for n in names}
    except (zipfile.BadZipFile, StopIteration, OSError, ValueError) as exc:
        raise UserError(f"model 'export:{path}': '{path}' is not a torch.export program ({exc or 'no archive_format'})"
                        ) from None
    for name in names:
        if not name.startswith(root) or not ALLOWED.fullmatch(name.removeprefix(root)):
            raise _refuse(path, name, "is not part of a torch.export program (compiled code, or another format "
                                      "that torch unpickles)")
    if members.get("archive_format") != b"pt2" or members.get("archive_version") != b"0":
        raise UserError(f"model 'export:{path}': '{path}' is not a torch.export program of the format this torch "
                        "reads (archive_format pt2, version 0)")
    models = [n for n in members if n.startswith("models/")]
    for model in models:
        name = model.removeprefix("models/").removesuffix(".json")
        for kind in ("weights", "constants"):
            if f"data/{kind}/{name}.pt" in members:
                raise _refuse(path, root + f"data/{kind}/{name}.pt", "is of torch's older, pickled format")
            config = f"data/{kind}/{name}_{kind}_config.json"
            if config in members:
                _check_payloads(path, members, root, config)
        sample = f"data/sample_inputs/{name}.pt"
        try:
            if members.get(sample):
                torch.load(io.BytesIO(members[sample]), weights_only=True)
        except Exception:
            raise _refuse(path, root + sample, "holds pickled objects other than tensors (torch would unpickle them "
                                               "with weights_only=False)") from None
        text = members[model]
        if any(marker in text for marker in MODULE_NAMES):
            raise _refuse(path, root + model, "names a Python module to import (an enum or defaultdict input)")
        program = json.loads(text)
        bad = next((e for e in _expressions(program) if not _safe_expression(e)), None)
        if bad is not None:
            raise _refuse(path, root + model, f"holds a symbolic expression that is Python code ({bad[:60]!r})")
        if program.get("guards_code"):
            program["guards_code"] = []
            members[model] = json.dumps(program).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as out:
        for name, value in members.items():
            out.writestr(root + name, value)
    return buffer.getvalue()


def _check_operators(path: Path, program: Any) -> None:
    """Refuse a program that calls anything but torch's operators."""
    import operator

    import torch
    from torch._export.serde.serialize import _SYM_OPS

    for module in program.graph_module.modules():
        for node in getattr(getattr(module, "graph", None), "nodes", []):
            target = node.target
            if node.op == "call_function" and not (
                    isinstance(target, (torch._ops.OpOverload, torch._ops.HigherOrderOperator))
                    or target is operator.getitem or target in _SYM_OPS):
                raise UserError(f"model 'export:{path}': the program calls {getattr(target, '__name__', target)!r}, "
                                "which is not a torch operator; segbench runs only torch operators from a .pt2 file")
            if node.op in ("call_method", "call_module"):
                raise UserError(f"model 'export:{path}': the program holds a {node.op} node ({node.target}), which a "
                                "torch.export program does not")


def load(path: Path) -> tuple[Any, bytes]:
    """The torch.export program in ``path``, read as data (see the module's docstring), and the file's bytes."""
    import torch

    data = path.read_bytes()
    try:
        clean = _sanitised(path, data)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        raise UserError(f"model 'export:{path}': '{path}' is not a torch.export program ({exc})") from None
    quiet = [logging.getLogger(name) for name in ("torch.export", "torch._export")]
    levels = [logger.level for logger in quiet]
    try:
        for logger in quiet:  # torch logs its failures with a traceback before it raises
            logger.setLevel(logging.CRITICAL)
        program = torch.export.load(io.BytesIO(clean))
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        raise UserError(f"model 'export:{path}': '{path}' is not a torch.export program ({first})") from None
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    _check_operators(path, program)
    return program, data
