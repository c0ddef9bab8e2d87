"""The one protocol every metric follows: ``update`` on a batch, ``merge`` across processes, ``compute`` the numbers.

An accumulator is built for one evaluation (``build`` returns None where the metric does not apply), sees every
batch once (``update``), is merged over the processes of a torchrun job (``merge``: the tensors named in ``summed``
are all-reduced, the lists named in ``gathered`` concatenated in rank order, which with contiguous shards is the data
set's order) and reports its headline numbers and its part of the passport record (``compute``). The numbers it
reports are declared, with their definitions, in ``metrics``; ``segbench.metrics.registry.register_accumulator`` makes
them known. Adding a metric is one such class and one registration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are made: reading results needs no torch
    import torch
    from torch.utils.data import Dataset

    from segbench.config.schema import DataConfig, EvalConfig
    from segbench.data.base import DatasetInfo


@dataclass
class Batch:
    """One batch as every accumulator sees it."""

    pred: torch.Tensor  # NxHxW predicted class indices; a value >= K is void (a scored prediction that is no class)
    target: torch.Tensor  # NxHxW ground-truth class indices; a value >= K is ignored
    confidence: torch.Tensor | None = None  # NxHxW top-1 probability; None for prediction files
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # NxHxW maps a data set adds (e.g. instance ids)


@dataclass
class Setup:
    """What an accumulator is built from: the data set's labels, the suite's settings, the split, the device."""

    info: "DatasetInfo"
    eval: "EvalConfig"
    data: "DataConfig"
    dataset: "Dataset | None" = None
    device: torch.device | str = "cpu"
    confidences: bool = True  # False for scored prediction files, which carry none


@dataclass
class Split:
    """The whole split's counts, which ``compute`` may read: the confusion matrix (ground truth on K rows; a K+1-th
    column counts void predictions), its scores and per-image intersections and unions, and the image ids."""

    classes: tuple[str, ...]
    matrix: np.ndarray
    scores: Any  # segbench.metrics.confusion.SegMetrics
    intersections: np.ndarray  # images x classes
    unions: np.ndarray
    ids: list[str] | None = None


@dataclass
class Scores:
    """What ``compute`` returns: headline numbers (registered names) and this metric's part of the passport record."""

    metrics: dict[str, float] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


class Accumulator:
    """Base of every metric accumulator (see the module docstring)."""

    metrics: ClassVar[tuple] = ()  # MetricEntry (or dicts of its fields) for each number ``compute`` reports
    summed: ClassVar[tuple[str, ...]] = ()  # tensor attributes summed over processes by ``merge``
    gathered: ClassVar[tuple[str, ...]] = ()  # list attributes concatenated in rank order by ``merge``
    reader: Any = None  # optional: index -> {name: HxW array}, maps the loader adds to each sample (Batch.maps)

    @classmethod
    def build(cls, setup: Setup) -> "Accumulator | None":
        """This metric's accumulator for the evaluation ``setup`` describes, or None where it does not apply."""
        return cls()

    def update(self, batch: Batch) -> None:
        """Add one batch."""

    def merge(self) -> None:
        """Combine the accumulators of all processes of a torch.distributed job (no-op otherwise)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        for name in self.summed:
            dist.all_reduce(getattr(self, name))
        if self.gathered:
            from segbench.core.distributed import gather

            for name in self.gathered:
                setattr(self, name, [item for part in gather(getattr(self, name)) for item in part])

    def compute(self, split: Split) -> Scores:
        """Headline numbers and record part, from this accumulator and the whole split's counts."""
        raise NotImplementedError
