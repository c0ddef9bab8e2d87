"""Input normalisation of a model, and the re-normalisation from segbench's data to it.

Every data set hands the model images normalised with the ImageNet mean and standard deviation
(``segbench.data.registry``). A model whose weights expect something else (a transformers checkpoint with
``image_mean = 0.5``, pixels in 0..255, a backbone trained on inputs in [-1, 1], ...) sees its inputs
re-normalised exactly: published models through ``Renormalise`` inside their wrapper, models built here
through a forward pre-hook (``feed_normalised``), so their weights keep their names. A model that expects
ImageNet's normalisation is left as it is, so its numbers do not change by a single bit.

A suite states the normalisation of any weights it names with ``normalisation.NAME`` (``NAME`` a model of the
suite or a backbone): ``imagenet``, ``timm`` (the backbone's own timm ``pretrained_cfg``), or
``{mean: [R, G, B], std: [R, G, B], input_range: [LOW, HIGH]}`` (pixels scaled to [LOW, HIGH] before the mean is
subtracted; default [0, 1]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from segbench.data.base import IMAGENET_MEAN, IMAGENET_STD
from segbench.errors import UserError

PRESETS = ("imagenet", "timm")  # the named values of normalisation.NAME


@dataclass(frozen=True)
class Normalisation:
    """What a model expects: ``(pixels * input_scale + input_min - mean) / std`` for pixels in [0, 1] (RGB)."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_scale: float = 1.0  # the width of the input range: 1.0 for [0, 1], 255.0 for 0..255, 2.0 for [-1, 1]
    origin: str = "ImageNet (segbench's data)"  # where these numbers come from, for the record
    input_min: float = 0.0  # the low end of the input range

    @property
    def is_imagenet(self) -> bool:
        """True when the model takes segbench's data as it is (no re-normalisation)."""
        return (tuple(self.mean), tuple(self.std), self.input_scale, self.input_min) == (
            IMAGENET_MEAN, IMAGENET_STD, 1.0, 0.0)

    @property
    def input_range(self) -> tuple[float, float]:
        return (self.input_min, self.input_min + self.input_scale)

    def to_dict(self) -> dict:
        """The record kept with every result."""
        return {"mean": list(self.mean), "std": list(self.std), "input_scale": self.input_scale,
                "input_range": list(self.input_range), "origin": self.origin}

    def describe(self) -> str:
        """One line for the user: the numbers and where they come from."""
        low, high = self.input_range
        numbers = f"mean {_short(self.mean)}, std {_short(self.std)}"
        if (low, high) != (0.0, 1.0):
            numbers += f", pixels in [{low:g}, {high:g}]"
        return f"{numbers} ({self.origin})"


