"""Evaluation: inference over a split (in the suite's mode) into one streaming confusion matrix."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm.auto import tqdm

from segbench.config.schema import CRFConfig, EvalConfig
from segbench.core.environment import synchronize
from segbench.data.base import IMAGENET_MEAN, IMAGENET_STD
from segbench.evaluation.modes import SIZE_DIVISOR, predict_logits
from segbench.metrics.confusion import ConfusionMatrix

if TYPE_CHECKING:
    from segbench.evaluation.predictions import PredictionWriter
    from segbench.metrics.passport import Passport


@dataclass
class EvalResult:
    """The accumulated confusion matrix and where the wall time went."""

    confusion: ConfusionMatrix
    images: int
    seconds: float  # whole loop: waiting for data, copies, forward, post-processing, metric update
    forward_seconds: float  # inference (all views of test-time augmentation), device-synchronised
    data_seconds: float  # waiting for the loader to hand over a batch
    passport: "Passport | None" = None  # the passport's accumulators, when the suite asked for them

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

    @property
    def data_share(self) -> float:
        """Share of the evaluation's wall time spent waiting for data."""
        return self.data_seconds / self.seconds if self.seconds > 0 else float("nan")


def crf_refine(images: torch.Tensor, logits: torch.Tensor, cfg: CRFConfig) -> torch.Tensor:
    """Class probabilities after dense-CRF post-processing of each image (inputs are ImageNet-normalised)."""
    from segbench.evaluation.crf import dense_crf

    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    rgb = ((images * std + mean) * 255).clamp(0, 255)
    probs = logits.softmax(dim=1)
    return torch.stack([dense_crf(rgb[i], probs[i], cfg) for i in range(images.shape[0])])


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, num_classes: int, ignore_index: int, device: torch.device,
             cfg: EvalConfig | None = None, desc: str = "eval", progress: bool = True,
             passport: "Passport | None" = None, writer: "PredictionWriter | None" = None) -> EvalResult:
    """Run ``model`` over ``loader`` in ``cfg``'s mode and accumulate predictions against the masks (and the
    ``passport``'s metrics; ``writer`` saves the predictions). Batches may carry instance maps third."""
    cfg = cfg or EvalConfig()
    model.to(device).eval()
    confusion = ConfusionMatrix(num_classes, ignore_index, device, per_image=True)
    images_seen, forward_seconds, data_seconds = 0, 0.0, 0.0
    start = time.perf_counter()
    batches = iter(tqdm(loader, desc=desc, disable=None if progress else True, leave=False, dynamic_ncols=True))
    while True:
        t0 = time.perf_counter()
        batch = next(batches, None)
        data_seconds += time.perf_counter() - t0
        if batch is None:
            break
        images, masks, *extra = batch
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        synchronize(device)
        t0 = time.perf_counter()
        logits = predict_logits(model, images, cfg, num_classes, getattr(model, "size_divisor", SIZE_DIVISOR))
        synchronize(device)
        forward_seconds += time.perf_counter() - t0
        if cfg.crf.enabled:
            logits = crf_refine(images, logits, cfg.crf)
        if passport is None:
            # max().indices equals argmax (first maximum on ties) and is several times faster over dim 1 on the CPU
            pred = logits.max(dim=1).indices
        else:
            instances = extra[0].to(device, non_blocking=True) if extra else None
            pred = passport.update(logits, masks, instances, probabilities=cfg.crf.enabled)
        confusion.update(pred, masks)
        if writer is not None:
            writer.write(images_seen, images, pred)
        images_seen += images.shape[0]
    synchronize(device)
    confusion.all_reduce()
    if passport is not None:
        passport.all_reduce()
    return EvalResult(confusion, images_seen, time.perf_counter() - start, forward_seconds, data_seconds, passport)
