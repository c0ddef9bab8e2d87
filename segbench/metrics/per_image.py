"""Per-image scores, in two conventions.

segbench's (image_mIoU, image_mDice, from the per-image intersections and unions the confusion matrix keeps): an
image's mIoU (mDice) is the mean over the classes present in its ground truth or its prediction (union > 0), so a
class the model hallucinates counts 0; an image with no labelled pixel is left out. Reported as the mean, median
and the mean of the worst 5 % and 10 % of images (ceil, at least one image).

Wang et al.'s (NeurIPS 2023, "Revisiting evaluation metrics for semantic segmentation"; mIoUI, mDiceI): an image's
score is the mean over the classes in its ground truth; with 2 classes the foreground's score, or 1 when prediction
and ground truth hold the same single class; the worst q % are floor(q/100 x N) images, at least one. This is the
authors' code (JDTLosses mIoUICMetric), which a reader of the paper compares against.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from segbench.metrics.protocol import Accumulator, Batch, Scores, Setup, Split
from segbench.metrics.registry import MetricEntry, register_accumulator

WORST = (5, 10)  # percent of images
IMAGE = "per-image mean over classes in ground truth or prediction, then over images"
WANG = "per-image mean over the classes in its ground truth (2 classes: the foreground), then over images"


def image_scores(intersection: np.ndarray, union: np.ndarray, dice: bool = False) -> np.ndarray:
    """Per-image mIoU (or mDice) from images x classes arrays; NaN for an image without labelled pixels."""
    intersection = np.asarray(intersection, dtype=np.float64)
    union = np.asarray(union, dtype=np.float64)
    num, den = (2 * intersection, union + intersection) if dice else (intersection, union)
    present = union > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(present, num / np.maximum(den, 1), 0.0)
        return np.where(present.any(1), per_class.sum(1) / present.sum(1), np.nan)


def worst_mean(scores: np.ndarray, percent: float) -> float:
    """Mean of the lowest ``percent`` % of the scores (at least one)."""
    kept = np.sort(scores[~np.isnan(scores)])
    if not kept.size:
        return float("nan")
    return float(kept[: max(1, math.ceil(len(kept) * percent / 100))].mean())


def summary(intersection: np.ndarray, union: np.ndarray) -> dict[str, float]:
    """image_mIoU, its median and worst-case means, and image_mDice."""
    iou = image_scores(intersection, union)
    kept = iou[~np.isnan(iou)]
    nan = float("nan")
    out = {"image_mIoU": float(kept.mean()) if kept.size else nan,
           "image_mIoU_median": float(np.median(kept)) if kept.size else nan}
    out.update({f"image_mIoU_worst{q}": worst_mean(iou, q) for q in WORST})
    dice = image_scores(intersection, union, dice=True)
    out["image_mDice"] = float(np.nanmean(dice)) if (~np.isnan(dice)).any() else nan
    return out


@register_accumulator
class ImageScores(Accumulator):
    """segbench's per-image scores, from the split's per-image intersections and unions (nothing to accumulate)."""

    metrics = (
        MetricEntry("image_mIoU", "mean over images of the per-image mIoU; a class present only in the prediction "
                    "counts as IoU 0", IMAGE, "definition of segbench's variant of Wang et al.'s mIoU^I (see mIoUI, "
                    "the authors' convention): it also punishes classes the model predicts but the image lacks",
                    per_image=True),
        MetricEntry("image_mIoU_median", "median over images of the per-image mIoU", IMAGE,
                    "definition of segbench (the median of image_mIoU's per-image terms)"),
        MetricEntry("image_mIoU_worst5", "mean per-image mIoU of the worst 5 % of images, ceil(5 % x N) of them",
                    IMAGE, "definition of segbench's variant of Wang et al.'s worst-case mIoU^I (see mIoUI_worst5, "
                    "which takes floor(q/100 x N) images)"),
        MetricEntry("image_mIoU_worst10", "mean per-image mIoU of the worst 10 % of images, ceil(10 % x N) of them",
                    IMAGE, "definition of segbench's variant of Wang et al.'s worst-case mIoU^I (see mIoUI_worst10)"),
        MetricEntry("image_mDice", "mean over images of the per-image mDice; a class present only in the prediction "
                    "counts as Dice 0", IMAGE, "definition of segbench (the Dice twin of image_mIoU); no MONAI "
                    "DiceMetric setting gives it: ignore_empty=True leaves out classes only predicted, "
                    "ignore_empty=False scores classes in neither mask 1.0; mDiceI is the MONAI-comparable one",
                    per_image=True),
    )

    def compute(self, split: Split) -> Scores:
        return Scores(summary(split.intersections, split.unions))


@register_accumulator
class WangImageScores(Accumulator):
    """Wang et al.'s per-image IoU and Dice, one pair per image with labelled pixels."""

    metrics = (
        MetricEntry("mIoUI", "Wang et al. NeurIPS 2023 mIoU^I: per image, the mean IoU over the classes in its "
                    "ground truth (2 classes: the foreground's IoU, 1 when both masks hold one same class), then "
                    "the mean over images", WANG + "; an image without labelled pixels is left out",
                    "MONAI MeanIoU(include_background=True, ignore_empty=True, reduction='mean_channel') per image, "
                    "mean over images (2 classes: include_background=False, ignore_empty=False): the authors' "
                    "JDTLosses mIoUICMetric", "monai", "1e-6"),
        MetricEntry("mIoUI_worst5", "mean mIoU^I of the worst 5 % of images, floor(5 % x N) of them, at least one",
                    WANG, "definition of Wang et al. NeurIPS 2023 worst-case mIoU^I_5 (JDTLosses mIoUICMetric, "
                    "not on PyPI; checked by hand)"),
        MetricEntry("mIoUI_worst10", "mean mIoU^I of the worst 10 % of images, floor(10 % x N) of them, at least "
                    "one", WANG, "definition of Wang et al. NeurIPS 2023 worst-case mIoU^I_10 (JDTLosses "
                    "mIoUICMetric, not on PyPI; checked by hand)"),
        MetricEntry("mDiceI", "Wang et al.'s image-level Dice: per image, the mean Dice over the classes in its "
                    "ground truth (2 classes: the foreground's), then the mean over images", WANG,
                    "MONAI DiceMetric(include_background=True, ignore_empty=True, reduction='mean_channel') per "
                    "image, mean over images (2 classes: include_background=False, ignore_empty=False)", "monai",
                    "1e-6"),
    )
    gathered = ("scores",)

    @classmethod
    def build(cls, setup: Setup) -> "WangImageScores":
        return cls(setup.info.num_classes)

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.scores: list[tuple[float, float]] = []  # (IoU, Dice) per image with labelled pixels

    @torch.no_grad()
    def update(self, batch: Batch) -> None:
        k, n = self.num_classes, batch.target.shape[0]
        stride = (k + 1) ** 2  # an image's bins: (ground-truth class, or k: ignored) x (predicted class, or k: void)
        index = batch.target.reshape(n, -1).to(torch.int32, copy=True).clamp_(max=k).mul_(k + 1)
        index.add_(batch.pred.reshape(n, -1).to(torch.int32, copy=True).clamp_(max=k))
        if n > 1:
            index.add_(torch.arange(n, dtype=torch.int32, device=index.device)[:, None] * stride)
        counts = torch.bincount(index.reshape(-1), minlength=n * stride).view(n, k + 1, k + 1)
        for matrix in counts[:, :k].cpu().numpy():
            self.add(matrix)

    def add(self, matrix: np.ndarray) -> None:
        """Add one image from its K x (K+1) counts (ground truth on rows, a last column of void predictions)."""
        if (score := wang_image_score(matrix.astype(np.float64))) is not None:
            self.scores.append(score)

    def compute(self, split: Split) -> Scores:
        nan = float("nan")
        iou = np.sort(np.array([s[0] for s in self.scores], dtype=np.float64))
        out = {"mIoUI": float(iou.mean()) if iou.size else nan}
        out.update({f"mIoUI_worst{q}": float(iou[: max(1, int(q / 100 * iou.size))].mean()) if iou.size else nan
                    for q in WORST})
        out["mDiceI"] = float(np.mean([s[1] for s in self.scores])) if self.scores else nan
        return Scores(out)


