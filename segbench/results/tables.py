"""A run's typed results as pandas tables (``Results.leaderboard()``, ``.per_class()``, ``.speed()``,
``.robustness()``) and its confusion matrices as arrays (``.confusion(model)``): the console's leaderboard, and what
results.json holds per model, in the units it holds them (quality as fractions). ``Tables`` is a base of
``segbench.results.schema.Results``; pandas is imported when a table is asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from segbench.errors import UserError, unknown

if TYPE_CHECKING:
    import pandas as pd


class Tables:
    """The tables of a ``Results`` (which holds ``models``)."""

    def leaderboard(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The models as rows, best mIoU first (quality as fractions, images/s, parameters in millions): the table
        ``segbench run`` prints."""
        import pandas as pd

        from segbench.metrics.confusion import METRICS

        columns = columns or list(METRICS)
        rows = []
        for record in self.models:
            speed = record.first_speed
            row = {"model": record.name}
            row.update({name: record.metrics.get(name) for name in columns})
            row["img/s"] = speed.images_per_second if speed else None
            row["params (M)"] = record.params / 1e6 if record.params else None
            rows.append(row)
        frame = pd.DataFrame(rows, columns=["model", *columns, "img/s", "params (M)"])
        sort_key = "mIoU" if "mIoU" in frame else columns[0]
        return frame.sort_values(sort_key, ascending=False, na_position="last").reset_index(drop=True)

    def per_class(self) -> pd.DataFrame:
        """One row per model and class: IoU, Dice, Acc (fractions, NaN for a class absent from ground truth and
        prediction) and support (ground-truth pixels), as in results.json and the per_class_*.csv files."""
        import pandas as pd

        rows = [{"model": record.name, "class": scores.name, "IoU": scores.IoU, "Dice": scores.Dice,
                 "Acc": scores.Acc, "support": scores.support} for record in self.models for scores in record.per_class]
        frame = pd.DataFrame(rows, columns=["model", "class", "IoU", "Dice", "Acc", "support"])
        return frame.astype({"IoU": float, "Dice": float, "Acc": float})

    def speed(self) -> pd.DataFrame:
        """One row per model and speed measurement (backend and batch size): images/s, latency, memory, FLOPs and
        the settings of the measurement; empty when nothing was timed (``bench.enabled=false``)."""
        import pandas as pd

        return pd.DataFrame([{"model": record.name, **measured.model_dump(exclude={"extra", "backend_details"})}
                             for record in self.models for measured in record.speed])

    def robustness(self) -> pd.DataFrame:
        """One row per model and corrupted view (``eval.corruptions``: corruption, severity and its metrics) or
        adverse condition (ACDC: condition, mIoU, mDice, images); empty when the run measured neither."""
        import pandas as pd

        rows = []
        for record in self.models:
            found = record.robustness
            if found is None:
                continue
            rows += [{"model": record.name, "corruption": view.corruption, "severity": view.severity, **view.metrics}
                     for view in found.conditions]
            rows += [{"model": record.name, "condition": name, **group.model_dump()}
                     for name, group in (found.adverse or {}).items()]
        return pd.DataFrame(rows)

    def model_record(self, model: str | None = None) -> Any:
        """The record of ``model`` (the only one when None); a UserError names the models there are."""
        names = [record.name for record in self.models]
        if model is None:
            if len(names) != 1:
                raise UserError(f"name the model: these results hold {len(names)} ({', '.join(names) or 'none'})")
            return self.models[0]
        if not isinstance(model, str):
            raise UserError(f"model: expected a model name (one of {', '.join(names)}), got {type(model).__name__}")
        for record in self.models:
            if record.name == model:
                return record
        raise unknown("model", model, names)

    def confusion(self, model: str | None = None) -> np.ndarray:
        """The confusion matrix of ``model`` (the only model when None) as int64 counts, rows ground truth, columns
        prediction (for segbench score, a last column of predictions outside the classes)."""
        record = self.model_record(model)
        if record.confusion_matrix is None:
            raise UserError(f"model '{record.name}' has no confusion matrix in these results (a bench run?)")
        return np.asarray(record.confusion_matrix, dtype=np.int64)
