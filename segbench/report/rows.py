"""Leaderboard rows: one per model, from results.json files or MLflow runs, with the settings behind them.

Quality stays in fractions, as in results.json. Within a suite, the newest result per model, settings and hardware
is reported; older runs of the same model, settings and hardware are listed under "Left out" (the same MLflow run
read from its file and from the store is one run). Settings are the suite's configuration less which models ran
(``settings_key``), so runs of one schedule that ran different models share a leaderboard. Each
results.json is read, summarised into rows and let go before the next one: memory grows with the
rows, not with the per-image data.
"""

from __future__ import annotations

import math
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from segbench.errors import UserError
from segbench.metrics.confusion import METRICS
from segbench.metrics.statistics import bootstrap
from segbench.report.protocol import protocol, under_load
from segbench.results.find import download_artifact, find_results, store_client, stored_runs
from segbench.results.schema import RESULTS_NAME, ModelRecord, Results, read_results

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
NOT_IN_CSV = ("time", "confusion", "classes", "overlays", "robustness", "config")  # row columns for the page only


def _number(value) -> float:
    """A number from JSON or MLflow; null, missing or text becomes NaN."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def _overlays(record: ModelRecord, folder: Path) -> list[str]:
    """The overlay PNGs saved with a model's predictions (eval.save_predictions), as paths under ``folder``."""
    saved = record.passport.predictions if record.passport else None
    return [str(folder / name) for name in saved.overlays] if saved else []


def model_rows(results: Results, source: str, time: float = math.nan, folder: Path | None = None) -> list[dict]:
    """One leaderboard row per model of a results.json, with its settings, per-class IoU and mIoU interval
    (the per-image data summarised here, once); overlays are looked for under ``folder`` (default: beside
    ``source``)."""
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
            "peak_memory_mb": _number(speed.peak_memory_mb if speed else None),
            "under_load": under_load(speed.spread if speed else None),
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
            "confusion": np.asarray(record.confusion_matrix, np.int64) if record.confusion_matrix else None,
            "classes": list(classes),
            "overlays": _overlays(record, Path(source).parent if folder is None else folder),
            "robustness": record.robustness.model_dump() if record.robustness else None,
            "config": results.suite.config,
        })
        row.update(protocol(results, record))
        iou = {scores.name: scores.IoU for scores in record.per_class}
        row.update({f"IoU.{name}": _number(iou.get(name)) for name in classes})
        rows.append(row)
    return rows


def _cap(items: list[str], shown: int = 5) -> str:
    """The first ``shown`` items, then how many more."""
    more = len(items) - shown
    return "; ".join(items[:shown]) + (f"; and {more} more" if more > 0 else "")


@dataclass
class Collected:
    """The rows to report, per suite what was left out and why (said on the page and the console), and the rows of
    the older runs left out."""

    frame: pd.DataFrame
    notes: dict[str, list[str]] = field(default_factory=dict)
    older: pd.DataFrame | None = None  # older runs of a row's model, settings and hardware: left out


def file_rows(source: Path | str) -> list[dict]:
    """The rows of every results.json of ``source``, read one file at a time (its per-image data summarised
    into the rows' intervals and then dropped)."""
    rows = []
    for path in find_results(source):
        rows += model_rows(read_results(path), str(path), path.stat().st_mtime)
    return rows


def _download_overlays(client, results: Results, folder: Path) -> None:
    """The overlay PNGs its models logged to their MLflow runs, into ``folder`` at their results.json paths."""
    for record in results.models:
        saved = record.passport.predictions if record.passport else None
        for name in (saved.overlays if saved and record.mlflow_run_id else []):
            download_artifact(client, record.mlflow_run_id, Path(name).name, folder / Path(name).parent)