def wang_image_score(matrix: np.ndarray) -> tuple[float, float] | None:
    """(IoU, Dice) of one image in Wang et al.'s convention from its K x (K+1) counts (ground truth on rows, a last
    column of void predictions); None for an image without labelled pixels."""
    k = matrix.shape[0]
    gt, predicted, tp = matrix.sum(1), matrix[:, :k].sum(0), np.diag(matrix[:, :k])
    if gt.sum() == 0:
        return None
    if k == 2:
        if ((gt + predicted) > 0).sum() < 2:
            return 1.0, 1.0
        classes = np.array([1])
    else:
        classes = np.flatnonzero(gt > 0)
    union, cardinality = gt + predicted - tp, gt + predicted
    return float((tp[classes] / union[classes]).mean()), float((2 * tp[classes] / cardinality[classes]).mean())


PER_IMAGE_MEANS = {"image_mIoU": False, "image_mDice": True}  # metric -> Dice


def bootstrap_mean_difference(run: tuple, baseline: tuple, paired: bool, metric: str, resamples: int,
                              level: float, seed: int) -> tuple[float, float, float]:
    """(low, high, p-value) of the bootstrap of ``mean(run) - mean(baseline)`` of a per-image score, from
    (intersection, union) pairs; images resampled with replacement (the same draws for both when paired)."""
    a = image_scores(*run, dice=PER_IMAGE_MEANS[metric])
    b = image_scores(*baseline, dice=PER_IMAGE_MEANS[metric])
    a, b = (np.nan_to_num(a, nan=np.nanmean(a)), np.nan_to_num(b, nan=np.nanmean(b))) if paired else \
        (a[~np.isnan(a)], b[~np.isnan(b)])
    rng = np.random.default_rng(seed)
    draw_a = rng.integers(0, len(a), (resamples, len(a)))
    draw_b = draw_a if paired else rng.integers(0, len(b), (resamples, len(b)))
    diffs = a[draw_a].mean(1) - b[draw_b].mean(1)
    low, high = np.percentile(diffs, [50 * (1 - level), 50 * (1 + level)])
    p_value = min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean()))
    return float(low), float(high), float(p_value)
