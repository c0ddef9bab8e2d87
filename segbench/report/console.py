"""Tables printed on the console at the end of ``segbench run`` and ``segbench bench`` (rich)."""

from __future__ import annotations

import math

import pandas as pd

from segbench.metrics.confusion import METRICS
from segbench.results.leaderboard import leaderboard as results_table
from segbench.results.schema import ModelRecord, Results, to_model, to_results


def leaderboard(results: Results | dict, columns: list[str] | None = None) -> pd.DataFrame:
    """Models of a run as rows (quality as fractions), best mIoU first."""
    return results_table(to_results(results), columns)


def print_leaderboard(frame: pd.DataFrame, title: str) -> None:
    """Print a table; metrics shown in percent, like MMSegmentation's logs, missing values as a dash."""
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
    console = Console()
    if not console.is_terminal:  # a log file or CI: as wide as the table needs, never squeezed to 80 columns
        console = Console(width=max(console.width, table.__rich_measure__(console, console.options).maximum))
    console.print(table)


def speed_table(records: list[ModelRecord | dict]) -> pd.DataFrame:
    """One row per model and batch size from the models' speed records."""
    rows = []
    for record in map(to_model, records):
        eager = {s.requested_batch_size: s.images_per_second for s in record.speed if (s.backend or "eager") == "eager"}
        for speed in record.speed:
            rows.append({
                "model": record.name,
                "backend": speed.backend or "eager",
                "batch": speed.batch_size,
                "img/s": speed.images_per_second,
                "x eager": speed.images_per_second / eager[speed.requested_batch_size]
                if speed.requested_batch_size in eager else None,
                "spread %": 100 * speed.spread if speed.spread is not None else None,
                "p50 ms": speed.latency_ms_p50,
                "p90 ms": speed.latency_ms_p90,
                "p99 ms": speed.latency_ms_p99,
                "GFLOPs/img": speed.gflops_per_image,
                "peak MB": speed.peak_memory_mb,
                "params (M)": speed.params / 1e6 if speed.params is not None else None,
                "precision": speed.precision,
                "format": speed.memory_format,
            })
    return pd.DataFrame(rows)


def print_speed_table(records: list[ModelRecord | dict], title: str) -> None:
    """Print ``speed_table(records)``."""
    print_leaderboard(speed_table(records), title)
