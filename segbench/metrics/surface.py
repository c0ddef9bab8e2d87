"""Per-case surface metrics of the foreground classes: HD95 and normalised surface Dice, as MONAI defines them.

A mask's surface is the mask minus its erosion (scipy's cross-shaped structuring element, outside the image
counting as background: MONAI's ``get_mask_edges``). Distances run from each surface pixel of one mask to the
nearest surface pixel of the other (Euclidean distance transform, in ``spacing`` units when given). HD95 is
the larger of the two directed 95th percentiles; it is NaN (left out of the mean) when either mask is empty.
NSD is the share of both surfaces' pixels within ``tolerance`` of the other surface; NaN when both are empty,
0 when one is. Computed on the CPU per image: only for binary suites or when asked (eval.surface).

The foreground metrics (fgIoU, fgDice from the split's counts, case_Dice and the per-case table from its per-image
counts) and the surface metrics form one accumulator, since they share the per-case table.
"""

from __future__ import annotations

import numpy as np
import torch

from segbench.metrics.protocol import Accumulator, Batch, Scores, Setup, Split
from segbench.metrics.registry import MetricEntry, register_accumulator

PERCENTILE = 95
DATASET = "dataset-level counts, NaN classes out of the mean"


def edges(mask: np.ndarray) -> np.ndarray:
    """The surface pixels of a boolean mask (mask XOR its erosion)."""
    from scipy.ndimage import binary_erosion

    return mask ^ binary_erosion(mask)


def directed(source: np.ndarray, target: np.ndarray, spacing: tuple[float, float] | None) -> np.ndarray:
    """Distances from each surface pixel of ``source`` to the nearest surface pixel of ``target``."""
    from scipy.ndimage import distance_transform_edt

    if not target.any():
        return np.full(int(source.sum()), np.inf)
    return distance_transform_edt(~target, sampling=spacing)[source]


def case_surface(pred: np.ndarray, gt: np.ndarray, tolerance: float,
                 spacing: tuple[float, float] | None = None) -> tuple[float, float]:
    """(HD95, NSD) of two boolean masks."""
    pred_edges, gt_edges = edges(pred), edges(gt)
    if not pred_edges.any() and not gt_edges.any():
        return float("nan"), float("nan")
    to_gt, to_pred = directed(pred_edges, gt_edges, spacing), directed(gt_edges, pred_edges, spacing)
    nsd = float(((to_gt <= tolerance).sum() + (to_pred <= tolerance).sum()) / (len(to_gt) + len(to_pred)))
    if not pred.any() or not gt.any():
        return float("nan"), nsd
    hd95 = max(np.percentile(to_gt, PERCENTILE), np.percentile(to_pred, PERCENTILE))
    return float(hd95), nsd


def foreground_classes(cfg, num_classes: int) -> list[int]:
    """eval.foreground_classes, or class 1 for a 2-class suite, or none."""
    if cfg.foreground_classes is not None:
        return list(cfg.foreground_classes)
    return [1] if num_classes == 2 else []


