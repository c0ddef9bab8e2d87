"""A run's models as a pandas table, one row per model (``Results.leaderboard()``, the console's table)."""

from __future__ import annotations

import pandas as pd

from segbench.metrics.confusion import METRICS


def leaderboard(results, columns: list[str] | None = None) -> pd.DataFrame:
    """Models of typed results (``segbench.results.schema.Results``) as rows (quality as fractions), best mIoU
    first."""
    columns = columns or list(METRICS)
    rows = []
    for record in results.models:
        speed = record.first_speed
        row = {"model": record.name}
        row.update({name: record.metrics.get(name) for name in columns})
        row["img/s"] = speed.images_per_second if speed else None
        row["params (M)"] = record.params / 1e6 if record.params else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    sort_key = "mIoU" if "mIoU" in frame else columns[0]
    return frame.sort_values(sort_key, ascending=False, na_position="last").reset_index(drop=True)
