"""Small helpers several modules share: the cache folder, atomic file writes, flattened config keys, Markdown-safe
text."""

from __future__ import annotations

import html
import os
from pathlib import Path


def cache_dir() -> Path:
    """segbench's cache (data checks, downloaded weights): ``$SEGBENCH_CACHE_DIR`` or ``~/.cache/segbench``."""
    return Path(os.environ.get("SEGBENCH_CACHE_DIR") or Path.home() / ".cache" / "segbench")


def atomic_write(path: Path | str, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` (creating its folder) so that readers never see half a file; an OSError names
    ``path``, whatever part of the write failed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if isinstance(data, str):
                tmp.write_text(data, encoding="utf-8")
            else:
                tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:  # a full disk, a read-only folder, a file where a folder should be: name the target
        raise OSError(exc.errno, f"cannot write it: {exc.strerror or exc}", str(path)) from None
    return path


def flatten(values: dict, prefix: str = "", keep: tuple[str, ...] = ("loss",)) -> dict:
    """Nested dicts as one dict of dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``); ``keep`` keys stay whole."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and value and key not in keep:
            out.update(flatten(value, f"{prefix}{key}.", keep))
        else:
            out[f"{prefix}{key}"] = value
    return out


def markdown_cell(text: object) -> str:
    """Text for one cell of a GitHub Markdown table: HTML escaped (GitHub renders raw HTML), pipes escaped."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")
