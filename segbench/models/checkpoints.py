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
import re
import urllib.request
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from segbench.core.files import cache_dir as default_cache_dir
from segbench.errors import UserError
from segbench.models.normalisation import Normalisation, from_record, normalisation_of, timm_normalisation

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "segbench.json"
MIN_BACKBONE_COVERAGE = 0.9  # share of the backbone's tensors a backbone checkpoint must fill


def sha256_file(path: Path) -> str:
    """The file's sha256, computed once per version of the file (checks before a run and the record after it
    ask for the same large checkpoint several times)."""
    stat = os.stat(path)
    return _sha256(str(Path(path).resolve()), (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))


@lru_cache(maxsize=64)
def _sha256(path: str, version: tuple[int, int, int, int]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(model: nn.Module, folder: Path, config: dict) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/segbench.json`` (``config`` plus the weights' sha256 and the
    input normalisation the model was built to expect, which evaluating the checkpoint later uses)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    normalisation = normalisation_of(model)
    extra = {"normalisation": normalisation.to_dict()} if normalisation is not None else {}
    (folder / CONFIG_FILE).write_text(json.dumps(config | extra | {"sha256": sha256_file(weights)}, indent=2) + "\n")
    return weights


def checkpoint_config(source: Path) -> dict | None:
    """The ``segbench.json`` of a segbench checkpoint: the folder's, or the one beside its weights file."""
    source = Path(source)
    config = source / CONFIG_FILE if source.is_dir() else source.parent / CONFIG_FILE
    if not config.is_file() or (source.is_file() and source.name != WEIGHTS_FILE):
        return None
    try:
        values = json.loads(config.read_text())
    except (OSError, ValueError):
        values = None
    if not isinstance(values, dict):
        raise UserError(f"checkpoint '{source}': {config.name} is not a JSON object")
    return values


def recorded_normalisation(source: Path) -> Normalisation | None:
    """The input normalisation a segbench checkpoint records (None for any other file). A checkpoint written
    before segbench recorded it gets what segbench fed its model then: the backbone's timm ``pretrained_cfg``
    statistics after ``backbone_weights.BACKBONE=timm``, else ImageNet's."""
    config = checkpoint_config(source)
    if config is None:
        return None
    where = f"{CONFIG_FILE} of '{source}'"
    if "normalisation" in config:
        found = from_record(config["normalisation"], where)
        if found is None:
            raise UserError(f"checkpoint '{source}': its {CONFIG_FILE} records no mean and std under normalisation")
        return found
    suite = config.get("config") if isinstance(config.get("config"), dict) else {}
    backbone = config.get("backbone") or ""
    if backbone and (suite.get("backbone_weights") or {}).get(backbone) == "timm":
        found = timm_normalisation(backbone)
        if found is not None:
            return Normalisation(found.mean, found.std, 1.0, f"{found.origin} (the backbone weights of {where})")
    return Normalisation(origin=f"ImageNet ({where})")


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


def recorded_sha256(source: Path) -> str | None:
    """The sha256 a segbench checkpoint folder records for its weights (``segbench.json``), if any."""
    config = checkpoint_config(source) if Path(source).is_dir() else None
    return config.get("sha256") if config else None


def _check_sha256(path: Path, expected: str) -> str:
    actual = sha256_file(path)
    if actual != expected.lower():
        raise UserError(f"checksum mismatch for '{path}': expected sha256 {expected}, got {actual}; refusing to load")
    return actual


def read_state_dict(source: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint, refusing a checksum mismatch (given, or recorded in a segbench checkpoint
    folder) and any pickled code."""
    source = Path(source)
    path = weights_file(source)
    sha256 = sha256 or recorded_sha256(source)
    if sha256 is not None:
        _check_sha256(path, sha256)
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


def describe_weights(source: Path) -> dict:
    """The weights file of a checkpoint and its sha256, as results.json records them."""
    path = weights_file(Path(source))
    return {"file": str(path), "sha256": sha256_file(path)}


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _examples(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" (and {len(keys) - n} more)" if len(keys) > n else "") if keys else "none"


def tensor_shapes(source: Path, sha256: str | None = None) -> dict[str, tuple[int, ...]]:
    """Name -> shape of a checkpoint's tensors, read as safely as ``read_state_dict`` (a safetensors file: from its
    header alone)."""
    source = Path(source)
    path = weights_file(source)
    if path.suffix != ".safetensors":
        return _shapes(read_state_dict(source, sha256))
    sha256 = sha256 or recorded_sha256(source)
    if sha256 is not None:
        _check_sha256(path, sha256)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k.removeprefix("module."): tuple(f.get_slice(k).get_shape()) for k in f.keys()
                    if not k.endswith("num_batches_tracked")}
    except Exception as exc:
        raise UserError(f"'{path}' is not a readable safetensors file: {exc}".splitlines()[0]) from None


def check_fit(model: nn.Module, state: dict[str, torch.Tensor] | dict[str, tuple[int, ...]],
              source: Path | str) -> None:
    """Raise a UserError unless ``state`` (tensors, or their shapes) holds exactly the model's tensors, with their
    shapes."""
    own = _shapes(model.state_dict())
    given = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v) for k, v in state.items()
             if not k.endswith("num_batches_tracked")}
    missing = sorted(own.keys() - given.keys())
    unexpected = sorted(given.keys() - own.keys())
    wrong = [f"{k} {list(given[k])} vs {list(own[k])}" for k in sorted(own.keys() & given.keys()) if own[k] != given[k]]
    if missing or unexpected or wrong:
        raise UserError(f"checkpoint '{source}' does not fit the model: {len(missing)} missing tensors "
                        f"({_examples(missing)}), {len(unexpected)} unexpected ({_examples(unexpected)}), "
                        f"{len(wrong)} of another shape ({_examples(wrong, 2)})")


def load_weights(model: nn.Module, source: Path | str, sha256: str | None = None) -> dict:
    """Load a checkpoint into ``model`` in place (every tensor must match); return its file and sha256."""
    state = read_state_dict(Path(source), sha256)
    check_fit(model, state, source)
    model.load_state_dict(state, strict=False)
    return describe_weights(Path(source))


def backbone_of(model: nn.Module) -> nn.Module:
    """The timm backbone inside a model (smp's timm-universal encoder wraps it as ``encoder.model``)."""
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise UserError("cannot load backbone weights: the model has no 'encoder'")
    return getattr(encoder, "model", encoder)


def rename_keys(state: dict[str, torch.Tensor], key_map: dict[str, str]) -> dict[str, torch.Tensor]:
    """Apply ``key_map``'s regular-expression rules (pattern -> replacement, in order) to every key."""
    rules = [(re.compile(pattern), replacement) for pattern, replacement in key_map.items()]
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in rules:
            key = pattern.sub(replacement, key)
        renamed[key] = value
    return renamed


def match_backbone(backbone: nn.Module, state: dict, source: Path | str, name: str,
                   key_map: dict[str, str] | None = None) -> tuple[dict, dict]:
    """The tensors of ``state`` (tensors, or their shapes; renamed by ``key_map``) that fit ``backbone`` by name and
    shape, and the coverage record; a UserError below ``MIN_BACKBONE_COVERAGE``, quoting unmatched keys of both
    sides."""
    own = _shapes(backbone.state_dict())
    renamed = rename_keys(state, key_map or {})
    matched = {k: v for k, v in renamed.items()
               if k in own and (tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v)) == own[k]}
    coverage = len(matched) / len(own) if own else 0.0
    if coverage < MIN_BACKBONE_COVERAGE:
        theirs = sorted(k for k in renamed if k not in matched and not k.endswith("num_batches_tracked"))
        ours = sorted(own.keys() - matched.keys())
        raise UserError(f"backbone_weights.{name}: '{source}' fits {len(matched)} of the backbone's {len(own)} "
                        f"tensors (at least {MIN_BACKBONE_COVERAGE:.0%} needed); unmatched in the file: "
                        f"{_examples(theirs)}; unmatched in the backbone: {_examples(ours)}; map the names with "
                        f"backbone_key_map.{name}={{PATTERN: REPLACEMENT}} (regular expressions, see the README)")
    return matched, {"loaded": len(matched), "total": len(own), "coverage": coverage}


def load_backbone_weights(model: nn.Module, source: Path | str, name: str,
                          key_map: dict[str, str] | None = None) -> dict:
    """Load a timm backbone checkpoint (a local file) into the model's backbone; return what was loaded:
    file, sha256, tensors loaded of the backbone's total, and the coverage."""
    backbone = backbone_of(model)
    matched, coverage = match_backbone(backbone, read_state_dict(Path(source)), source, name, key_map)
    backbone.load_state_dict(matched, strict=False)
    return describe_weights(Path(source)) | coverage


def download(url: str, sha256: str, cache_dir: Path | None = None) -> Path:
    """Fetch ``url`` into the cache (once), with a progress bar, and check its sha256."""
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
