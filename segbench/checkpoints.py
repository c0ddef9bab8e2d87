"""Checkpoints: safetensors weights with their config; loading that never executes pickled code.

Accepted sources: segbench's own checkpoint folder or ``.safetensors`` file, a segmentation-models-pytorch
``save_pretrained`` folder, and a plain state dict (``.pt``/``.pth``/``.bin``, loaded with
``torch.load(weights_only=True)``). A given sha256 is checked before anything is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import urllib.request
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from segbench.errors import UserError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "segbench.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(model: nn.Module, folder: Path, config: dict) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/segbench.json`` (``config`` plus the weights' sha256)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    (folder / CONFIG_FILE).write_text(json.dumps(config | {"sha256": sha256_file(weights)}, indent=2) + "\n")
    return weights


def weights_file(source: Path) -> Path:
    """The weights file of a checkpoint: the file itself, or the safetensors/bin file inside a folder."""
    if source.is_dir():
        for name in (WEIGHTS_FILE, "pytorch_model.bin", "model.pt", "model.pth"):
            if (source / name).is_file():
                return source / name
        raise UserError(f"checkpoint folder '{source}' holds no {WEIGHTS_FILE}, pytorch_model.bin or model.pt")
    if not source.is_file():
        raise UserError(f"checkpoint '{source}' does not exist")
    return source


def read_state_dict(source: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint, refusing a checksum mismatch and any pickled code."""
    path = weights_file(Path(source))
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256.lower():
            raise UserError(f"checksum mismatch for '{path}': expected sha256 {sha256}, got {actual}; refusing to load")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:
            raise UserError(f"'{path}' is not a readable safetensors file: {exc}".splitlines()[0]) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"refusing to load '{path}': it holds pickled objects other than tensors "
                        f"({str(exc).splitlines()[0][:120]}); convert it to safetensors") from None
    except Exception as exc:
        raise UserError(f"'{path}' is not a readable checkpoint: {exc}".splitlines()[0]) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"'{path}' does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: nn.Module, source: Path | str, sha256: str | None = None) -> None:
    """Load a checkpoint into ``model`` in place; every key must match."""
    state = read_state_dict(Path(source), sha256)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"checkpoint '{source}' does not fit the model: {len(result.missing_keys)} missing keys "
                        f"(e.g. {result.missing_keys[:2]}), {len(result.unexpected_keys)} unexpected "
                        f"(e.g. {result.unexpected_keys[:2]})")


def load_backbone_weights(model: nn.Module, source: Path | str) -> None:
    """Load a timm backbone checkpoint (a local file) into the model's encoder; classifier keys are skipped."""
    encoder = getattr(model, "encoder", None)
    encoder = getattr(encoder, "model", encoder)  # smp's timm-universal encoder wraps the timm model
    if encoder is None:
        raise UserError(f"cannot load backbone weights '{source}': the model has no 'encoder'")
    state = read_state_dict(Path(source))
    own = encoder.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise UserError(f"backbone weights '{source}' share no tensor with the backbone")
    encoder.load_state_dict(matched, strict=False)


def download(url: str, sha256: str, cache_dir: Path | None = None) -> Path:
    """Fetch ``url`` into the cache (once), with a progress bar, and check its sha256."""
    from segbench.datasets.checks import cache_dir as default_cache_dir

    cache_dir = (cache_dir or default_cache_dir()) / "weights"
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{sha256[:16]}-{Path(url).name}"
    if target.is_file() and sha256_file(target) == sha256:
        return target
    partial = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {Path(url).name}") as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise UserError(f"cannot download '{url}': {exc}") from None
    actual = sha256_file(partial)
    if actual != sha256:
        partial.unlink()
        raise UserError(f"checksum mismatch for '{url}': expected sha256 {sha256}, got {actual}")
    os.replace(partial, target)
    return target
