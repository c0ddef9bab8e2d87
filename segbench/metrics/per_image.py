"""Per-image scores from the per-image intersections and unions the confusion matrix keeps.

An image's mIoU (mDice) is the mean over the classes present in its ground truth or its prediction (union
> 0); an image with no labelled pixel has none and is left out. Reported beside the dataset-level numbers:
their mean, median and the mean of the worst 5 % and 10 % of images (at least one image).
"""

from __future__ import annotations

import math

import numpy as np

WORST = (5, 10)  # percent of images


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


def case_table(intersection: np.ndarray, union: np.ndarray, foreground: list[int], classes: tuple[str, ...],
               ids: list[str] | None = None, surface=None) -> list[dict]:
    """One row per image (case) and foreground class: Dice and IoU from its counts, HD95 and NSD if measured
    (``surface``: a SurfaceCases). Dice and IoU are NaN when the class is in neither mask."""
    measured = {(case, cls): (hd95, nsd) for case, cls, hd95, nsd in surface.rows} if surface is not None else {}
    rows = []
    for case, (inter, uni) in enumerate(zip(np.asarray(intersection, np.float64), np.asarray(union, np.float64))):
        for cls in foreground:
            i, u = inter[cls], uni[cls]
            hd95, nsd = measured.get((case, cls), (None, None))
            rows.append({"case": case, "id": ids[case] if ids else None, "class": classes[cls],
                         "Dice": 2 * i / (u + i) if u > 0 else float("nan"),
                         "IoU": i / u if u > 0 else float("nan"), "HD95": hd95, "NSD": nsd})
    return rows


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
