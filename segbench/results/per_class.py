"""The per-class table of a model's scores, as runner.py and score.py put it in results.json and a CSV."""

from __future__ import annotations

import pandas as pd

from segbench.data.registry import DatasetInfo
from segbench.metrics.confusion import SegMetrics


def per_class_table(info: DatasetInfo, metrics: SegMetrics) -> pd.DataFrame:
    """One row per class: IoU, Dice, accuracy (NaN for absent classes) and ground-truth pixels."""
    return pd.DataFrame({
        "class": list(info.classes),
        "IoU": metrics.iou,
        "Dice": metrics.dice,
        "Acc": metrics.acc,
        "support": metrics.support,
    })
