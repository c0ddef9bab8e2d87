"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer and Darrell, 2015) on timm backbones.

Class scores from the stride-32 features are upsampled by learned transposed convolutions
(initialised to bilinear interpolation) and fused with 1x1 score layers on the stride-16 (FCN-16s)
and stride-8 (FCN-8s) features. The skip score layers start at zero, so every variant starts out as
FCN-32s, as in the paper's staged training.

Input sizes need not be multiples of 32. The original FCN pads the input by 100 pixels and crops
with per-layer offsets. Here every upsampling follows ``F.interpolate(..., align_corners=False)``:
a stride-s feature pixel ``i`` covers input pixels ``[s*i, s*(i+1))``. Because timm's feature maps are
``ceil(H/s)`` (or, for patchify stems, ``floor(H/s)``) high, an upsampled map can be slightly larger
or smaller than its target. It is cropped at the bottom and right, or the features are first
extended there by repeating the last row and column. The logits are then exactly the input size.

``Backbone`` and ``BilinearUpsample`` are shared with ParseNet and DeepLab, which build on FCN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from segbench.errors import UserError

DILATABLE = "resnet*, efficientnet*, mobilenetv3*, convnext*, regnet*"


class Backbone(nn.Module):
    """A timm ``features_only`` backbone (random weights) returning NCHW features at chosen strides.

    Models keep it as ``encoder``, with the timm model as ``encoder.model``, like smp's timm encoders,
    so local backbone weights load the same way into both.

    ``reductions`` names the strides wanted, and the deepest feature map at each is returned in that
    order. With ``output_stride`` 8 or 16 the backbone is dilated (atrous) through timm's
    ``output_stride`` argument. A backbone that cannot dilate, or lacks a requested stride, raises a
    UserError.
    """

    def __init__(self, name: str, reductions: tuple[int, ...], output_stride: int = 32) -> None:
        super().__init__()
        import timm

        if output_stride not in (8, 16, 32):
            raise UserError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        kwargs = {} if output_stride == 32 else {"output_stride": output_stride}
        try:
            self.model = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
        except (TypeError, AssertionError, ValueError, NotImplementedError):
            if output_stride == 32:
                raise
            raise UserError(self._cannot_dilate(name, output_stride)) from None
        available = self.model.feature_info.reduction()
        if output_stride != 32 and max(available) != output_stride:
            raise UserError(self._cannot_dilate(name, output_stride))
        missing = [r for r in reductions if r not in available]
        if missing:
            raise UserError(f"backbone '{name}' has no stride-{missing[0]} features "
                            f"(its feature strides are {available})")
        self.indices = [max(i for i, r in enumerate(available) if r == want) for want in reductions]
        self.channels = [self.model.feature_info.channels()[i] for i in self.indices]
        self.nhwc = str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC")

    @staticmethod
    def _cannot_dilate(name: str, output_stride: int) -> str:
        return (f"backbone '{name}' cannot run at output stride {output_stride}: timm cannot dilate it; "
                f"use output_stride=32 or a backbone that can ({DILATABLE})")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.model(x)
        picked = [features[i] for i in self.indices]
        return [f.permute(0, 3, 1, 2) for f in picked] if self.nhwc else picked


def bilinear_kernel(factor: int) -> torch.Tensor:
    """The ``2*factor`` x ``2*factor`` kernel with which a transposed convolution interpolates bilinearly."""
    size = 2 * factor
    centre = factor - 0.5
    taps = 1 - torch.abs(torch.arange(size, dtype=torch.float32) - centre) / factor
    return taps[:, None] * taps[None, :]


class BilinearUpsample(nn.Module):
    """Learned upsampling by ``factor``: a per-channel transposed convolution initialised to bilinear.

    At initialisation the output equals ``F.interpolate(x, scale_factor=factor, mode="bilinear",
    align_corners=False)``. ``forward`` takes the size wanted and crops or pads so that it is exact.
    """

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        # Padding of 1.5 * factor on a map padded by one replicated pixel per side puts output pixel o
        # at input coordinate (o + 0.5) / factor - 0.5, F.interpolate's align_corners=False convention.
        self.up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=3 * factor // 2,
                                     groups=channels, bias=False)
        with torch.no_grad():
            self.up.weight.copy_(bilinear_kernel(factor).expand_as(self.up.weight))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        height, width = x.shape[-2:]
        extra_h = max(0, math.ceil(size[0] / self.factor) - height)
        extra_w = max(0, math.ceil(size[1] / self.factor) - width)
        x = F.pad(x, (1, 1 + extra_w, 1, 1 + extra_h), mode="replicate")
        return self.up(x)[..., : size[0], : size[1]]


class ConvHead(nn.Module):
    """3x3 conv, batch norm, ReLU and dropout: the role of FCN's fc6/fc7 on a modern backbone."""

    def __init__(self, in_channels: int, channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.drop = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(F.relu(self.bn(self.conv(x))))


class FCN(nn.Module):
    """FCN with skip fusion at strides 16 and 8 (``skips=2``: FCN-8s), 16 (``skips=1``) or none (FCN-32s)."""

    def __init__(self, backbone: str, num_classes: int, skips: int = 2, channels: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if skips not in (0, 1, 2):
            raise ValueError(f"skips must be 0, 1 or 2, got {skips}")
        reductions = (32, 16, 8)[: skips + 1]
        self.encoder = Backbone(backbone, reductions)
        self.head = ConvHead(self.encoder.channels[0], channels, dropout)
        self.score = nn.Conv2d(channels, num_classes, 1)
        self.skip_scores = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in self.encoder.channels[1:])
        for layer in self.skip_scores:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.skip_ups = nn.ModuleList(BilinearUpsample(num_classes, 2) for _ in range(skips))
        self.final_up = BilinearUpsample(num_classes, reductions[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deepest, *skips = self.encoder(x)
        scores = self.score(self.head(deepest))
        for feature, score_layer, up in zip(skips, self.skip_scores, self.skip_ups):
            scores = up(scores, feature.shape[-2:]) + score_layer(feature)
        return self.final_up(scores, x.shape[-2:])


def fcn32s(backbone: str, num_classes: int) -> FCN:
    return FCN(backbone, num_classes, skips=0)


def fcn16s(backbone: str, num_classes: int) -> FCN:
    return FCN(backbone, num_classes, skips=1)


def fcn8s(backbone: str, num_classes: int) -> FCN:
    return FCN(backbone, num_classes, skips=2)
