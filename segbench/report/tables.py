"""The leaderboard as tables: display cells, a GitHub Markdown table (pandas ``to_markdown``) and a CSV."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from segbench.core.files import atomic_write, markdown_cell
from segbench.metrics.statistics import LEVEL
from segbench.report import robustness
from segbench.report.rows import NOT_IN_CSV, SETTINGS, labels, setting_groups
from segbench.report.site import choices

# Leaderboard columns: row column -> (header, kind); kind picks the formatting.
TABLE = {
    "model": ("model", "text"),
    "backbone": ("backbone", "text"),
    "mIoU": ("mIoU %", "pct"),
    "mIoU_ci": (f"mIoU {LEVEL:.0%} CI", "ci"),
    "mDice": ("mDice %", "pct"),
    "aAcc": ("aAcc %", "pct"),
    "images_per_second": ("images/s", "num1"),
    "latency_ms_p50": ("latency p50 ms", "num2"),
    "params": ("params M", "mega"),
    "gflops_per_image": ("GFLOPs", "num2"),
    "hardware": ("hardware", "text"),
    "config_hash": ("config", "text"),
}


def missing(value) -> bool:
    """None or NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def short(value: float) -> str:
    """Two decimals, or two significant digits below 0.1 (a 2,819-parameter model is 0.0028 M, not 0.00)."""
    return f"{value:.2f}" if value == 0 or abs(value) >= 0.1 else f"{value:.2g}"


def cell(value, kind: str, row: pd.Series | None = None) -> str:
    """A table cell as text: metrics in percent, missing values as a dash; ``ci`` reads the row's interval."""
    if kind == "ci":
        low, high = row["mIoU_low"], row["mIoU_high"]
        return "-" if math.isnan(low) else f"[{100 * low:.2f}, {100 * high:.2f}]"
    if missing(value):
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}"
    if kind == "mega":
        return short(value / 1e6)
    if kind in ("num1", "num2"):
        return f"{value:.{kind[-1]}f}"
    return str(value)


def display(frame: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard's cells as text, one column per TABLE entry, headed by its header."""
    return pd.DataFrame([{header: cell(row.get(column), kind, row) for column, (header, kind) in TABLE.items()}
                         for _, row in frame.iterrows()], columns=[header for header, _ in TABLE.values()])


def to_markdown(frame: pd.DataFrame, suite: str, notes: list[str] = ()) -> str:
    """The leaderboard as a GitHub Markdown table, metrics in percent, then the settings behind it and what was
    left out."""
    align = ["right"] + ["left" if kind == "text" else "right" for _, kind in TABLE.values()]
    lines = [f"## {markdown_cell(suite)} leaderboard", ""]
    found, differ = choices(frame)
    if differ:
        lines += [f"Settings differ between these runs: {', '.join(differ)}. Rows are ranked within one settings, "
                  "the latest full schedule first.", ""]
    for choice in found:  # rows of different settings never rank beside each other
        table = display(frame[frame["settings_key"] == choice.key]).map(markdown_cell)
        table.index = pd.RangeIndex(1, len(table) + 1, name="#")
        if differ:
            lines += [f"### {markdown_cell(choice.label)}" + (" (latest full schedule)" if choice.default else ""), ""]
        lines += [table.to_markdown(colalign=align, disable_numparse=True), ""]
    lines += [f"mIoU CI: {LEVEL:.0%} bootstrap percentile interval over images. Settings:", ""]
    for _, group in setting_groups(frame).iterrows():
        lines.append("- " + "; ".join(f"{label} {markdown_cell(group[key])}" for key, label in SETTINGS.items()))
    if notes:
        lines += ["", "Left out:", ""] + [f"- {markdown_cell(note)}" for note in notes]
    robust = robustness.to_markdown(frame.assign(label=labels(frame)))
    return "\n".join(lines) + "\n" + (f"\n{robust}" if robust else "")


def to_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Every row column, quality as fractions (as in results.json), empty for missing values."""
    return atomic_write(path, frame.drop(columns=[c for c in NOT_IN_CSV if c in frame]).to_csv(index=False))
