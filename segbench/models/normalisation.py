"""Input normalisation of a model, and the re-normalisation from segbench's data to it.

Every data set hands the model images normalised with the ImageNet mean and standard deviation
(``segbench.data.registry``). A model whose source expects something else (a transformers checkpoint with
``image_mean = 0.5``, pixels in 0..255, ...) is wrapped in ``Renormalise``, which undoes the ImageNet
normalisation and applies the model's own. A model that expects ImageNet's normalisation is left as
it is, so its numbers do not change by a single bit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from segbench.data.base import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class Normalisation:
    """What a model expects: ``(pixels * input_scale - mean) / std`` for pixels in [0, 1] (RGB)."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_scale: float = 1.0  # 1.0 for pixels in [0, 1] (rescale 1/255); 255.0 for pixels in 0..255
    origin: str = "ImageNet (segbench's data)"  # where these numbers come from, for the record

    @property
    def is_imagenet(self) -> bool:
        """True when the model takes segbench's data as it is (no re-normalisation)."""
        return (tuple(self.mean), tuple(self.std), self.input_scale) == (IMAGENET_MEAN, IMAGENET_STD, 1.0)

    def to_dict(self) -> dict:
        """The record kept with every result."""
        return asdict(self) | {"mean": list(self.mean), "std": list(self.std)}


IMAGENET = Normalisation()


def from_image_processor(config: dict, origin: str) -> Normalisation:
    """The normalisation of a transformers image-processor config (``preprocessor_config.json``)."""
    mean = tuple(float(v) for v in config.get("image_mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in config.get("image_std", IMAGENET_STD))
    if not config.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    scale = 255.0 * float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 255.0
    if abs(scale - 1.0) < 1e-9:
        scale = 1.0
    return Normalisation(mean, std, scale, origin)


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
        return (pixels * self.target.input_scale - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.target.mean}, std={self.target.std}, input_scale={self.target.input_scale}"
