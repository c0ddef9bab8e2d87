"""Streaming confusion matrix and the metrics derived from it.

Convention (MMSegmentation's IoUMetric, HF evaluate's mean_iou, torchmetrics' macro Jaccard, the
Cityscapes scripts): one int64 matrix accumulated over the whole split; pixels labelled with the
ignore index are dropped; a class absent from both ground truth and prediction has IoU NaN and is
left out of the mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from segbench.metrics.protocol import Accumulator, Batch, Split
from segbench.metrics.registry import REGISTRY, MetricEntry, definitions, register_accumulator

__all__ = ["METRICS", "REGISTRY", "ConfusionMatrix", "SegMetrics", "category_iou", "compute_metrics", "convention",
           "definitions", "nanmean"]

if TYPE_CHECKING:  # torch is imported where a matrix is built: reading results (report, gate) needs no torch
    import torch

METRICS = {
    "mIoU": "mean over classes of TP / (TP + FP + FN)",
    "mDice": "mean over classes of 2TP / (2TP + FP + FN)",
    "aAcc": "pixel accuracy over all labelled pixels",
    "mAcc": "mean over classes of per-class recall TP / (TP + FN)",
    "fwIoU": "IoU weighted by each class's share of labelled pixels",
}  # the confusion-matrix metrics every evaluation reports (SegMetrics.summary)


def convention(num_classes: int, ignore_index: int, label_space: str) -> dict:
    """The settings that make a number comparable with another tool's; stored with every result."""
    return {
        "accumulation": "dataset",
        "absent_class": "nan_excluded",
        "ignore_index": ignore_index,
        "label_space": label_space,
        "num_classes": num_classes,
    }


DATASET = "dataset-level counts, NaN classes out of the mean"


