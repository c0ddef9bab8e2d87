"""Per-case surface metrics of the foreground classes: HD95 and normalised surface Dice, as MONAI defines them.

A mask's surface is the mask minus its erosion (scipy's cross-shaped structuring element, outside the image
counting as background: MONAI's ``get_mask_edges``). Distances run from each surface pixel of one mask to the
nearest surface pixel of the other (Euclidean distance transform, in ``spacing`` units when given). HD95 is
the larger of the two directed 95th percentiles; it is NaN (left out of the mean) when either mask is empty.
NSD is the share of both surfaces' pixels within ``tolerance`` of the other surface; NaN when both are empty,
0 when one is. Computed on the CPU per image: only for binary suites or when asked (eval.surface).
"""

from __future__ import annotations

import numpy as np
import torch

PERCENTILE = 95


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


class SurfaceCases:
    """One row per image and foreground class: HD95 and NSD (Dice and IoU come from the confusion counts)."""

    def __init__(self, foreground: list[int], tolerance: float, spacing: list[float] | None = None) -> None:
        self.foreground, self.tolerance = foreground, tolerance
        self.spacing = tuple(spacing) if spacing else None
        self.rows: list[tuple[int, int, float, float]] = []  # case, class, HD95, NSD
        self.cases = 0

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, ignore_index: int) -> None:
        """Add NxHxW predicted and ground-truth class maps; pixels with an ignored label are dropped."""
        pred_np, target_np = pred.cpu().numpy(), target.cpu().numpy()
        for gt, predicted in zip(target_np, pred_np):
            valid = gt != ignore_index
            for cls in self.foreground:
                hd95, nsd = case_surface((predicted == cls) & valid, gt == cls, self.tolerance, self.spacing)
                self.rows.append((self.cases, cls, hd95, nsd))
            self.cases += 1

    def means(self) -> dict[str, float]:
        """HD95 and NSD averaged over the cases (and foreground classes) that have them."""
        values = np.array([row[2:] for row in self.rows], dtype=np.float64).reshape(-1, 2)
        return {name: float(np.nanmean(column)) if (~np.isnan(column)).any() else float("nan")
                for name, column in zip(("HD95", "NSD"), values.T)}
