"""The metric passport: every number beyond the confusion matrix, accumulated in the evaluation's one pass.

The passport builds every registered accumulator (segbench.metrics.registry) and those the data set provides
(``DatasetEntry.metrics``, e.g. Cityscapes iIoU) that apply to the evaluation, feeds each batch to all of them,
merges them across processes and collects their numbers and records. Streamed on the evaluation device (memory
independent of the data set's size), except HD95 and NSD per case, computed on the CPU for binary suites or when
asked. Each number is a registry entry that names its definition and the tool it equals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from segbench.config.schema import DataConfig, EvalConfig
from segbench.data.registry import DATASETS, DatasetInfo
from segbench.errors import UserError
from segbench.metrics.calibration import top1
from segbench.metrics.confusion import ConfusionMatrix, SegMetrics
from segbench.metrics.protocol import Batch, Scores, Setup, Split
from segbench.metrics.registry import accumulators
from segbench.metrics.surface import foreground_classes


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


def data_set_metrics(info: DatasetInfo) -> tuple[type, ...]:
    """The accumulators the data set named by ``info`` provides for its own metrics."""
    return DATASETS.get(info.name).metrics if info.name in DATASETS else ()


class WithMaps(Dataset):
    """``base``'s (image, mask) pairs with a third element: the per-pixel maps the passport's readers add."""

    def __init__(self, base: Dataset, readers: list) -> None:
        self.base, self.readers = base, readers

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        image, mask = self.base[index]
        maps = {}
        for reader in self.readers:
            for name, values in reader(index, tuple(mask.shape)).items():
                if values.shape != tuple(mask.shape):
                    raise ValueError(f"sample {index}: its {name} map is {values.shape[1]}x{values.shape[0]}, its "
                                     f"mask {mask.shape[1]}x{mask.shape[0]}")
                maps[name] = torch.from_numpy(values)
        return image, mask, maps


@dataclass
class Passport:
    """The passport's accumulators for one evaluation."""

    info: DatasetInfo
    parts: list = field(default_factory=list)

    @classmethod
    def build(cls, cfg: EvalConfig, data: DataConfig, info: DatasetInfo, dataset: Dataset | None,
              device: torch.device | str, confidences: bool = True) -> "Passport | None":
        """The passport the suite asks for (None with eval.passport=false); ``confidences``: False for prediction
        files, which carry none."""
        if not cfg.passport:
            return None
        setup = Setup(info, cfg, data, dataset, device, confidences)
        kinds = [kind for kind in accumulators() if kind is not ConfusionMatrix] + list(data_set_metrics(info))
        return cls(info, [part for kind in kinds if (part := kind.build(setup)) is not None])

    def dataset(self, dataset: Dataset) -> Dataset:
        """``dataset``, yielding the per-pixel maps the accumulators read (e.g. instance ids) as a third element."""
        readers = [part.reader for part in self.parts if part.reader is not None]
        return WithMaps(dataset, readers) if readers else dataset

    @staticmethod
    def batch(logits: torch.Tensor, target: torch.Tensor, maps: dict | None = None,
              probabilities: bool = False) -> Batch:
        """The Batch of NxKxHxW logits (or probabilities) against NxHxW targets: the argmax and its confidence."""
        confidence, pred = top1(logits, probabilities)
        return Batch(pred, target, confidence, maps or {})

    @torch.no_grad()
    def update(self, batch: Batch) -> None:
        for part in self.parts:
            part.update(batch)

    def merge(self) -> None:
        """Combine every accumulator over the processes of a torchrun job (no-op otherwise)."""
        for part in self.parts:
            part.merge()

    def finish(self, split: Split) -> tuple[dict[str, float], dict]:
        """(headline numbers for ``metrics``, the ``passport`` record) of this evaluation."""
        metrics, record = {}, {}
        for part in self.parts:
            scores = part.compute(split)
            scores = Scores(*scores) if isinstance(scores, tuple) else scores
            metrics.update(scores.metrics)
            record.update(scores.record)
        return metrics, record


def passport_record(result, scores: SegMetrics, dataset: Dataset, intersections: np.ndarray, unions: np.ndarray,
                    writer=None, out_dir=None) -> tuple[dict[str, float], dict | None]:
    """(extra headline metrics, the model record's ``passport``) of an EvalResult, given the whole split's
    per-image intersections and unions; ({}, None) when it was off, apart from a PredictionWriter's record."""
    from segbench.data.base import sample_ids

    metrics, record = {}, None
    if result.passport is not None:
        split = Split(result.passport.info.classes, result.confusion.matrix.cpu().numpy(), scores, intersections,
                      unions, sample_ids(dataset))
        metrics, record = result.passport.finish(split)
    if writer is not None:
        record = (record or {}) | {"predictions": writer.record(out_dir)}
    return metrics, record
