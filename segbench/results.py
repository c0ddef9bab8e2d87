"""Pieces runner.py and score.py build a results.json from, and the version-1 writer they call today.

The schema, its reader and its version-2 writer are in segbench.schema; console tables in segbench.console.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from segbench.console import leaderboard, print_leaderboard, print_speed_table  # noqa: F401 (runner.py's imports)
from segbench.datasets import DatasetInfo
from segbench.metrics import SegMetrics
from segbench.schema import plain
from segbench.utils import atomic_write

SCHEMA_VERSION = 1  # what write_json's callers put in their dicts; schema.write_results writes version 2


def write_json(path: Path, data: dict) -> Path:
    """Write ``data`` as is (NaN as null), atomically. To be replaced by ``schema.write_results``."""
    return atomic_write(path, json.dumps(plain(data), indent=2, allow_nan=False) + "\n")


def per_class_table(info: DatasetInfo, metrics: SegMetrics) -> pd.DataFrame:
    """One row per class: IoU, Dice, accuracy (NaN for absent classes) and ground-truth pixels."""
    return pd.DataFrame({
        "class": list(info.classes),
        "IoU": metrics.iou,
        "Dice": metrics.dice,
        "Acc": metrics.acc,
        "support": metrics.support,
    })