def _short(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


IMAGENET = Normalisation()


def checked(mean: Any, std: Any, input_range: Any, origin: str, where: str) -> Normalisation:
    """A Normalisation from user-given numbers, or a UserError naming ``where``: three finite means (one value is
    taken for all three channels), three finite positive standard deviations, an input range [LOW, HIGH] with
    LOW < HIGH."""
    def channels(values: Any, what: str) -> tuple[float, float, float]:
        values = [values] if isinstance(values, (int, float)) else values
        try:
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            numbers = []
        if len(numbers) == 1:
            numbers *= 3
        if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
            raise UserError(f"{where}: {what} must be 3 finite numbers (R, G, B), got {values!r}")
        return numbers[0], numbers[1], numbers[2]

    mean, std = channels(mean, "mean"), channels(std, "std")
    if min(std) <= 0:
        raise UserError(f"{where}: std must be positive for every channel (it divides the input), got {list(std)}")
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise UserError(f"{where}: input_range must be [LOW, HIGH], got {input_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise UserError(f"{where}: input_range must be two finite numbers LOW < HIGH, got {input_range!r}")
    return Normalisation(mean, std, high - low, origin, low)


def timm_normalisation(backbone: str) -> Normalisation | None:
    """The mean and std of ``backbone``'s default timm ``pretrained_cfg``; None where timm states none."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(backbone)
    if cfg is None or not cfg.mean or not cfg.std:
        return None
    tag = cfg.hf_hub_id or (f"{backbone}.{cfg.tag}" if cfg.tag else backbone)
    return Normalisation(tuple(cfg.mean), tuple(cfg.std), 1.0, f"timm pretrained_cfg of {tag}")


def stated(value: Any, key: str, backbone: str | None) -> Normalisation:
    """The normalisation a suite states with ``normalisation.KEY=value`` (see the module docstring); ``backbone``
    is the timm backbone ``timm`` refers to (None for a published model: ``timm`` is then refused)."""
    where = f"normalisation.{key}"
    if isinstance(value, str):
        if value == "imagenet":
            return Normalisation(origin=f"ImageNet ({where})")
        if value == "timm":
            if backbone is None:
                raise UserError(f"{where}=timm: '{key}' has no timm backbone; state mean, std and input_range")
            found = timm_normalisation(backbone)
            if found is None:
                raise UserError(f"{where}=timm: timm states no mean and std for '{backbone}'")
            return Normalisation(found.mean, found.std, 1.0, f"{found.origin} ({where})")
        raise UserError(f"{where}: expected one of {', '.join(PRESETS)} or {{mean: [R, G, B], std: [R, G, B], "
                        f"input_range: [LOW, HIGH]}}, got '{value}'")
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected one of {', '.join(PRESETS)} or a mapping with mean and std, got {value!r}")
    unknown_keys = sorted(set(value) - {"mean", "std", "input_range"})
    if unknown_keys or "mean" not in value or "std" not in value:
        raise UserError(f"{where}: expected the keys mean, std and optionally input_range, got "
                        f"{', '.join(map(str, value)) or 'none'}")
    return checked(value["mean"], value["std"], value.get("input_range", (0.0, 1.0)), where, where)


def from_image_processor(config: dict, origin: str) -> Normalisation:
    """The normalisation of a transformers image-processor config (``preprocessor_config.json``); a UserError
    naming ``origin`` for values that are not numbers or a zero std."""
    if not isinstance(config, dict):
        raise UserError(f"{origin}: expected a JSON object, got {type(config).__name__}")
    if not config.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    else:
        mean, std = config.get("image_mean", IMAGENET_MEAN), config.get("image_std", IMAGENET_STD)
    factor = config.get("rescale_factor", 1 / 255)
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor > 0:
        raise UserError(f"{origin}: rescale_factor must be a positive number, got {factor!r}")
    scale = 255.0 * float(factor) if config.get("do_rescale", True) else 255.0
    if abs(scale - 1.0) < 1e-9:
        scale = 1.0
    return checked(mean, std, (0.0, scale), origin, origin)


def renormaliser(target: Normalisation) -> nn.Module:
    """A module that turns ImageNet-normalised images into ``target``'s input (the identity for ImageNet)."""
    return nn.Identity() if target.is_imagenet else Renormalise(target)


class Renormalise(nn.Module):
    """ImageNet-normalised images in, images normalised as ``target`` says out (exact, in two steps)."""

    def __init__(self, target: Normalisation) -> None:
        super().__init__()
        self.target = target
        for name, values in (("data_mean", IMAGENET_MEAN), ("data_std", IMAGENET_STD),
                             ("mean", target.mean), ("std", target.std)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images * self.data_std + self.data_mean  # back to [0, 1]
        if self.target.input_min:
            pixels = pixels * self.target.input_scale + self.target.input_min
        elif self.target.input_scale != 1.0:
            pixels = pixels * self.target.input_scale
        return (pixels - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.target.mean}, std={self.target.std}, input_range={self.target.input_range}"


def feed_normalised(model: nn.Module, normalisation: Normalisation) -> nn.Module:
    """Make ``model`` see its inputs normalised as ``normalisation`` says (segbench's data is ImageNet-normalised)
    and remember it (``normalisation_of``; a checkpoint records it); nothing changes for ImageNet's normalisation.
    A hook, so that the model's weights keep their names."""
    model.input_normalisation = normalisation
    if not normalisation.is_imagenet:
        renormalise = Renormalise(normalisation)
        model.register_forward_pre_hook(lambda module, args: (renormalise.to(args[0].device)(args[0]), *args[1:]))
    return model


def normalisation_of(model: nn.Module) -> Normalisation | None:
    """The normalisation ``model`` was built to expect (None for a module segbench did not build)."""
    found = getattr(model, "input_normalisation", None)
    return found if isinstance(found, Normalisation) else None


def from_record(record: Any, origin: str) -> Normalisation | None:
    """A Normalisation from its record (``Normalisation.to_dict``), e.g. in a checkpoint's segbench.json."""
    if not isinstance(record, dict) or "mean" not in record or "std" not in record:
        return None
    input_range = record.get("input_range") or (0.0, float(record.get("input_scale", 1.0)))
    return checked(record["mean"], record["std"], input_range, f"{record.get('origin', '?')}, {origin}", origin)
