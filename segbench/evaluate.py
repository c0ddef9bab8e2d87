"""Evaluation: whole-image inference over a split into one streaming confusion matrix."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from segbench.benchmark import synchronize
from segbench.metrics import ConfusionMatrix


@dataclass
class EvalResult:
    """The accumulated confusion matrix and where the wall time went."""

    confusion: ConfusionMatrix
    images: int
    seconds: float  # whole loop: data loading, copies, forward, metric update
    forward_seconds: float  # forward passes alone, device-synchronised

    @property
    def images_per_second(self) -> float:
        """End to end: data loading, copies, forward pass and metric update."""
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    @property
    def forward_images_per_second(self) -> float:
        return self.images / self.forward_seconds if self.forward_seconds > 0 else float("nan")

    @property
    def forward_share(self) -> float:
        """Share of the evaluation's wall time spent in the forward pass (end-to-end over forward throughput)."""
        return self.forward_seconds / self.seconds if self.seconds > 0 else float("nan")


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, num_classes: int, ignore_index: int,
             device: torch.device, desc: str = "eval", progress: bool = True) -> EvalResult:
    """Run ``model`` over ``loader`` and accumulate predictions against the masks."""
    model.to(device).eval()
    confusion = ConfusionMatrix(num_classes, ignore_index, device, per_image=True)
    images_seen, forward_seconds = 0, 0.0
    start = time.perf_counter()
    for images, masks in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        synchronize(device)
        t0 = time.perf_counter()
        logits = model(images)
        synchronize(device)
        forward_seconds += time.perf_counter() - t0
        if logits.shape[-2:] != masks.shape[-2:]:
            raise RuntimeError(f"model returned logits of size {tuple(logits.shape[-2:])} "
                               f"for masks of size {tuple(masks.shape[-2:])}")
        confusion.update(logits.argmax(dim=1), masks)
        images_seen += images.shape[0]
    synchronize(device)
    confusion.all_reduce()
    return EvalResult(confusion, images_seen, time.perf_counter() - start, forward_seconds)
