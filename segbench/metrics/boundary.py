"""Boundary IoU (Cheng et al., CVPR 2021), streamed: per-class intersections and unions of contour bands.

A class's band is its mask minus the mask's erosion by a (2d+1)-pixel square, outside the image counting as
background: Detectron2's ``mask_to_boundary`` (OpenCV erosion of the mask padded by one zero pixel, ``d``
iterations of a 3x3 kernel), with ``d = max(1, round(dilation_ratio * image diagonal))``. Since every pixel
has one label, a pixel lies in the band of its own class exactly when its window holds another label or
leaves the image: a separable window maximum and minimum of the label map give every class's band at once (on
any device), or on the CPU the window OR of the neighbours that differ, on bits packed 64 to a word.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from segbench.metrics.protocol import Accumulator, Batch, Scores, Setup, Split
from segbench.metrics.registry import MetricEntry, register_accumulator

OUTSIDE = 255  # the value the band sees beyond the image's edge
DILATION_RATIO = 0.02


def dilation_pixels(height: int, width: int, ratio: float = DILATION_RATIO) -> int:
    """The band width ``d`` of Detectron2's mask_to_boundary for an image of this size."""
    return max(1, int(round(ratio * math.sqrt(height ** 2 + width ** 2))))


def window(x: torch.Tensor, width: int, dim: int,
           reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``reduce`` (maximum or minimum) over every run of ``width`` consecutive values along ``dim``: the result is
    ``width - 1`` shorter there. Log-step (van Herk / Gil-Werman): doubling shifts 1, 2, 4, ... up to the largest
    power of two not above ``width``, then one shift for the remainder, so O(log width) elementwise operations."""
    span = 1
    while 2 * span <= width:
        x = reduce(x.narrow(dim, 0, x.shape[dim] - span), x.narrow(dim, span, x.shape[dim] - span))
        span *= 2
    if (rest := width - span) > 0:  # runs of span at i and at i + rest cover the run of width at i
        x = reduce(x.narrow(dim, 0, x.shape[dim] - rest), x.narrow(dim, rest, x.shape[dim] - rest))
    return x


def band(labels: torch.Tensor, d: int) -> torch.Tensor:
    """Boolean NxHxW: the pixel is in the boundary band of its own label (another label, or the outside of the
    image, lies within d pixels). Labels are 8-bit (0..254 classes, 255 ignored): outside counts as 255, which
    differs from every class. The (2d+1)-square around a pixel holds the pixel itself, so it holds another value
    exactly when its maximum and minimum differ."""
    padded = F.pad(labels.to(torch.uint8)[:, None], (d, d, d, d), value=OUTSIDE)[:, 0]
    width = 2 * d + 1
    high = window(window(padded, width, -1, torch.maximum), width, -2, torch.maximum)
    low = window(window(padded, width, -1, torch.minimum), width, -2, torch.minimum)
    return high != low


def band_cpu(labels: np.ndarray, d: int) -> np.ndarray:
    """``band`` of NxHxW labels in numpy. The (2d+1)-square around a pixel holds another value exactly when it holds
    two neighbouring pixels of different values (one of them differs from the pixel; conversely a path from the
    pixel to the other value inside the square changes value somewhere), so the band is the window OR of the maps
    of horizontal and of vertical neighbours that differ, on bits packed 64 to a word (8 times less data)."""
    n, h, w = labels.shape
    padded = np.full((n, h + 2 * d, w + 2 * d), OUTSIDE, np.uint8)
    padded[:, d:d + h, d:d + w] = labels
    across = _packed(padded[:, :, 1:] != padded[:, :, :-1])  # pixel x against x + 1
    down = _packed(padded[:, 1:] != padded[:, :-1])  # pixel y against y + 1
    # a pair at (y, x) lies in the square of (y - d .. y + d) rows and columns: across pairs in its 2d+1 rows and
    # first 2d columns, down pairs in its first 2d rows and 2d+1 columns
    used = -(-w // 64)  # the words that hold the image's w columns
    across = _bits_or(_rows_or(across, 2 * d + 1), 2 * d)[..., :used]  # rows first: fewer rows to shift bits in
    down = _bits_or(_rows_or(down, 2 * d), 2 * d + 1)[..., :used]
    words = (across | down).astype("<u8", copy=False)
    return np.unpackbits(words.view(np.uint8), axis=-1, count=w, bitorder="little").view(bool)


def _packed(flags: np.ndarray) -> np.ndarray:
    """Boolean rows as little-endian 64-bit words: column x is bit x % 64 of word x // 64 (zeros past the end)."""
    packed = np.packbits(flags, axis=-1, bitorder="little")
    if spare := -packed.shape[-1] % 8:
        packed = np.concatenate((packed, np.zeros((*packed.shape[:-1], spare), np.uint8)), axis=-1)
    return packed.view("<u8")


def _bits_or(words: np.ndarray, width: int) -> np.ndarray:
    """Bit x of each row becomes the OR of its bits x .. x + width - 1 (log-step, as ``window``), in place."""
    span = 1
    while 2 * span <= width:
        _or_shifted(words, span)
        span *= 2
    if width > span:
        _or_shifted(words, width - span)
    return words


def _or_shifted(words: np.ndarray, shift: int) -> None:
    """OR into bit x of each row its bit x + shift (zeros past the end), in place."""
    whole, part = divmod(shift, 64)
    n = words.shape[-1] - whole
    if n <= 0:
        return
    if not part:
        words[..., :n] |= words[..., whole:]  # numpy buffers the overlap
        return
    low, high = words[..., whole:] >> np.uint64(part), words[..., whole + 1:] << np.uint64(64 - part)
    words[..., :n] |= low
    words[..., :n - 1] |= high


def _rows_or(words: np.ndarray, width: int) -> np.ndarray:
    """The OR over every run of ``width`` rows (axis -2), ``width - 1`` rows shorter (log-step, as ``window``)."""
    span = 1
    while 2 * span <= width:
        words = words[..., :-span, :] | words[..., span:, :]
        span *= 2
    if (rest := width - span) > 0:
        words = words[..., :-rest, :] | words[..., rest:, :]
    return words


@register_accumulator
class BoundaryIoU(Accumulator):
    """Per-class boundary intersections and unions over a split (pixels with an ignored label are dropped)."""

    metrics = (MetricEntry(
        "bIoU", "Boundary IoU: IoU of the bands within d pixels inside each class's ground-truth and predicted "
        "contours, d = dilation_ratio x image diagonal", "dataset-level counts, NaN classes out of the mean; ignored "
        "pixels dropped after the bands are drawn", "definition of Cheng et al. CVPR 2021 boundary_iou "
        "(boundary-iou-api / Detectron2 mask_to_boundary, not on PyPI; per-class counts checked by hand)"),)
    summed = ("intersection", "union")

    @classmethod
    def build(cls, setup: Setup) -> "BoundaryIoU":
        return cls(setup.info.num_classes, setup.device, setup.eval.boundary_dilation)

    def __init__(self, num_classes: int, device: torch.device | str = "cpu",
                 dilation_ratio: float = DILATION_RATIO) -> None:
        self.num_classes, self.dilation_ratio = num_classes, dilation_ratio
        self.intersection = torch.zeros(num_classes, dtype=torch.int64, device=device)
        self.union = torch.zeros(num_classes, dtype=torch.int64, device=device)
        self.dilations: set[int] = set()

    @torch.no_grad()
    def update(self, batch: Batch) -> None:
        """Add NxHxW predicted and ground-truth class maps (targets >= num_classes are ignored)."""
        pred, target, k = batch.pred, batch.target, self.num_classes
        d = dilation_pixels(*target.shape[-2:], self.dilation_ratio)
        self.dilations.add(d)
        valid = target < k
        target, pred = target.to(torch.uint8), pred.to(torch.uint8)  # 8-bit labels (values above k: void)
        gt_band, pred_band = band(torch.cat((target, pred)), d).split(target.shape[0])  # both maps in one pass
        # One joint count of (class whose ground-truth band holds the pixel, class whose predicted band holds it),
        # k for none: its rows give the ground-truth bands, its columns the predicted, its diagonal both. The keys
        # are made with 8-bit arithmetic (modulo 256: (x - k) * 1 + k = x, (x - k) * 0 + k = k), which torch runs
        # several times faster on the CPU than torch.where with a scalar.
        void = torch.full_like(target, k)
        gt_key = (target - void).mul_(gt_band & valid).add_(void)
        pred_key = (torch.minimum(pred, void) - void).mul_(pred_band & valid).add_(void)
        joint = gt_key.to(torch.int32).mul_(k + 1).add_(pred_key)
        self.add(torch.bincount(joint.reshape(-1), minlength=(k + 1) ** 2).view(k + 1, k + 1))

    def add(self, joint: torch.Tensor | np.ndarray) -> None:
        """Add the (K+1)x(K+1) count of (class whose ground-truth band holds a labelled pixel, class whose predicted
        band holds it), K for none."""
        joint, k = torch.as_tensor(joint), self.num_classes
        gt_count, pred_count, both = joint[:k].sum(1), joint[:, :k].sum(0), joint.diagonal()[:k]
        self.intersection += both.to(self.intersection.device)
        self.union += (gt_count + pred_count - both).to(self.union.device)

    def add_banded(self, counts: np.ndarray, classes: np.ndarray, d: int) -> None:
        """Add one image's 4 x (K+1) x V pixel counts of (ground-truth band, predicted band: 2 x gt + pred) x
        ground-truth class (K: ignored) x predicted value, whose class is ``classes[value]`` (K: void); ``d``: the
        band width they were drawn with (``dilation_pixels``)."""
        k = self.num_classes
        self.dilations.add(d)
        by_class = np.zeros((4, k + 1, k + 1), np.int64)  # predicted values summed into their classes
        np.add.at(by_class.transpose(2, 0, 1), classes, counts.transpose(2, 0, 1))
        by_class[:, k] = 0  # ignored ground truth: in no band
        joint = np.zeros((k + 1, k + 1), np.int64)
        joint[:k] += by_class[3, :k]  # in both bands
        joint[:k, k] += by_class[2, :k].sum(1)  # in the ground truth's band only
        joint[k] += by_class[1].sum(0)  # in the prediction's band only
        self.add(joint)

    def per_class(self) -> np.ndarray:
        """Boundary IoU per class, NaN where neither band holds a pixel of the class."""
        inter, union = self.intersection.cpu().numpy(), self.union.cpu().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / np.maximum(union, 1), np.nan)

    def merge(self) -> None:
        super().merge()
        from segbench.core.distributed import gather

        if len(gathered := gather(self.dilations)) > 1:
            self.dilations = set().union(*gathered)

    def compute(self, split: Split) -> Scores:
        per_class = self.per_class()
        kept = per_class[~np.isnan(per_class)]
        return Scores({"bIoU": float(kept.mean()) if kept.size else float("nan")}, {"boundary": {
            "dilation_ratio": self.dilation_ratio, "dilation_pixels": sorted(self.dilations),
            "intersection": self.intersection.cpu().tolist(), "union": self.union.cpu().tolist(),
            "IoU": {name: None if np.isnan(v) else float(v) for name, v in zip(split.classes, per_class)}}})
