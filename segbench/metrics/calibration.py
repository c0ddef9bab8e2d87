"""Expected calibration error of the top-1 softmax confidence over labelled pixels, streamed as a histogram.

Bins are equal-width over [0, 1]; a confidence c falls in bin ``min(floor(c * bins), bins - 1)``. Each bin
keeps its pixel count, summed confidence and correct pixels, so the error is exact at any dataset size.
"""

from __future__ import annotations

import numpy as np
import torch

BINS = 15


def top1(logits: torch.Tensor, probabilities: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, prediction) of NxKxHxW logits (or probabilities): the prediction is their argmax."""
    values, indices = logits.max(dim=1)
    if probabilities:
        return values, indices
    # max softmax = 1 / sum(exp(l - max l)); first maximum on ties, as argmax
    return (logits - values[:, None]).exp_().sum(dim=1).reciprocal_(), indices


class Calibration:
    """Confidence histogram: pixels, summed confidence and correct pixels per bin."""

    def __init__(self, bins: int = BINS, device: torch.device | str = "cpu") -> None:
        self.bins = bins
        self.stats = torch.zeros(3, bins, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, confidence: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> None:
        """Add one batch; pixels whose ground truth is ignored (>= num_classes) are dropped."""
        valid = (target < num_classes).reshape(-1)
        conf = confidence.reshape(-1).double()
        index = (conf * self.bins).long().clamp_(0, self.bins - 1)
        index = torch.where(valid, index, self.bins)
        correct = (pred.reshape(-1) == target.reshape(-1)).double()
        size = self.bins + 1
        for row, weights in enumerate((None, conf, correct)):
            self.stats[row] += torch.bincount(index, weights=weights, minlength=size)[: self.bins].double()

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.stats)

    def ece(self) -> float:
        """Sum over bins of |accuracy - mean confidence| x the bin's share of pixels; NaN without pixels."""
        count, conf, correct = self.stats.cpu().numpy()
        total = count.sum()
        return float(np.abs(correct - conf).sum() / total) if total > 0 else float("nan")

    def record(self) -> dict:
        count, conf, correct = self.stats.cpu().numpy()
        return {"bins": self.bins, "pixels": count.astype(np.int64).tolist(), "confidence_sum": conf.tolist(),
                "correct": correct.astype(np.int64).tolist()}