@register_accumulator
class ForegroundCases(Accumulator):
    """The foreground classes' scores and one row per image and foreground class: Dice and IoU from the confusion
    counts, HD95 and NSD (when measured) from the masks' surfaces."""

    metrics = (
        MetricEntry("fgIoU", "IoU of the foreground classes (eval.foreground_classes), mean over them", DATASET,
                    "torchmetrics MulticlassJaccardIndex(average='none', ignore_index) at the foreground classes, "
                    "their mean (nnU-Net's foreground mean, with dataset-level counts)", "torchmetrics", "1e-6"),
        MetricEntry("fgDice", "Dice of the foreground classes, mean over them", DATASET,
                    "torchmetrics MulticlassF1Score(average='none', ignore_index) at the foreground classes, their "
                    "mean (nnU-Net's foreground mean Dice, with dataset-level counts)", "torchmetrics", "1e-6"),
        MetricEntry("case_Dice", "mean over cases (images) of the foreground Dice", "per case; a case with no "
                    "foreground in ground truth and prediction is left out, one whose ground truth is empty but "
                    "whose prediction is not scores 0 (as nnU-Net's summary)",
                    "MONAI DiceMetric(include_background=True, ignore_empty=False) per case and foreground class, "
                    "mean over the cases with the class in the ground truth or the prediction. Not "
                    "ignore_empty=True: that also drops the cases whose ground truth is empty but whose prediction "
                    "is not, so a false positive on an empty case would go unpunished", "monai", "1e-6",
                    per_image=True),
        MetricEntry("HD95", "95th percentile Hausdorff distance between foreground surfaces, mean over cases",
                    "per case, symmetric (max of both directed 95th percentiles); a case with an empty mask is left "
                    "out", "MONAI compute_hausdorff_distance(percentile=95, spacing) per case, mean over the cases "
                    "where it is not NaN; MONAI computes the distances in float32, segbench in float64",
                    "monai", "float32 in the reference", unit="pixels or data.spacing units", higher_is_better=False),
        MetricEntry("NSD", "normalised surface Dice at eval.surface_tolerance, mean over cases", "per case; a case "
                    "with both surfaces empty is left out, one with a single empty surface scores 0",
                    "MONAI compute_surface_dice(class_thresholds=[eval.surface_tolerance], spacing) per case, mean "
                    "over the cases where it is not NaN (DeepMind's surface-distance weights surface elements by "
                    "their length and gives another number)", "monai", "1e-6"),
    )
    gathered = ("rows",)

    @classmethod
    def build(cls, setup: Setup) -> "ForegroundCases | None":
        k = setup.info.num_classes
        foreground = foreground_classes(setup.eval, k)
        if not foreground:
            return None
        surface = setup.eval.surface if setup.eval.surface is not None else k == 2
        return cls(foreground, setup.info.ignore_index, surface, setup.eval.surface_tolerance, setup.data.spacing)

    def __init__(self, foreground: list[int], ignore_index: int = 255, surface: bool = False,
                 tolerance: float = 1.0, spacing: list[float] | None = None) -> None:
        self.foreground, self.ignore_index, self.surface, self.tolerance = foreground, ignore_index, surface, tolerance
        self.spacing = tuple(spacing) if spacing else None
        self.rows: list[tuple[int, int, float, float]] = []  # case (in this process), class, HD95, NSD
        self.cases = 0

    @torch.no_grad()
    def update(self, batch: Batch) -> None:
        """Measure the surfaces of each image's foreground classes (pixels with an ignored label dropped)."""
        if not self.surface:
            return
        for gt, predicted in zip(batch.target.cpu().numpy(), batch.pred.cpu().numpy()):
            valid = gt != self.ignore_index
            for cls in self.foreground:
                hd95, nsd = case_surface((predicted == cls) & valid, gt == cls, self.tolerance, self.spacing)
                self.rows.append((self.cases, cls, hd95, nsd))
            self.cases += 1

    def merge(self) -> None:
        """Every process's rows, renumbered in data set order (contiguous shards in rank order)."""
        from segbench.core.distributed import gather

        parts, first = gather((self.rows, self.cases)), 0
        self.rows = []
        for rows, cases in parts:
            self.rows += [(first + case, *rest) for case, *rest in rows]
            first += cases
        self.cases = first

    def compute(self, split: Split) -> Scores:
        fg = self.foreground
        rows = case_table(split.intersections, split.unions, fg, split.classes, split.ids, self.rows)
        kept = [row["Dice"] for row in rows if not np.isnan(row["Dice"])]
        metrics = {"fgIoU": _nanmean(split.scores.iou[fg]), "fgDice": _nanmean(split.scores.dice[fg]),
                   "case_Dice": float(np.mean(kept)) if kept else float("nan")}
        record = {"foreground": [split.classes[c] for c in fg], "per_case": rows}
        if self.surface:
            values = np.array([row[2:] for row in self.rows], dtype=np.float64).reshape(-1, 2)
            metrics.update({name: _nanmean(column) for name, column in zip(("HD95", "NSD"), values.T)})
            record["surface"] = {"tolerance": self.tolerance, "unit": "spacing" if self.spacing else "pixels",
                                 "spacing": list(self.spacing) if self.spacing else None}
        return Scores(metrics, record)


def _nanmean(values: np.ndarray) -> float:
    kept = np.asarray(values, dtype=np.float64)
    kept = kept[~np.isnan(kept)]
    return float(kept.mean()) if kept.size else float("nan")


def case_table(intersection: np.ndarray, union: np.ndarray, foreground: list[int], classes: tuple[str, ...],
               ids: list[str] | None = None, surface_rows: list | None = None) -> list[dict]:
    """One row per image (case) and foreground class: Dice and IoU from its counts, HD95 and NSD if measured
    (``surface_rows``: case, class, HD95, NSD). Dice and IoU are NaN when the class is in neither mask."""
    measured = {(case, cls): (hd95, nsd) for case, cls, hd95, nsd in surface_rows or ()}
    rows = []
    for case, (inter, uni) in enumerate(zip(np.asarray(intersection, np.float64), np.asarray(union, np.float64))):
        for cls in foreground:
            i, u = inter[cls], uni[cls]
            hd95, nsd = measured.get((case, cls), (None, None))
            rows.append({"case": case, "id": ids[case] if ids else None, "class": classes[cls],
                         "Dice": 2 * i / (u + i) if u > 0 else float("nan"),
                         "IoU": i / u if u > 0 else float("nan"), "HD95": hd95, "NSD": nsd})
    return rows