def mlflow_rows(uri: str | None, workspace: Path, notes: dict[str, list[str]]) -> list[dict]:
    """The rows of every FINISHED run or score in the MLflow store, from the results.json each logged (the same
    rows as from the file); runs that did not finish, or logged no results.json, are left out with a note."""
    client = store_client(uri)
    rows, unfinished = [], {}
    for run in stored_runs(client):
        if run.status != "FINISHED":
            unfinished.setdefault(run.suite, []).append(f"{run.run_id} ({run.status})")
            continue
        folder = workspace / run.run_id
        path = download_artifact(client, run.run_id, RESULTS_NAME, folder)
        if path is None:
            notes.setdefault(run.suite, []).append(f"MLflow run {run.run_id} finished without a {RESULTS_NAME} "
                                                   "artifact: left out")
            continue
        results = read_results(path)
        path.unlink()
        _download_overlays(client, results, folder)
        rows += model_rows(results, f"MLflow run {run.run_id}", run.start_time, folder)
    for suite, runs in unfinished.items():
        notes.setdefault(suite, []).append(f"{len(runs)} MLflow run(s) that did not finish left out: {_cap(runs)}")
    return rows


def collect(sources: list[Path | str], tracking_uri: str | None = None, use_mlflow: bool = False,
            workspace: Path | None = None) -> Collected:
    """All rows from results.json files (and from MLflow when asked; its artifacts downloaded into
    ``workspace``): one per model of every finished run; what was left out (runs that did not finish) is named in
    the notes."""
    rows, notes = [], {}
    for source in sources:
        rows += file_rows(source)
    if use_mlflow or tracking_uri:
        with tempfile.TemporaryDirectory() if workspace is None else nullcontext(workspace) as folder:
            rows += mlflow_rows(tracking_uri, Path(folder), notes)
    if not rows:
        raise UserError("no results to report: name results.json files or folders, or a tracking URI"
                        + (f" ({'; '.join(n for ns in notes.values() for n in ns)})" if notes else ""))
    frame = pd.DataFrame(rows)
    # The same MLflow run from a results.json and from MLflow: keep the file's row (its overlays are beside it).
    known = frame["mlflow_run_id"].notna()
    frame = pd.concat([frame[~known], frame[known].drop_duplicates("mlflow_run_id", keep="first")])
    frame, older = newest(frame, notes)
    frame = frame.sort_values(["suite", "mIoU"], ascending=[True, False], na_position="last").reset_index(drop=True)
    return Collected(frame, notes, older.reset_index(drop=True))


def newest(frame: pd.DataFrame, notes: dict[str, list[str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The newest row per suite, model, settings and hardware, and the older ones (each named in its suite's
    notes)."""
    frame = frame.sort_values("time", ascending=False, na_position="last", kind="stable")
    older = frame.duplicated(["suite", "model", "settings_key", "hardware"], keep="first")
    for _, row in frame[older].iterrows():
        notes.setdefault(row["suite"], []).append(
            f"{row['model']}: an older run of the same model, settings and hardware ({row['source']}, "
            f"{_when(row['time'])}, mIoU {_percent(row['mIoU'])})")
    return frame[~older], frame[older]


def _when(time: float) -> str:
    from datetime import datetime, timezone

    return "time unknown" if time != time else datetime.fromtimestamp(time, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _percent(value: float) -> str:
    return "-" if value != value else f"{100 * value:.2f} %"


def labels(frame: pd.DataFrame) -> pd.Series:
    """Model names, with the config hash and hardware appended where a suite's rows have several; unique."""
    label = frame["model"].astype(str)
    for column, width in (("config_hash", 6), ("hardware", 24)):
        if frame[column].nunique(dropna=False) > 1:
            label = label + " @" + frame[column].astype(str).str[:width]
    repeat = label.groupby(label).cumcount()  # labels still equal (hash or hardware prefixes): numbered
    return label.where(repeat == 0, label + " (" + (repeat + 1).astype(str) + ")")


def setting_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """The distinct settings of a suite's rows as text, one row per group."""
    settings = frame[list(SETTINGS)].map(lambda v: "-" if v is None or v != v else str(v))
    return settings.drop_duplicates().reset_index(drop=True)
