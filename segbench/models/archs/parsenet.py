"""ParseNet (Liu, Rabinovich and Berg, 2015): FCN features with global context, on timm backbones.

The deepest features go through a conv head (FCN's fc6/fc7). Their global average pool is
L2-normalised with a learned per-channel scale, unpooled (broadcast) back to the feature map's size,
and concatenated with the local features, also L2-normalised with their own learned scale. A 1x1
classifier then predicts class scores, which are bilinearly upsampled to the input size. The
normalisation keeps the two feature sets on the same scale so that neither dominates the classifier.
The default output stride 8 matches the paper's DeepLab-LargeFOV baseline; 32 is its FCN-32s one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segbench.models.archs.fcn import Backbone, ConvHead


class L2Norm(nn.Module):
    """Scale each pixel's feature vector to unit L2 norm across channels, then by a learned per-channel scale."""

    def __init__(self, channels: int, scale: float = 10.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), scale))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1, eps=self.eps) * self.scale.view(1, -1, 1, 1)


class ParseNet(nn.Module):
    """ParseNet: local features concatenated with unpooled global context, both L2-normalised."""

    def __init__(self, backbone: str, num_classes: int, output_stride: int = 8, channels: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = Backbone(backbone, (output_stride,), output_stride)
        self.head = ConvHead(self.encoder.channels[0], channels, dropout)
        self.local_norm = L2Norm(channels)
        self.context_norm = L2Norm(channels)
        self.classifier = nn.Conv2d(2 * channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (features,) = self.encoder(x)
        local = self.head(features)
        context = F.adaptive_avg_pool2d(local, 1)
        unpooled = self.context_norm(context).expand_as(local)
        scores = self.classifier(torch.cat([self.local_norm(local), unpooled], dim=1))
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


def parsenet(backbone: str, num_classes: int, output_stride: int = 8) -> ParseNet:
    return ParseNet(backbone, num_classes, output_stride=output_stride)
