"""results.json: the one machine-readable output of a run, and the leaderboard built from it."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from segbench.datasets import DatasetInfo
from segbench.metrics import METRICS, SegMetrics

SCHEMA_VERSION = 1


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null instead, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> Path:
    """Write ``data`` atomically: readers never see a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def per_class_table(info: DatasetInfo, metrics: SegMetrics) -> pd.DataFrame:
    """One row per class: IoU, Dice, accuracy (NaN for absent classes) and ground-truth pixels."""
    return pd.DataFrame({
        "class": list(info.classes),
        "IoU": metrics.iou,
        "Dice": metrics.dice,
        "Acc": metrics.acc,
        "support": metrics.support,
    })


def leaderboard(results: dict, columns: list[str] | None = None) -> pd.DataFrame:
    """Models of a results.json as rows, best mIoU first."""
    columns = columns or list(METRICS)
    rows = []
    for record in results["models"]:
        speed = (record.get("speed") or [{}])[0]
        row = {"model": record["name"]}
        row.update({name: record["metrics"].get(name) for name in columns})
        row["img/s"] = speed.get("images_per_second")
        row["params (M)"] = record["params"] / 1e6 if record.get("params") else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    sort_key = "mIoU" if "mIoU" in frame else columns[0]
    return frame.sort_values(sort_key, ascending=False, na_position="last").reset_index(drop=True)


def print_leaderboard(frame: pd.DataFrame, title: str) -> None:
    """Print the leaderboard as a table; metrics shown in percent, like MMSegmentation's logs."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in frame.columns:
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=column == "model")
    for _, row in frame.iterrows():
        cells = []
        for column, value in row.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("-")
            elif column in METRICS:
                cells.append(f"{100 * value:.2f}")
            elif isinstance(value, float):
                cells.append(f"{value:.2f}")
            else:
                cells.append(str(value))
        table.add_row(*cells)
    Console().print(table)


def speed_table(records: list[dict]) -> pd.DataFrame:
    """One row per model and batch size from speed records."""
    rows = []
    for record in records:
        for speed in record["speed"]:
            rows.append({
                "model": record["name"],
                "batch": speed["batch_size"],
                "img/s": speed["images_per_second"],
                "spread %": 100 * speed["spread"],
                "p50 ms": speed["latency_ms_p50"],
                "p90 ms": speed["latency_ms_p90"],
                "p99 ms": speed["latency_ms_p99"],
                "GFLOPs/img": speed["gflops_per_image"],
                "peak MB": speed["peak_memory_mb"],
                "params (M)": speed["params"] / 1e6,
                "precision": speed["precision"],
                "format": speed["memory_format"],
            })
    return pd.DataFrame(rows)


def print_speed_table(records: list[dict], title: str) -> None:
    print_leaderboard(speed_table(records), title)
