"""The metric passport of ``segbench score``: prediction PNGs in one label space, scored image by image on the CPU.

The same accumulators as an evaluation's passport, fed one image at a time. Predictions carry no confidences, so
there is no calibration error; a predicted value that is no class is void (index K), which the boundary bands and
iIoU count as a miss, as the official Cityscapes evaluation does. An image's heavy work (its class map, maps,
boundary bands and one joint pixel count) is ``prepare``d in a reader thread; ``add`` then feeds the accumulators
in image order, the boundary and per-image scores from counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from segbench.config.schema import SuiteConfig
from segbench.data.registry import DatasetInfo
from segbench.metrics.boundary import BoundaryIoU, band_cpu, dilation_pixels
from segbench.metrics.confusion import SegMetrics
from segbench.metrics.passport import Passport
from segbench.metrics.per_image import WangImageScores
from segbench.metrics.protocol import Batch, Split

VALUES = 256  # prediction PNGs are 8-bit
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_freed_memory() -> None:
    """Let glibc keep the memory one image's scoring frees (tens of MB at 2048x1024) for the next, rather than give
    it back to the system and fault it in again page by page (thousands of page faults an image); elsewhere a
    no-op. Process-wide: blocks under 32 MB come from the heap, which keeps up to 128 MB free; so only the
    ``segbench score`` command's own process calls it."""
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(M_MMAP_THRESHOLD, 32 << 20)
    mallopt(M_TRIM_THRESHOLD, 128 << 20)


def lookup(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[values]`` (Pillow's point table, several times faster, for 8-bit values and tables)."""
    if values.dtype == np.uint8 and values.ndim == 2 and table.dtype == np.uint8 and len(table) == VALUES:
        return np.array(Image.fromarray(values).point(table.tolist()))
    return table[values]


@dataclass
class ScoredImage:
    """One image as the passport adds it, made in a reader thread."""

    pred: np.ndarray  # HxW predicted class indices (K: void)
    target: np.ndarray  # HxW ground-truth class indices (K and above: ignored)
    maps: dict[str, np.ndarray]  # the maps the accumulators read (e.g. instance ids)
    classes: np.ndarray  # raw predicted value -> class index (K: void)
    counts: np.ndarray | None = None  # 4 x (K+1) x 256 pixels: (gt band, predicted band) x gt class x raw value
    dilation: int = 0  # the boundary bands' width d

    def raw(self, num_classes: int) -> np.ndarray | None:
        """The K x 256 count of ground-truth class against raw predicted value, if counted."""
        return None if self.counts is None else self.counts.sum(0)[:num_classes]


class ScoredPassport:
    """The passport's accumulators (without calibration) over scored predictions."""

    def __init__(self, cfg: SuiteConfig, info: DatasetInfo, dataset) -> None:
        self.info, self.ids = info, [s.id for s in dataset.samples]
        self.passport = Passport.build(cfg.eval, cfg.data, info, dataset, "cpu", confidences=False) \
            or Passport(info)
        parts = self.passport.parts
        self.readers = [part.reader for part in parts if part.reader is not None]
        self.boundary = next((part for part in parts if isinstance(part, BoundaryIoU)), None)
        self.wang = next((part for part in parts if isinstance(part, WangImageScores)), None)
        self.rest = [part for part in parts if part is not self.boundary and part is not self.wang]

    def maps(self, index: int, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """The per-pixel maps the accumulators read for image ``index`` (e.g. instance ids); safe in a thread."""
        return {name: values for reader in self.readers for name, values in reader(index, shape).items()}

    def prepare(self, index: int, values: np.ndarray, classes: np.ndarray, target: np.ndarray) -> ScoredImage:
        """Image ``index``'s raw 8-bit prediction ``values`` (``classes``: value -> class index, K for void) and
        ground truth (class indices; K and above ignored), ready for ``add``; safe in a thread."""
        k = self.info.num_classes
        image = ScoredImage(lookup(values, classes), target, self.maps(index, target.shape), classes)
        if self.boundary is not None:
            image.dilation = dilation_pixels(*target.shape, self.boundary.dilation_ratio)
            gt_band, pred_band = band_cpu(np.stack((target, image.pred)), image.dilation)
            # one count of (gt band, predicted band, gt class or K, raw value): the boundary's joint count, the
            # confusion matrix and the per-image scores are all sums of it
            key = ((gt_band.view(np.uint8) << 1) | pred_band.view(np.uint8)).astype(np.int32)
            key *= k + 1
            key += np.minimum(target, k)
            key <<= 8
            key |= values
            counts = torch.bincount(torch.from_numpy(key).reshape(-1), minlength=4 * (k + 1) * VALUES)
            image.counts = counts.numpy().reshape(4, k + 1, VALUES)
        return image

    def add(self, image: ScoredImage, matrix: np.ndarray) -> None:
        """Add a ``prepare``d image, in image order; ``matrix``: its K x (K+1) counts in this label space (ground
        truth on rows, a last column of void predictions)."""
        if self.boundary is not None:
            self.boundary.add_banded(image.counts, image.classes, image.dilation)
        if self.wang is not None:
            self.wang.add(matrix)
        batch = Batch(torch.from_numpy(image.pred)[None], torch.from_numpy(image.target)[None], None,
                      {name: torch.from_numpy(values)[None] for name, values in image.maps.items()})
        with torch.no_grad():
            for part in self.rest:
                part.update(batch)

    def finish(self, matrix: np.ndarray, scores: SegMetrics,
               per_image: tuple[np.ndarray, np.ndarray]) -> tuple[dict[str, float], dict]:
        """Headline numbers and the passport record, from the K x (K+1) matrix of the chosen label space."""
        return self.passport.finish(Split(self.info.classes, matrix, scores, per_image[0], per_image[1], self.ids))
