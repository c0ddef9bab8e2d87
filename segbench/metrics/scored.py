"""The metric passport of ``segbench score``: prediction PNGs in one label space, scored image by image on the CPU.

The same accumulators as an evaluation's passport, fed one image at a time. Predictions carry no confidences, so
there is no calibration error; a predicted value that is no class is void (index K), which the boundary bands and
iIoU count as a miss, as the official Cityscapes evaluation does.
"""

from __future__ import annotations

import numpy as np
import torch

from segbench.config.schema import SuiteConfig
from segbench.data.registry import DatasetInfo
from segbench.metrics.confusion import SegMetrics
from segbench.metrics.passport import Passport
from segbench.metrics.protocol import Batch, Split


class ScoredPassport:
    """The passport's accumulators (without calibration) over scored predictions."""

    def __init__(self, cfg: SuiteConfig, info: DatasetInfo, dataset) -> None:
        self.info, self.ids = info, [s.id for s in dataset.samples]
        self.passport = Passport.build(cfg.eval, cfg.data, info, dataset, "cpu", confidences=False) \
            or Passport(info)
        self.readers = [part.reader for part in self.passport.parts if part.reader is not None]

    def maps(self, index: int, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """The per-pixel maps the accumulators read for image ``index`` (e.g. instance ids); safe in a thread."""
        return {name: values for reader in self.readers for name, values in reader(index, shape).items()}

    def update(self, index: int, pred: np.ndarray, target: np.ndarray, maps: dict | None = None) -> None:
        """Add image ``index``: its predicted class indices (K: void), ground truth (class indices; K and above
        ignored) and its ``maps`` (read here when not given)."""
        maps = self.maps(index, target.shape) if maps is None else maps
        self.passport.update(Batch(torch.from_numpy(pred)[None], torch.from_numpy(target)[None], None,
                                   {name: torch.from_numpy(values)[None] for name, values in maps.items()}))

    def finish(self, matrix: np.ndarray, scores: SegMetrics,
               per_image: tuple[np.ndarray, np.ndarray]) -> tuple[dict[str, float], dict]:
        """Headline numbers and the passport record, from the K x (K+1) matrix of the chosen label space."""
        return self.passport.finish(Split(self.info.classes, matrix, scores, per_image[0], per_image[1], self.ids))
