"""The metric passport: every number beyond the confusion matrix, accumulated in the evaluation's one pass.

Streamed on the evaluation device (memory independent of the data set's size): Boundary IoU, the calibration
histogram, Cityscapes iIoU where instance maps exist; per-image scores come from the confusion matrix's
per-image counts; HD95 and NSD per case are computed on the CPU, for binary suites or when asked. Each
number is a ``segbench.metrics.confusion.REGISTRY`` entry that names its definition and the tool it equals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from segbench.config.schema import DataConfig, EvalConfig
from segbench.data.registry import DatasetInfo
from segbench.errors import UserError
from segbench.metrics import per_image
from segbench.metrics.boundary import BoundaryIoU
from segbench.metrics.calibration import Calibration, top1
from segbench.metrics.confusion import ConfusionMatrix, SegMetrics, nanmean
from segbench.metrics.instances import InstanceIoU, WithInstances
from segbench.metrics.surface import SurfaceCases


def check_passport_config(cfg: EvalConfig, data: DataConfig, num_classes: int) -> None:
    """Raise a UserError for passport settings that cannot work; called by config validation."""
    if not 0 < cfg.boundary_dilation < 1:
        raise UserError(f"eval.boundary_dilation: expected a share of the image diagonal in (0, 1), "
                        f"got {cfg.boundary_dilation}")
    if cfg.calibration_bins < 1:
        raise UserError(f"eval.calibration_bins: expected a positive integer, got {cfg.calibration_bins}")
    for cls in cfg.foreground_classes or []:
        if not 0 <= cls < num_classes:
            raise UserError(f"eval.foreground_classes: {cls} names no class (expected 0..{num_classes - 1})")
    if cfg.foreground_classes is not None and not cfg.foreground_classes:
        raise UserError("eval.foreground_classes: name at least one class index, or leave it unset")
    if cfg.surface and not foreground_classes(cfg, num_classes):
        raise UserError("eval.surface=true needs eval.foreground_classes (the classes whose surfaces are measured)")
    if not cfg.surface_tolerance >= 0:
        raise UserError(f"eval.surface_tolerance: expected a non-negative distance, got {cfg.surface_tolerance}")
    if data.spacing is not None and (len(data.spacing) != 2 or not min(data.spacing) > 0):
        raise UserError(f"data.spacing: expected [row, column] pixel sizes > 0, got {list(data.spacing)}")
    if cfg.overlays < 0:
        raise UserError(f"eval.overlays: expected a non-negative number of images, got {cfg.overlays}")


def foreground_classes(cfg: EvalConfig, num_classes: int) -> list[int]:
    """eval.foreground_classes, or class 1 for a 2-class suite, or none."""
    if cfg.foreground_classes is not None:
        return list(cfg.foreground_classes)
    return [1] if num_classes == 2 else []


@dataclass
class Passport:
    """The passport's accumulators for one evaluation; ``update`` returns the prediction it scored."""

    info: DatasetInfo
    boundary: BoundaryIoU
    calibration: Calibration
    foreground: list[int]
    surface: SurfaceCases | None = None
    instances: InstanceIoU | None = None
    instance_files: list = field(default_factory=list)
    surface_unit: str = "pixels"

    @classmethod
    def build(cls, cfg: EvalConfig, data: DataConfig, info: DatasetInfo, dataset: Dataset,
              device: torch.device | str) -> "Passport | None":
        """The passport the suite asks for (None with eval.passport=false)."""
        if not cfg.passport:
            return None
        k = info.num_classes
        foreground = foreground_classes(cfg, k)
        want_surface = cfg.surface if cfg.surface is not None else k == 2
        surface = SurfaceCases(foreground, cfg.surface_tolerance, data.spacing) if want_surface else None
        instances, files = None, []
        if info.name == "cityscapes" and hasattr(dataset, "samples"):
            from segbench.data.layouts.cityscapes import instance_files, instance_label_ids

            files = instance_files(dataset.samples)
            if any(files):
                instances = InstanceIoU(info.classes, instance_label_ids(), info.categories, device)
        return cls(info, BoundaryIoU(k, device, cfg.boundary_dilation), Calibration(cfg.calibration_bins, device),
                   foreground, surface, instances, files, "spacing" if data.spacing else "pixels")

    def dataset(self, dataset: Dataset) -> Dataset:
        """``dataset``, yielding instance-id maps as a third element where the passport scores iIoU."""
        return WithInstances(dataset, self.instance_files) if self.instances is not None else dataset

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor, instances: torch.Tensor | None = None,
               probabilities: bool = False) -> torch.Tensor:
        """Add a batch of NxKxHxW logits (or probabilities) against NxHxW targets; return the argmax prediction."""
        confidence, pred = top1(logits, probabilities)
        k = self.info.num_classes
        self.calibration.update(confidence, pred, target, k)
        self.boundary.update(pred, target)
        if self.instances is not None and instances is not None:
            self.instances.update(pred, instances)
        if self.surface is not None:
            self.surface.update(pred, target, self.info.ignore_index)
        return pred

    def all_reduce(self) -> None:
        for part in (self.boundary, self.calibration, self.instances):
            if part is not None:
                part.all_reduce()

    def merge_ranks(self, first: int) -> None:
        """Under torchrun, after ``all_reduce``: every rank's per-case rows, renumbered from ``first`` (the rank's
        first sample), in data set order."""
        from segbench.core.distributed import gather

        if self.surface is not None:
            self.surface.rows = [row for rows in gather([(first + case, *rest) for case, *rest in self.surface.rows])
                                 for row in rows]
            self.surface.cases = sum(gather(self.surface.cases))

    def finish(self, confusion: ConfusionMatrix, scores: SegMetrics, intersections: np.ndarray, unions: np.ndarray,
               ids: list[str] | None = None) -> tuple[dict[str, float], dict]:
        """(headline numbers for ``metrics``, the typed ``passport`` record) of this evaluation, from the whole
        split's per-image intersections and unions."""
        matrix = confusion.matrix.cpu().numpy()
        return finish_scores(self.info, matrix, scores, intersections, unions, self.foreground, self.boundary,
                             self.calibration, self.instances, self.surface, ids, self.surface_unit)


