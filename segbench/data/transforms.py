"""Training and evaluation transforms, applied to an image and its mask together (torchvision.transforms.v2).

Training, in MMSegmentation's order: random rescale relative to ``base_size`` by a ratio drawn from
``scale_range`` (keeping the aspect ratio), random crop to ``crop_size`` (padding the image with the
mean colour and the mask with ``ignore_index`` where the image is smaller), horizontal flip,
photometric jitter, normalisation. Masks are tv_tensors.Mask, so every geometric step resizes them
with nearest-neighbour and colour steps leave them alone. Evaluation: normalisation only; the image
keeps the resolution of its label.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from segbench.config.schema import DataConfig
from segbench.data.base import IMAGENET_MEAN, IMAGENET_STD, keep_ratio_size

MEAN_COLOUR = tuple(round(255 * m) for m in IMAGENET_MEAN)  # padding that normalises to about zero


class RandomRescale(v2.Transform):
    """Rescale by a ratio drawn uniformly from ``scale_range``, relative to ``base_size`` (width, height)
    when given (MMSegmentation's RandomResize with keep_ratio), else relative to the input's own size."""

    def __init__(self, base_size: tuple[int, int] | None, scale_range: tuple[float, float]) -> None:
        super().__init__()
        self.base_size, self.scale_range = base_size, scale_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        ratio = float(torch.empty(()).uniform_(*self.scale_range))  # torch's RNG: seeded per loader worker
        if self.base_size is None:
            return {"size": [max(1, int(height * ratio + 0.5)), max(1, int(width * ratio + 0.5))]}
        scale = (self.base_size[0] * ratio, self.base_size[1] * ratio)
        return {"size": list(keep_ratio_size(height, width, scale))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.resize(inpt, params["size"], antialias=True)


class PairTransform:
    """Apply v2 transforms to a uint8 CxHxW image and an int64 HxW mask together; return plain tensors."""

    def __init__(self, steps: list[v2.Transform]) -> None:
        self.pipeline = v2.Compose(steps)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


def build_transforms(cfg: DataConfig, train: bool) -> PairTransform:
    """The transform for one split: the full training pipeline, or normalisation only."""
    steps: list[v2.Transform] = []
    if train:
        if cfg.base_size is not None or tuple(cfg.scale_range) != (1.0, 1.0):
            steps.append(RandomRescale(tuple(cfg.base_size) if cfg.base_size else None, tuple(cfg.scale_range)))
        if cfg.crop_size:
            steps.append(v2.RandomCrop(tuple(cfg.crop_size), pad_if_needed=True,
                                       fill={tv_tensors.Image: MEAN_COLOUR, tv_tensors.Mask: cfg.ignore_index}))
        if cfg.flip:
            steps.append(v2.RandomHorizontalFlip(0.5))
        if cfg.photometric:  # close to MMSegmentation's PhotoMetricDistortion (brightness 32/255, hue 18/180)
            steps.append(v2.ColorJitter(brightness=0.25, contrast=0.5, saturation=0.5, hue=0.1))
    steps += [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
              v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return PairTransform(steps)

