"""The loss registry: pixel-wise cross-entropy, focal and Dice, and weighted sums of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from segbench.core.registry import Registry


@dataclass(frozen=True)
class LossEntry:
    """A loss that maps (logits NxCxHxW, target NxHxW) to a scalar, honouring the ignore index."""

    name: str
    build: Callable[[int, Sequence[float] | None], nn.Module]  # (ignore_index, class_weights)
    description: str


LOSSES: Registry[LossEntry] = Registry("loss")


def _cross_entropy(ignore_index: int, class_weights: Sequence[float] | None) -> nn.Module:
    weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
    return nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index)


def _focal(ignore_index: int, class_weights: Sequence[float] | None) -> nn.Module:
    from segmentation_models_pytorch.losses import FocalLoss  # smp (and timm) only when a loss needs them

    return FocalLoss(mode="multiclass", gamma=2.0, ignore_index=ignore_index)


def _dice(ignore_index: int, class_weights: Sequence[float] | None) -> nn.Module:
    from segmentation_models_pytorch.losses import DiceLoss

    return DiceLoss(mode="multiclass", from_logits=True, ignore_index=ignore_index)


LOSSES.register("ce", LossEntry("ce", _cross_entropy, "pixel-wise softmax cross-entropy (optional class weights)"))
LOSSES.register("focal", LossEntry("focal", _focal, "focal loss, gamma 2 (smp)"))
LOSSES.register("dice", LossEntry("dice", _dice, "soft Dice loss over the classes present in the batch (smp)"))


class WeightedSum(nn.Module):
    """``sum(weight * loss(logits, target))`` over named loss terms."""

    def __init__(self, terms: dict[str, float], ignore_index: int = 255,
                 class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.weights = dict(terms)
        self.terms = nn.ModuleDict({n: LOSSES.get(n).build(ignore_index, class_weights) for n in terms})

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(self.weights[name] * loss(logits, target) for name, loss in self.terms.items())


def build_loss(terms: dict[str, float], ignore_index: int = 255,
               class_weights: Sequence[float] | None = None) -> nn.Module:
    """A weighted sum of the named losses, e.g. ``{"ce": 1.0, "dice": 0.5}``."""
    return WeightedSum(terms, ignore_index, class_weights)
