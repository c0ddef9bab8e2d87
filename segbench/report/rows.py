"""Leaderboard rows: one per model, from results.json files or MLflow runs, with the settings behind them.

Quality stays in fractions, as in results.json. Within a suite, the newest row per (model, config hash,
hardware) is kept, so rows with different settings or hardware stay apart.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pandas as pd

from segbench.errors import UserError
from segbench.metrics.confusion import METRICS, convention
from segbench.metrics.statistics import bootstrap
from segbench.results.find import find_results, mlflow_frame
from segbench.results.schema import ModelRecord, Results, read_results
from segbench.results.tracking import PARENT_TAG
from segbench.results.typed import plain

SETTINGS = {  # settings that make numbers comparable: row column -> label
    "config_hash": "config hash",
    "accumulation": "accumulation",
    "absent_class": "absent classes",
    "ignore_index": "ignore index",
    "label_space": "label space",
    "eval_mode": "evaluation mode",
    "eval_images": "evaluated images",
    "precision": "precision",
    "memory_format": "memory format",
    "compile": "compile",
    "batch_size": "speed batch size",
    "input_shape": "speed input",
    "hardware": "hardware",
    "device": "device",
    "threads": "threads",
    "torch": "torch",
    "segbench": "segbench",
    "git_commit": "git commit",
}
NOT_IN_CSV = ("time", "confusion", "classes", "overlays", "robustness")  # row columns for the page only


def _number(value) -> float:
    """A number from JSON or MLflow; null, missing or text becomes NaN."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def _get(run: pd.Series, key: str):
    """A value of an MLflow search row, None when absent or NaN."""
    value = run.get(key)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _overlays(record: ModelRecord, source: str) -> list[str]:
    """The overlay PNGs saved with a model's predictions (eval.save_predictions), as paths beside ``source``."""
    saved = record.passport.predictions if record.passport else None
    folder = Path(source).parent
    return [str(folder / name) for name in saved.overlays] if saved else []


def model_rows(results: Results, source: str, time: float = math.nan) -> list[dict]:
    """One leaderboard row per model of a results.json, with its settings and per-class IoU."""
    env = results.environment
    conv = results.convention
    classes = results.dataset.classes if results.dataset else []
    rows = []
    for record in results.models:
        speed = record.first_speed
        evaluation = record.evaluation
        row = {"suite": results.suite.name, "model": record.name, "arch": record.arch, "backbone": record.backbone}
        row.update({name: _number(record.metrics.get(name)) for name in METRICS})
        interval = None
        if record.per_image and record.per_image.intersection:
            interval = bootstrap(record.per_image.intersection, record.per_image.union)
        row["mIoU_low"] = interval.low if interval else math.nan
        row["mIoU_high"] = interval.high if interval else math.nan
        row.update({
            "images_per_second": _number(speed.images_per_second if speed else None),
            "latency_ms_p50": _number(speed.latency_ms_p50 if speed else None),
            "params": _number(record.params),
            "gflops_per_image": _number(speed.gflops_per_image if speed else None),
            "config_hash": results.suite.config_hash,
            "accumulation": conv.accumulation if conv else None,
            "absent_class": conv.absent_class if conv else None,
            "ignore_index": conv.ignore_index if conv else None,
            "label_space": conv.label_space if conv else None,
            "eval_mode": evaluation.mode if evaluation else None,
            "eval_images": evaluation.images if evaluation else None,
            "precision": speed.precision if speed else None,
            "memory_format": speed.memory_format if speed else None,
            "compile": speed.compile if speed else None,
            "batch_size": speed.batch_size if speed else None,
            "input_shape": "x".join(map(str, speed.input_shape)) if speed and speed.input_shape else None,
            "hardware": env.device_name if env else None,
            "device": env.device if env else None,
            "threads": env.threads if env else None,
            "torch": env.packages.get("torch") if env else None,
            "segbench": env.segbench if env else None,
            "git_commit": (env.git_commit or "")[:12] or None if env else None,
            "mlflow_run_id": record.mlflow_run_id,
            "source": source,
            "time": time,
            "confusion": record.confusion_matrix,
            "classes": list(classes),
            "overlays": _overlays(record, source),
            "robustness": plain(record.robustness) if record.robustness else None,
        })
        iou = {scores.name: scores.IoU for scores in record.per_class}
        row.update({f"IoU.{name}": _number(iou.get(name)) for name in classes})
        rows.append(row)
    return rows


