"""The module that makes any external network look like segbench's own models.

ImageNet-normalised images in (re-normalised to the network's own input), a plain N x K x H x W
logits tensor out, at the input's size, channel i being suite class i: in training and in evaluation
mode alike, so the suite's training loop can fine-tune it. Only the network holds parameters and
state (``net.*``); the re-normalisation and the class selection are fixed buffers outside the state dict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segbench.models.labelspace import ClassSelect, LabelMapping
from segbench.models.normalisation import Normalisation, renormaliser


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits resized bilinearly (align_corners=False) to ``size``, as transformers' post-processing does."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class PublishedModel(nn.Module):
    """An external network with its own normalisation, output format and classes, seen as a segbench model."""

    def __init__(self, net: nn.Module, logits: Callable[[Any], torch.Tensor], normalisation: Normalisation,
                 mapping: LabelMapping | None, size_divisor: int = 1) -> None:
        super().__init__()
        self.size_divisor = size_divisor  # what evaluation pads images to: 1 where the network takes any size
        self.input_normalisation = normalisation  # recorded by a checkpoint of this model
        self.renormalise = renormaliser(normalisation)
        self.net = net
        self.logits = logits  # the network's output -> its logits tensor
        self.select = ClassSelect(mapping) if mapping is not None and not mapping.identity else nn.Identity()

    @property
    def runtime(self) -> Callable[[torch.device], str] | None:
        """Who runs the network on a device when torch does not (an ONNX file: ONNX Runtime's provider); None: torch."""
        return getattr(self.net, "runtime", None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.logits(self.net(self.renormalise(images)))
        return self.select(upsample(logits, tuple(images.shape[-2:])))
