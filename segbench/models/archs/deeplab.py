"""DeepLab v1 (Chen et al., 2015) and DeepLab v2 (Chen et al., 2017) on atrous timm backbones.

Both dilate the backbone through timm's ``output_stride`` argument (8 by default, as in the papers;
16 and 32 also accepted) and bilinearly upsample the class scores to the input size.

- v1 is DeepLab-LargeFOV: a 3x3 convolution at rate 12, a 1x1 convolution and a 1x1 classifier.
  The paper's fully connected CRF is post-processing, ``segbench.evaluation.crf.dense_crf``, switched on in
  evaluation with ``eval.crf.enabled=true``.
- v2 is ASPP as in the paper's ResNet-101 model: four parallel 3x3 convolutions at rates 6, 12, 18
  and 24, each predicting class scores, summed.

A backbone that cannot dilate raises a UserError naming it and the output stride.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segbench.models.archs.fcn import Backbone


class LargeFOVHead(nn.Module):
    """DeepLab-LargeFOV's fc6 (3x3, rate 12), fc7 (1x1) and fc8 classifier, with ReLU and dropout."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, rate: int = 12,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.fc6 = nn.Conv2d(in_channels, channels, 3, padding=rate, dilation=rate)
        self.fc7 = nn.Conv2d(channels, channels, 1)
        self.fc8 = nn.Conv2d(channels, num_classes, 1)
        self.drop = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(F.relu(self.fc6(x)))
        x = self.drop(F.relu(self.fc7(x)))
        return self.fc8(x)


class ASPPSum(nn.Module):
    """DeepLab v2's atrous spatial pyramid pooling: parallel 3x3 atrous classifiers whose scores are summed."""

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...] = (6, 12, 18, 24)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate) for rate in rates
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([branch(x) for branch in self.branches]).sum(dim=0)


class DeepLab(nn.Module):
    """An atrous backbone, a classifier head on its deepest features, bilinear upsampling to the input size."""

    def __init__(self, encoder: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (features,) = self.encoder(x)
        return F.interpolate(self.head(features), size=x.shape[-2:], mode="bilinear", align_corners=False)


def deeplabv1(backbone: str, num_classes: int, output_stride: int = 8) -> DeepLab:
    features = Backbone(backbone, (output_stride,), output_stride)
    return DeepLab(features, LargeFOVHead(features.channels[0], num_classes))


def deeplabv2(backbone: str, num_classes: int, output_stride: int = 8) -> DeepLab:
    features = Backbone(backbone, (output_stride,), output_stride)
    return DeepLab(features, ASPPSum(features.channels[0], num_classes))