def frame_rows(frame: pd.DataFrame) -> list[dict]:
    """Leaderboard rows from ``sources.mlflow_frame``: what MLflow holds (no per-image data, so no interval)."""
    rows = []
    for _, run in frame.iterrows():
        get = partial(_get, run)
        classes = sorted(key[len("metrics.IoU."):] for key in frame.columns
                         if key.startswith("metrics.IoU.") and get(key) is not None)
        ignore_index = int(get("parent.params.data.ignore_index") or 255)
        dataset = get("parent.params.data.name") or "?"
        conv = convention(len(classes), ignore_index, f"{dataset}-{len(classes)}")
        start = get("start_time")
        row = {"suite": get("parent.tags.segbench.suite"), "model": get("params.model"), "arch": get("params.arch"),
               "backbone": get("params.backbone")}
        row.update({name: _number(get(f"metrics.{name}")) for name in METRICS})
        row.update({
            "mIoU_low": math.nan, "mIoU_high": math.nan,
            "images_per_second": _number(get("metrics.images_per_second")),
            "latency_ms_p50": _number(get("metrics.latency_ms_p50")),
            "params": float(get("params.params") or "nan"),
            "gflops_per_image": math.nan,
            "config_hash": get("parent.tags.segbench.suite_hash"),
            "accumulation": conv["accumulation"], "absent_class": conv["absent_class"],
            "ignore_index": ignore_index, "label_space": conv["label_space"],
            "eval_mode": get("parent.params.eval.mode"), "eval_images": None,
            "precision": get("parent.params.bench.precision"), "memory_format": None, "compile": None,
            "batch_size": None, "input_shape": None,
            "hardware": get("parent.tags.segbench.hardware"), "device": get("parent.tags.segbench.device"),
            "threads": None, "torch": None, "segbench": get("parent.tags.segbench.version"),
            "git_commit": (get("parent.tags.mlflow.source.git.commit") or "")[:12] or None,
            "mlflow_run_id": get("run_id"),
            "source": f"MLflow run {get(f'tags.{PARENT_TAG}')}",
            "time": start.timestamp() if start is not None else math.nan,
            "confusion": None, "classes": classes, "overlays": [], "robustness": None,
        })
        row.update({f"IoU.{name}": _number(get(f"metrics.IoU.{name}")) for name in classes})
        rows.append(row)
    return rows


def collect(sources: list[Path | str], tracking_uri: str | None = None, use_mlflow: bool = False) -> pd.DataFrame:
    """All rows from results.json files (and MLflow when asked), newest per model, config and hardware kept."""
    rows = []
    for source in sources:
        for path in find_results(source):
            rows += model_rows(read_results(path), str(path), path.stat().st_mtime)
    if use_mlflow or tracking_uri:
        rows += frame_rows(mlflow_frame(tracking_uri))
    if not rows:
        raise UserError("no results to report: name results.json files or folders, or a tracking URI")
    frame = pd.DataFrame(rows)
    # The same MLflow run from a results.json and from MLflow: keep the file's richer row.
    known = frame["mlflow_run_id"].notna()
    frame = pd.concat([frame[~known], frame[known].drop_duplicates("mlflow_run_id", keep="first")])
    frame = frame.sort_values("time", na_position="first")
    frame = frame.drop_duplicates(["suite", "model", "config_hash", "hardware"], keep="last")
    return frame.sort_values(["suite", "mIoU"], ascending=[True, False], na_position="last").reset_index(drop=True)


def labels(frame: pd.DataFrame) -> pd.Series:
    """Model names, with the config hash and hardware appended where a suite's rows have several."""
    label = frame["model"].astype(str)
    for column, width in (("config_hash", 6), ("hardware", 24)):
        if frame[column].nunique(dropna=False) > 1:
            label = label + " @" + frame[column].astype(str).str[:width]
    return label


def setting_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """The distinct settings of a suite's rows as text, one row per group."""
    settings = frame[list(SETTINGS)].map(lambda v: "-" if v is None or v != v else str(v))
    return settings.drop_duplicates().reset_index(drop=True)
