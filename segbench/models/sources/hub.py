"""Folders and Hugging Face hub ids: where ``hf:`` and ``smp:`` models are found, offline unless asked."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from segbench.errors import UserError


def looks_like_path(name: str) -> bool:
    """True for names that can only be folders (a hub id is ``owner/name``, nothing more)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def locate(source: str, name: str) -> Path:
    """The local folder of ``name``: the folder itself, or the hub id's snapshot in the Hugging Face cache."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder
    if looks_like_path(name) or not name:
        raise UserError(f"{source}:{name}: folder '{name}' does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        raise UserError(f"{source}:{name}: no such folder, and hub model '{name}' is not in the Hugging Face cache "
                        f"({hub_cache()}); pass download=true to fetch it, or on a machine with internet run "
                        f"`hf download {name}` and copy that cache folder here (or save_pretrained it to a folder "
                        f"and name {source}:FOLDER)") from None


def fetch(source: str, name: str) -> str:
    """Download hub model ``name`` into the Hugging Face cache (a folder is left as it is); say where."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return str(folder)
    if looks_like_path(name):
        raise UserError(f"{source}:{name}: folder '{name}' does not exist")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name)
    except Exception as exc:
        raise UserError(f"{source}:{name}: cannot download it from the Hugging Face hub: {exc}".splitlines()[0]) \
            from None


def read_json(path: Path, model: str) -> dict[str, Any]:
    """A JSON object from ``path``, or a UserError naming the model and the file."""
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{model}: '{path}' is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise UserError(f"{model}: '{path}' holds a JSON {type(values).__name__}, expected an object")
    return values


def labels_of(id2label: Any, model: str) -> tuple[str, ...]:
    """Class names in channel order from an ``id2label`` mapping whose keys are the channels 0..K-1."""
    if not isinstance(id2label, dict):
        raise UserError(f"{model}: id2label must map channel numbers to class names, got {type(id2label).__name__}")
    try:
        channels = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        bad = next(k for k in id2label if not str(k).strip().lstrip("-").isdigit())
        raise UserError(f"{model}: id2label key {bad!r} is not a channel number (expected the integers 0..K-1)") \
            from None
    if sorted(channels) != list(range(len(channels))):
        raise UserError(f"{model}: id2label keys must be the channels 0..{len(channels) - 1}, got "
                        f"{sorted(channels)[:8]}")
    return tuple(channels[i] for i in range(len(channels)))