@register_accumulator
class ConfusionMatrix(Accumulator):
    """An int64 ``num_classes x num_classes`` matrix (rows ground truth, columns prediction) on a device."""

    metrics = (
        MetricEntry("mIoU", METRICS["mIoU"], DATASET, "torchmetrics MulticlassJaccardIndex(average='macro', "
                    "ignore_index) over all pixels (MMSegmentation IoUMetric's mIoU)", "torchmetrics", "1e-6"),
        MetricEntry("mDice", METRICS["mDice"], DATASET, "torchmetrics MulticlassF1Score(average='macro', "
                    "ignore_index) over all pixels (MMSegmentation IoUMetric's mDice)", "torchmetrics", "1e-6"),
        MetricEntry("aAcc", METRICS["aAcc"], "dataset-level", "torchmetrics MulticlassAccuracy(average='micro', "
                    "ignore_index) (MMSegmentation aAcc)", "torchmetrics", "1e-6"),
        MetricEntry("mAcc", METRICS["mAcc"], DATASET + " (a class without ground-truth pixels has no recall)",
                    "scikit-learn balanced_accuracy_score over the labelled pixels (MMSegmentation mAcc; "
                    "torchmetrics MulticlassAccuracy(average='macro') differs: it counts a class predicted but "
                    "never in the ground truth as 0)", "scikit-learn"),
        MetricEntry("fwIoU", METRICS["fwIoU"], "dataset-level",
                    "definition of the FCN paper's frequency weighted IU (Long et al., CVPR 2015)"),
    )
    summed = ("matrix",)

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu",
                 per_image: bool = False) -> None:
        import torch

        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        # Per-image intersections and unions (images x classes numbers, not pixels), for bootstrap intervals.
        self.per_image = per_image
        self._intersections: list[torch.Tensor] = []
        self._unions: list[torch.Tensor] = []

    def update(self, batch: Batch | torch.Tensor, target: torch.Tensor | None = None) -> None:
        """Add a Batch (or predicted and ground-truth label maps: NxHxW, or any equal shapes if not per image);
        integer label maps, which autograd never tracks."""
        import torch

        pred, target = (batch.pred, batch.target) if isinstance(batch, Batch) else (batch, target)
        k = self.num_classes
        bins = k * k + 1
        target = target.reshape(target.shape[0] if self.per_image else 1, -1).long()
        pred = pred.reshape(target.shape).long()
        # Ignored ground truth (ignore index, or any label >= num_classes) goes to one overflow bin that is cut
        # off: no boolean indexing, which would copy the kept pixels. Labels must be non-negative.
        index = target * k
        index += pred
        index.masked_fill_(target >= k, k * k)
        if self.per_image:  # one block of bins per image
            index += torch.arange(0, target.shape[0] * bins, bins, device=index.device)[:, None]
        counts = torch.bincount(index.reshape(-1), minlength=target.shape[0] * bins)
        matrices = counts.view(target.shape[0], bins)[:, : k * k].view(-1, k, k)
        self.matrix += matrices.sum(0)
        if self.per_image:
            tp = matrices.diagonal(dim1=1, dim2=2)
            self._intersections.append(tp)
            self._unions.append(matrices.sum(1) + matrices.sum(2) - tp)

    def per_image_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-image intersections and unions, each an images x classes int64 array (after ``merge``: every
        process's images, in rank order)."""
        if not self._intersections:
            empty = np.zeros((0, self.num_classes), np.int64)
            return empty, empty
        import torch

        return (torch.cat(self._intersections).cpu().numpy(), torch.cat(self._unions).cpu().numpy())

    def merge(self) -> None:
        """Sum the matrix over all processes of a torch.distributed job and stack their per-image rows in rank
        order (no-op otherwise)."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        super().merge()
        if self.per_image:
            from segbench.core.distributed import gather_rows

            device = self.matrix.device
            self._intersections, self._unions = [torch.from_numpy(gather_rows(a)).to(device)
                                                 for a in self.per_image_stats()]
            self._intersections, self._unions = [self._intersections], [self._unions]

    def compute(self, split: Split | None = None) -> "SegMetrics":
        """The dataset-level scores (their ``metrics`` are the headline numbers)."""
        return compute_metrics(self.matrix.cpu().numpy())


@dataclass
class SegMetrics:
    """Dataset-level metrics (fractions in [0, 1]); per-class arrays hold NaN for absent classes."""

    mIoU: float
    mDice: float
    aAcc: float
    mAcc: float
    fwIoU: float
    iou: np.ndarray
    dice: np.ndarray
    acc: np.ndarray
    support: np.ndarray  # ground-truth pixels per class

    def summary(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in METRICS}

    @property
    def metrics(self) -> dict[str, float]:
        """The headline numbers (as every accumulator's Scores)."""
        return self.summary()

    @property
    def record(self) -> dict:
        return {}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def compute_metrics(matrix: np.ndarray) -> SegMetrics:
    """Metrics from a confusion matrix with ground truth on rows and predictions on columns."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    gt = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    union = gt + predicted - tp
    iou = _ratio(tp, union)
    dice = _ratio(2 * tp, gt + predicted)
    acc = _ratio(tp, gt)
    total = gt.sum()
    freq = gt / total if total > 0 else np.zeros_like(gt)
    return SegMetrics(
        mIoU=nanmean(iou),
        mDice=nanmean(dice),
        aAcc=float(tp.sum() / total) if total > 0 else float("nan"),
        mAcc=nanmean(acc),
        fwIoU=float(np.nansum(freq * iou)) if total > 0 else float("nan"),
        iou=iou,
        dice=dice,
        acc=acc,
        support=gt.astype(np.int64),
    )


def category_iou(matrix: np.ndarray, categories: tuple[tuple[str, tuple[int, ...]], ...]) -> dict[str, float]:
    """IoU of groups of classes (the Cityscapes categories) from a matrix with ground truth on K rows and the K
    classes in its first columns; further columns count as misses. As the official script: a prediction of
    another class of the same category is a hit."""
    k = matrix.shape[0]
    scores = {}
    for name, members in categories:
        inside = np.zeros(k, dtype=bool)
        inside[list(members)] = True
        tp = matrix[inside][:, :k][:, inside].sum()
        fn = matrix[inside].sum() - tp
        fp = matrix[~inside][:, :k][:, inside].sum()
        scores[name] = float(tp / (tp + fp + fn)) if tp + fp + fn > 0 else float("nan")
    return scores
