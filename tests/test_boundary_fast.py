"""The Boundary IoU band's log-step window equals the plain definition: shifted copies of the label map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segbench.metrics.boundary import OUTSIDE, BoundaryIoU, band, window
from segbench.metrics.protocol import Batch


def shifted_copies_band(labels: np.ndarray, d: int) -> np.ndarray:
    """A pixel is in the band when one of the (2d+1)^2 pixels around it (outside the image: 255) differs from it."""
    n, h, w = labels.shape
    padded = np.full((n, h + 2 * d, w + 2 * d), OUTSIDE, np.uint8)
    padded[:, d:d + h, d:d + w] = labels
    out = np.zeros(labels.shape, bool)
    for dy in range(2 * d + 1):
        for dx in range(2 * d + 1):
            out |= padded[:, dy:dy + h, dx:dx + w] != labels
    return out


def random_map(rng: np.random.Generator, n: int, h: int, w: int, k: int) -> np.ndarray:
    """Blocky labels (with a few ignored 255s and single-pixel specks), so bands are neither empty nor everything."""
    block = int(rng.integers(1, 6))
    coarse = rng.integers(0, k, (n, -(-h // block), -(-w // block)))
    labels = np.kron(coarse, np.ones((1, block, block), np.int64))[:, :h, :w].astype(np.uint8)
    labels[rng.random(labels.shape) < 0.02] = 255
    labels[rng.random(labels.shape) < 0.01] = rng.integers(0, k)
    return labels


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 7), (1, 9, 1), (2, 13, 17), (1, 31, 8), (3, 24, 40)])
@pytest.mark.parametrize("d", [1, 2, 3, 5, 8, 13, 40])
def test_log_step_band_equals_shifted_copies(shape, d):
    """Odd and even sizes, one-pixel maps, and windows wider than the image (d = 13 and 40)."""
    rng = np.random.default_rng(hash((shape, d)) % 2**32)
    for k in (1, 2, 19):
        labels = random_map(rng, *shape, k)
        assert np.array_equal(band(torch.from_numpy(labels), d).numpy(), shifted_copies_band(labels, d)), (k, shape)


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 93])
def test_window_is_the_maximum_and_minimum_of_every_run(width):
    x = torch.from_numpy(np.random.default_rng(width).integers(0, 256, (3, 100 + width)).astype(np.uint8))
    runs = x.unfold(-1, width, 1)  # every run of ``width`` values, as torch's own view
    assert torch.equal(window(x, width, -1, torch.maximum), runs.max(-1).values)
    assert torch.equal(window(x.T, width, 0, torch.minimum), runs.min(-1).values.T)


def test_boundary_counts_by_hand_on_random_maps():
    """Per-class intersections and unions equal the counts of the shifted-copies bands, with void predictions."""
    rng = np.random.default_rng(7)
    k, d_ratio = 5, 0.1
    target, pred = random_map(rng, 2, 37, 50, k), random_map(rng, 2, 37, 50, k + 1)  # pred k: void
    metric = BoundaryIoU(k, dilation_ratio=d_ratio)
    metric.update(Batch(torch.from_numpy(pred), torch.from_numpy(target)))
    d = metric.dilations.pop()
    valid = target < k
    gt_in, pred_in = shifted_copies_band(target, d) & valid, shifted_copies_band(pred, d) & valid
    for c in range(k):
        g, p = gt_in & (target == c), pred_in & (pred == c)
        assert metric.intersection[c] == (g & p).sum()
        assert metric.union[c] == (g | p).sum()