def finish_scores(info: DatasetInfo, matrix: np.ndarray, scores: SegMetrics, intersections: np.ndarray,
                  unions: np.ndarray, foreground: list[int], boundary: BoundaryIoU | None = None,
                  calibration: Calibration | None = None, instances: InstanceIoU | None = None,
                  surface: SurfaceCases | None = None, ids: list[str] | None = None,
                  surface_unit: str = "pixels") -> tuple[dict[str, float], dict]:
    """Headline numbers and the passport record from whichever accumulators an evaluation (or score) had."""
    metrics = per_image.summary(intersections, unions)
    record: dict = {}
    if boundary is not None:
        per_class = boundary.per_class()
        metrics["bIoU"] = nanmean(per_class)
        record["boundary"] = boundary.record() | {"IoU": dict(zip(info.classes, _floats(per_class)))}
    if calibration is not None:
        metrics["ECE"] = calibration.ece()
        record["calibration"] = calibration.record()
    if instances is not None:
        found = instances.compute(matrix)
        metrics.update(iIoU=found["iIoU"], iIoU_category=found["iIoU_category"])
        record["instances"] = {"classes": found["classes"], "categories": found["categories"]}
    if foreground:
        metrics["fgIoU"] = nanmean(scores.iou[foreground])
        metrics["fgDice"] = nanmean(scores.dice[foreground])
        cases = per_image.case_table(intersections, unions, foreground, info.classes, ids, surface)
        metrics["case_Dice"] = nanmean(np.array([row["Dice"] for row in cases], dtype=np.float64))
        record["foreground"] = [info.classes[c] for c in foreground]
        record["per_case"] = cases
    if surface is not None:
        metrics.update(surface.means())
        record["surface"] = {"tolerance": surface.tolerance, "unit": surface_unit,
                             "spacing": list(surface.spacing) if surface.spacing else None}
    return metrics, record


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


def passport_record(result, scores: SegMetrics, dataset: Dataset, intersections: np.ndarray, unions: np.ndarray,
                    writer=None, out_dir=None) -> tuple[dict[str, float], dict | None]:
    """(extra headline metrics, the model record's ``passport``) of an EvalResult, given the whole split's
    per-image intersections and unions; ({}, None) when it was off, apart from a PredictionWriter's record."""
    from segbench.data.base import sample_ids

    metrics, record = {}, None
    if result.passport is not None:
        metrics, record = result.passport.finish(result.confusion, scores, intersections, unions,
                                                 sample_ids(dataset))
    if writer is not None:
        record = (record or {}) | {"predictions": writer.record(out_dir)}
    return metrics, record
