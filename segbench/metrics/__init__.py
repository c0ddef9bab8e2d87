"""Metrics: one accumulator protocol (``protocol``: update on a batch, merge across processes, compute) and one
registry of every reported number with its definition and the tool it equals (``registry``); the streaming
confusion matrix, the metric passport's accumulators (per-image, boundary, calibration, foreground and surface),
and bootstrap statistics. A new metric is one Accumulator class with ``@register_accumulator``; a data set's own metrics
(Cityscapes iIoU) live with the data set and are registered from ``DatasetEntry.metrics``. May import ``core``,
``config`` and ``data``: metrics know nothing of models or files."""

from segbench.metrics import (  # noqa: F401  (built-in metrics)
    boundary,
    calibration,
    confusion,
    per_image,
    robustness,
    surface,
)
from segbench.metrics.registry import register_data_set_metrics

register_data_set_metrics()
