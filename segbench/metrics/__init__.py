"""Metrics: one accumulator protocol (update on a batch, merge across processes, compute) and one registry
of every reported number with its definition and the tool it equals; the streaming confusion matrix, the metric
passport's accumulators, robustness summaries and bootstrap statistics. A new metric is one Accumulator class with
``@register_accumulator``; a data set's own metrics (Cityscapes iIoU) live with the data set and are registered
from ``DatasetEntry.metrics``. Metrics know nothing of models or files.

Owns: ``protocol`` (the accumulator protocol), ``registry`` (every reported number, its definition and accumulator),
``confusion`` (the streaming confusion matrix and the metrics derived from it), ``passport`` (every number beyond
the confusion matrix, in the evaluation's one pass), ``scored`` (the passport of ``segbench score``, image by image
on the CPU, its heavy work in the reader threads), ``per_image`` (per-image scores), ``boundary`` (Boundary IoU),
``calibration`` (expected calibration error), ``surface`` (HD95 and normalised surface Dice), ``robustness`` (mPC
and rPC), ``statistics`` (bootstrap intervals).
Imports: segbench.errors, segbench.core, segbench.config, segbench.data
"""

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
