"""The metric passport of ``segbench score``: prediction PNGs in one label space, scored image by image on the CPU.

Predictions carry no confidences, so there is no calibration error; a predicted value that is no class is
void (index K), which the boundary bands and iIoU count as a miss, as the official Cityscapes evaluation does.
"""

from __future__ import annotations

import numpy as np
import torch

from segbench.config.schema import SuiteConfig
from segbench.data.registry import DatasetInfo
from segbench.metrics.boundary import BoundaryIoU
from segbench.metrics.confusion import SegMetrics
from segbench.metrics.instances import InstanceIoU, read_instance_ids
from segbench.metrics.passport import finish_scores, foreground_classes
from segbench.metrics.surface import SurfaceCases


class ScoredPassport:
    """Boundary IoU, iIoU (Cityscapes instance maps) and per-case surface metrics of scored predictions."""

    def __init__(self, cfg: SuiteConfig, info: DatasetInfo, dataset) -> None:
        k = info.num_classes
        self.info, self.ids = info, [s.id for s in dataset.samples]
        self.foreground = foreground_classes(cfg.eval, k)
        self.boundary = BoundaryIoU(k, "cpu", cfg.eval.boundary_dilation)
        want_surface = cfg.eval.surface if cfg.eval.surface is not None else k == 2
        self.surface = SurfaceCases(self.foreground, cfg.eval.surface_tolerance, cfg.data.spacing) \
            if want_surface else None
        self.unit = "spacing" if cfg.data.spacing else "pixels"
        self.instances, self.files = None, []
        if info.name == "cityscapes":
            from segbench.data.layouts.cityscapes import instance_files, instance_label_ids

            self.files = instance_files(dataset.samples)
            if any(self.files):
                self.instances = InstanceIoU(info.classes, instance_label_ids(), info.categories)

    def update(self, index: int, pred: np.ndarray, target: np.ndarray) -> None:
        """Add image ``index``: its predicted class indices (K: void) and ground truth (class indices)."""
        pred_t, target_t = torch.from_numpy(pred)[None], torch.from_numpy(target)[None]
        self.boundary.update(pred_t, target_t)
        if self.instances is not None and self.files[index] is not None:
            self.instances.update(pred_t, torch.from_numpy(read_instance_ids(self.files[index]))[None])
        if self.surface is not None:
            self.surface.update(pred_t, target_t, self.info.ignore_index)

    def finish(self, matrix: np.ndarray, scores: SegMetrics,
               per_image: tuple[np.ndarray, np.ndarray]) -> tuple[dict[str, float], dict]:
        """Headline numbers and the passport record, from the K x (K+1) matrix of the chosen label space."""
        return finish_scores(self.info, matrix, scores, per_image[0], per_image[1], self.foreground,
                             self.boundary, None, self.instances, self.surface, self.ids, self.unit)
