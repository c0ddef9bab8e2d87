"""Tables printed on the console at the end of ``segbench run`` and ``segbench bench`` (rich)."""

from __future__ import annotations

import math

import pandas as pd

from segbench.metrics.confusion import METRICS
from segbench.results.schema import ModelRecord, Results
from segbench.results.speed import Speed


def leaderboard(results: Results, columns: list[str] | None = None) -> pd.DataFrame:
    """Models of a run as rows (quality as fractions), best mIoU first; with eval.backends, each other backend's
    parity with eager."""
    frame = results.leaderboard(columns)
    cells = {record.name: parity(record) for record in results.models}
    extra = pd.DataFrame([cells[name] for name in frame["model"]], index=frame.index)
    return pd.concat([frame, extra], axis=1) if len(extra.columns) else frame


def parity(record: ModelRecord) -> dict[str, str]:
    """What eval.backends measured against eager, per other backend: the mIoU difference in points and the share
    of pixels whose class agrees with eager's (or why the backend was skipped)."""
    cells = {}
    for backend in (record.evaluation.backends or []) if record.evaluation else []:
        if backend.status == "reference":
            continue
        difference, agreement = backend.difference.get("mIoU"), backend.prediction_agreement
        cells[f"{backend.backend} ΔmIoU pts"] = ("skipped" if backend.status == "skipped" else
                                                 f"{100 * difference:+.3f}" if difference is not None else "-")
        cells[f"{backend.backend} agree %"] = f"{100 * agreement:.2f}" if agreement is not None else "-"
    return cells


def peak_memory_mb(speed: Speed) -> float | None:
    """The forward pass's peak memory where it was measured (CUDA's peak allocation); None on the CPU, whose
    record holds the growth of the process's peak RSS: 0 whenever an earlier phase (training, the FLOP count)
    set that peak, whatever the model needs."""
    return speed.peak_memory_mb if speed.memory_measure == "cuda_max_allocated" else None


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
            elif isinstance(value, float):  # two decimals, two significant digits below 0.1 (0.0028 M)
                cells.append(f"{value:.2f}" if value == 0 or abs(value) >= 0.1 else f"{value:.2g}")
            else:
                cells.append(str(value))
        table.add_row(*cells)
    console = Console()
    if not console.is_terminal:  # a log file or CI: as wide as the table needs, never squeezed to 80 columns
        console = Console(width=max(console.width, table.__rich_measure__(console, console.options).maximum))
    console.print(table)


def speed_table(records: list[ModelRecord]) -> pd.DataFrame:
    """One row per model and batch size from the models' speed records."""
    rows = []
    for record in records:
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
                "peak MB": peak_memory_mb(speed),
                "params (M)": speed.params / 1e6 if speed.params is not None else None,
                "precision": speed.precision,
                "format": speed.memory_format,
            })
    return pd.DataFrame(rows)


def print_speed_table(records: list[ModelRecord], title: str) -> None:
    """Print ``speed_table(records)``."""
    print_leaderboard(speed_table(records), title)
