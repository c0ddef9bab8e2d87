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

from segbench.core.registry import Registry

if TYPE_CHECKING:  # torch is imported where a matrix is built: reading results (report, gate) needs no torch
    import torch

METRICS = {
    "mIoU": "mean over classes of TP / (TP + FP + FN)",
    "mDice": "mean over classes of 2TP / (2TP + FP + FN)",
    "aAcc": "pixel accuracy over all labelled pixels",
    "mAcc": "mean over classes of per-class recall TP / (TP + FN)",
    "fwIoU": "IoU weighted by each class's share of labelled pixels",
}  # the confusion-matrix metrics every evaluation reports (SegMetrics.summary)


@dataclass(frozen=True)
class MetricEntry:
    """One reported number: what it is, how it is aggregated, which tool's number it equals."""

    name: str
    definition: str
    convention: str  # accumulation and absent/empty-case policy
    equals: str  # the tool whose number it reproduces
    unit: str = "fraction"  # fraction (shown and gated in percent / percentage points), pixels, or spacing units
    higher_is_better: bool = True
    per_image: bool = False  # a mean of per-image terms: bootstrap intervals resample them

    @property
    def scale(self) -> float:
        """Factor from the stored value to the shown (and gated) one: 100 for fractions."""
        return 100.0 if self.unit == "fraction" else 1.0

    def describe(self) -> str:
        direction = "" if self.higher_is_better else "; lower is better"
        return f"{self.definition} [{self.convention}; = {self.equals}; {self.unit}{direction}]"


DATASET = "dataset-level counts, NaN classes out of the mean"
IMAGE = "per-image mean over classes in ground truth or prediction, then over images"
_ENTRIES = (
    MetricEntry("mIoU", METRICS["mIoU"], DATASET, "MMSegmentation IoUMetric, HF evaluate mean_iou"),
    MetricEntry("mDice", METRICS["mDice"], DATASET, "MMSegmentation IoUMetric mDice"),
    MetricEntry("aAcc", METRICS["aAcc"], "dataset-level", "MMSegmentation aAcc"),
    MetricEntry("mAcc", METRICS["mAcc"], DATASET, "MMSegmentation mAcc"),
    MetricEntry("fwIoU", METRICS["fwIoU"], "dataset-level", "the FCN paper's frequency weighted IU"),
    MetricEntry("iIoU", "Cityscapes instance-weighted IoU, mean over the 8 instance classes: TP and FN of each "
                "instance weighted by the class's average instance size over the instance's size; FP not weighted",
                "dataset-level; instance ids > 1000 only; NaN classes out of the mean",
                "cityscapesScripts evalPixelLevelSemanticLabeling 'iIoU Classes'"),
    MetricEntry("iIoU_category", "Cityscapes instance-weighted IoU of the categories human and vehicle",
                "dataset-level; a prediction of another class of the category is a hit",
                "cityscapesScripts evalPixelLevelSemanticLabeling 'iIoU Categories'"),
    MetricEntry("image_mIoU", "mean over images of the per-image mIoU", IMAGE,
                "Wang et al. NeurIPS 2023 mIoU^I (image-level)", per_image=True),
    MetricEntry("image_mIoU_median", "median over images of the per-image mIoU", IMAGE, "segbench"),
    MetricEntry("image_mIoU_worst5", "mean per-image mIoU of the worst 5 % of images (at least one)", IMAGE,
                "Wang et al. NeurIPS 2023 worst-case image mIoU at q=5"),
    MetricEntry("image_mIoU_worst10", "mean per-image mIoU of the worst 10 % of images (at least one)", IMAGE,
                "Wang et al. NeurIPS 2023 worst-case image mIoU at q=10"),
    MetricEntry("image_mDice", "mean over images of the per-image mDice", IMAGE, "MONAI DiceMetric "
                "(mean_batch, ignore_empty) over all classes", per_image=True),
    MetricEntry("bIoU", "Boundary IoU: IoU of the bands within d pixels inside each class's ground-truth and "
                "predicted contours, d = dilation_ratio x image diagonal", DATASET + "; ignored pixels dropped "
                "after the bands are drawn", "Cheng et al. CVPR 2021 boundary_iou (Detectron2 mask_to_boundary)"),
    MetricEntry("ECE", "expected calibration error: sum over 15 equal-width bins of |accuracy - confidence| "
                "weighted by the bin's share of pixels", "top-1 softmax confidence over labelled pixels",
                "torchmetrics MulticlassCalibrationError(n_bins=15, norm='l1') over pixels",
                higher_is_better=False),
    MetricEntry("fgIoU", "IoU of the foreground classes (eval.foreground_classes), mean over them", DATASET,
                "MONAI MeanIoU / nnU-Net foreground mean, dataset-level counts"),
    MetricEntry("fgDice", "Dice of the foreground classes, mean over them", DATASET,
                "nnU-Net summary foreground_mean Dice, dataset-level counts"),
    MetricEntry("case_Dice", "mean over cases (images) of the foreground Dice", "per case; a case with no "
                "foreground in ground truth and prediction is left out", "MONAI DiceMetric(ignore_empty=True)",
                per_image=True),
    MetricEntry("HD95", "95th percentile Hausdorff distance between foreground surfaces, mean over cases",
                "per case, symmetric (max of both directed 95th percentiles); a case with an empty mask is left "
                "out", "MONAI compute_hausdorff_distance(percentile=95)", unit="pixels or data.spacing units",
                higher_is_better=False),
    MetricEntry("NSD", "normalised surface Dice at eval.surface_tolerance, mean over cases", "per case; a case "
                "with both surfaces empty is left out", "MONAI compute_surface_dice"),
)
REGISTRY: Registry[MetricEntry] = Registry("metric")
for _entry in _ENTRIES:
    REGISTRY.register(_entry.name, _entry)


def convention(num_classes: int, ignore_index: int, label_space: str) -> dict:
    """The settings that make a number comparable with another tool's; stored with every result."""
    return {
        "accumulation": "dataset",
        "absent_class": "nan_excluded",
        "ignore_index": ignore_index,
        "label_space": label_space,
        "num_classes": num_classes,
    }


class ConfusionMatrix:
    """An int64 ``num_classes x num_classes`` matrix (rows ground truth, columns prediction) on a device."""

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

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and ground-truth label maps (NxHxW, or any equal shapes if not per image);
        integer label maps, which autograd never tracks."""
        import torch

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
        """Per-image intersections and unions, each an images x classes int64 array."""
        if not self._intersections:
            empty = np.zeros((0, self.num_classes), np.int64)
            return empty, empty
        import torch

        return (torch.cat(self._intersections).cpu().numpy(), torch.cat(self._unions).cpu().numpy())

    def all_reduce(self) -> None:
        """Sum the matrix over all processes of a torch.distributed job (no-op otherwise)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix)

    def compute(self) -> "SegMetrics":
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


def definitions(names) -> dict[str, dict]:
    """results.json's ``metric_definitions`` for the registered metrics among ``names``."""
    return {name: {"definition": e.definition, "convention": e.convention, "equals": e.equals, "unit": e.unit,
                   "higher_is_better": e.higher_is_better}
            for name, e in REGISTRY.items() if name in set(names)}
