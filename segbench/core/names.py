"""Names that become paths: every file or folder named after a model, suite or class goes through ``safe_name``.

The full name stays in results.json and MLflow; the safe form only names files, folders and artifact paths.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from segbench.errors import UserError

MAX_LENGTH = 80  # characters of a safe name, hash suffix included
HASH_LENGTH = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")  # anything else breaks a path, a shell line or an artifact store
_DOTS = re.compile(r"\.{2,}")
# Windows refuses these as file names whatever their extension
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def safe_name(name: str) -> str:
    """``name`` as one path component: ASCII letters, digits, ``.``, ``_`` and ``-`` only, no ``..``, no leading
    dot or dash, not empty, at most ``MAX_LENGTH`` characters. A name that had to be changed gets a short hash of
    the original as a suffix, so two names that differ only in what was dropped never share a path
    (``hf:nvidia/segformer`` -> ``hf_nvidia_segformer-1a2b3c4d``); a name that is already safe is kept as is."""
    safe = _DOTS.sub(".", _UNSAFE.sub("_", name)).lstrip(".-") or "unnamed"
    if safe.split(".")[0].lower() in _RESERVED:
        safe = f"_{safe}"
    if safe == name and len(name) <= MAX_LENGTH:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_LENGTH]
    return f"{safe[:MAX_LENGTH - HASH_LENGTH - 1].rstrip('.')}-{digest}"


def inside(folder: Path, *names: str) -> Path:
    """``folder / safe_name(n1) / safe_name(n2) ...``, proven to lie inside ``folder``."""
    path = folder.joinpath(*(safe_name(n) for n in names))
    if not path.resolve().is_relative_to(folder.resolve()):  # cannot happen for safe names; a last guard
        raise UserError(f"the name {'/'.join(names)!r} would write outside '{folder}'")
    return path
