"""Folders and Hugging Face hub ids: where ``hf:`` and ``smp:`` models are found, offline unless asked."""

from __future__ import annotations

import os
from pathlib import Path

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
