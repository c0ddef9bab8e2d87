"""A run's typed results as pandas tables (``Results.leaderboard()``, ``.per_class()``, ``.speed()``,
``.robustness()``) and its confusion matrices as arrays (``.confusion(model)``): the console's leaderboard, and what
results.json holds per model, in the units it holds them (quality as fractions)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from segbench.errors import UserError, unknown
from segbench.metrics.confusion import METRICS

if TYPE_CHECKING:
    from segbench.results.schema import ModelRecord, Results


def leaderboard(results: Results, columns: list[str] | None = None) -> pd.DataFrame:
    """Models of typed results as rows (quality as fractions), best mIoU first."""
    columns = columns or list(METRICS)
    rows = []
    for record in results.models:
        speed = record.first_speed
        row = {"model": record.name}
        row.update({name: record.metrics.get(name) for name in columns})
        row["img/s"] = speed.images_per_second if speed else None
        row["params (M)"] = record.params / 1e6 if record.params else None
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["model", *columns, "img/s", "params (M)"])
    sort_key = "mIoU" if "mIoU" in frame else columns[0]
    return frame.sort_values(sort_key, ascending=False, na_position="last").reset_index(drop=True)


def per_class(results: Results) -> pd.DataFrame:
    """One row per model and class: IoU, Dice, Acc (fractions, NaN for a class absent from ground truth and
    prediction) and support (ground-truth pixels), as in results.json and the per_class_*.csv files."""
    rows = [{"model": record.name, "class": scores.name, "IoU": scores.IoU, "Dice": scores.Dice, "Acc": scores.Acc,
             "support": scores.support} for record in results.models for scores in record.per_class]
    frame = pd.DataFrame(rows, columns=["model", "class", "IoU", "Dice", "Acc", "support"])
    return frame.astype({"IoU": float, "Dice": float, "Acc": float})


def speed(results: Results) -> pd.DataFrame:
    """One row per model and speed measurement (backend and batch size), every field of its speed record; empty
    when nothing was timed (``bench.enabled=false``)."""
    rows = [{"model": record.name, **measured.model_dump(exclude={"extra", "backend_details"})}
            for record in results.models for measured in record.speed]
    return pd.DataFrame(rows)


def robustness(results: Results) -> pd.DataFrame:
    """One row per model and corrupted view (``eval.corruptions``: corruption, severity and its metrics) or
    adverse condition (ACDC: condition, mIoU, mDice, images); empty when the run measured neither."""
    rows = []
    for record in results.models:
        found = record.robustness
        if found is None:
            continue
        rows += [{"model": record.name, "corruption": view.corruption, "severity": view.severity, **view.metrics}
                 for view in found.conditions]
        rows += [{"model": record.name, "condition": name, **group.model_dump()}
                 for name, group in (found.adverse or {}).items()]
    return pd.DataFrame(rows)


def model_record(results: Results, model: str | None) -> ModelRecord:
    """The record of ``model`` (the only one when None); a UserError names the models there are."""
    names = [record.name for record in results.models]
    if model is None:
        if len(names) != 1:
            raise UserError(f"name the model: these results hold {len(names)} ({', '.join(names) or 'none'})")
        return results.models[0]
    if not isinstance(model, str):
        raise UserError(f"model: expected a model name (one of {', '.join(names)}), got {type(model).__name__}")
    for record in results.models:
        if record.name == model:
            return record
    raise unknown("model", model, names)


def confusion(results: Results, model: str | None = None) -> np.ndarray:
    """The confusion matrix of ``model`` as int64 counts, rows ground truth, columns prediction (for segbench
    score, a last column of predictions outside the classes)."""
    record = model_record(results, model)
    if record.confusion_matrix is None:
        raise UserError(f"model '{record.name}' has no confusion matrix in these results (a bench run?)")
    return np.asarray(record.confusion_matrix, dtype=np.int64)
