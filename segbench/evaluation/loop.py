"""Evaluation: inference over a split (in the suite's mode) into one streaming confusion matrix."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from segbench.config.schema import CRFConfig, EvalConfig
from segbench.core.environment import synchronize
from segbench.data.base import IMAGENET_MEAN, IMAGENET_STD
from segbench.errors import warn
from segbench.evaluation.modes import SIZE_DIVISOR, predict_logits
from segbench.metrics.confusion import ConfusionMatrix, SegMetrics
from segbench.metrics.protocol import Batch
from segbench.train.loop import as_format, autocast, memory_format

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
    nonfinite_images: int = 0  # images (over all processes) whose logits held NaN or infinity

    @property
    def invalid_reason(self) -> str | None:
        """Why the numbers do not describe a working model (the model record's ``invalid_reason``), or None."""
        if not self.nonfinite_images:
            return None
        images = "image" if self.nonfinite_images == 1 else "images"
        return (f"non-finite logits (NaN or inf) in {self.nonfinite_images} evaluated {images}: their predictions "
                "are meaningless (a diverged model, or broken weights or inputs)")

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
    memory_format(model.to(device), cfg.channels_last).eval()
    confusion = ConfusionMatrix(num_classes, ignore_index, device, per_image=True)
    images_seen, forward_seconds, data_seconds = 0, 0.0, 0.0
    nonfinite = torch.zeros((), dtype=torch.int64, device=device)
    start = time.perf_counter()
    # a bar updated by hand: tqdm.auto's bar calls iter() on the loader in its constructor and again when iterated,
    # so a loader with workers would start (and prefetch) twice, reading its first batches twice
    bar = tqdm(total=len(loader) if hasattr(loader, "__len__") else None, desc=desc,
               disable=None if progress else True, leave=False, dynamic_ncols=True)
    batches = iter(loader)
    while True:
        t0 = time.perf_counter()
        item = next(batches, None)
        data_seconds += time.perf_counter() - t0
        if item is None:
            break
        bar.update()
        images, masks, *extra = item
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        synchronize(device)
        t0 = time.perf_counter()
        with autocast(device, cfg.precision):  # logits back in fp32 for the softmax, argmax and passport
            logits = predict_logits(model, as_format(images, cfg.channels_last), cfg, num_classes,
                                    getattr(model, "size_divisor", SIZE_DIVISOR)).float()
        synchronize(device)
        forward_seconds += time.perf_counter() - t0
        nonfinite += (~torch.isfinite(logits)).flatten(1).any(1).sum()  # counted on the device: no sync per batch
        if cfg.crf.enabled:
            logits = crf_refine(images, logits, cfg.crf)
        if passport is None:
            # max().indices equals argmax (first maximum on ties) and is several times faster over dim 1 on the CPU
            batch = Batch(logits.max(dim=1).indices, masks)
        else:
            maps = {name: m.to(device, non_blocking=True) for name, m in extra[0].items()} if extra else None
            batch = passport.batch(logits, masks, maps, probabilities=cfg.crf.enabled)
            passport.update(batch)
        confusion.update(batch)
        if writer is not None:
            writer.write(images_seen, images, batch.pred)
        images_seen += images.shape[0]
    bar.close()
    synchronize(device)
    confusion.merge()
    if passport is not None:
        passport.merge()
    result = EvalResult(confusion, images_seen, time.perf_counter() - start, forward_seconds, data_seconds, passport,
                        _total(nonfinite))
    if result.nonfinite_images and _main_process():
        warn(f"{desc}: {result.invalid_reason}; the model is marked invalid in results.json")
    return result


@dataclass
class SplitScores:
    """What an evaluated split scores: the metrics of the whole split (the passport's with them), the confusion
    matrix, per-image intersections and unions in data set order, and the passport's record."""

    scores: SegMetrics
    matrix: np.ndarray
    intersection: np.ndarray  # images x classes
    union: np.ndarray
    passport_metrics: dict[str, float]  # the passport's headline metrics (none when it was off)
    passport: dict | None  # the model record's ``passport`` (None when it was off and nothing was saved)

    @property
    def metrics(self) -> dict[str, float]:
        """The summary metrics, then the passport's."""
        return self.scores.summary() | self.passport_metrics


def score_split(result: EvalResult, dataset: Dataset, writer: PredictionWriter | None = None,
                out_dir: Path | None = None) -> SplitScores:
    """The scores of an evaluation of ``dataset`` (every rank's shard, gathered): the one way ``run``, the
    robustness views, backend parity and training's validation score a split."""
    from segbench.metrics.passport import passport_record

    intersection, union = result.confusion.per_image_stats()
    scores = result.confusion.compute()
    extra, record = passport_record(result, scores, dataset, intersection, union, writer, out_dir)
    return SplitScores(scores, result.confusion.matrix.cpu().numpy(), intersection, union, extra, record)


def _total(count: torch.Tensor) -> int:
    """``count`` summed over the processes of a torch.distributed job."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
    return int(count.item())


def _main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
