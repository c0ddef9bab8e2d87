"""A tiny fully convolutional model, registered as ``tinyseg``."""

from torch import nn

import segbench


@segbench.register_model("tinyseg")
def tinyseg(num_classes: int) -> nn.Module:
    """Three 3x3 convolutions at full resolution (a plugin example, not a good model)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.Conv2d(16, num_classes, 1),
    )
