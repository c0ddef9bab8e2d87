"""``segbench report``: leaderboards per suite from results.json files or MLflow runs, written as a folder
that can be published as it is: ``<out>/<suite>/{leaderboard.md,leaderboard.csv,index.html}``, ``left_out.csv``
(the rows of older runs of a model, settings and hardware) when there are any, the exports
(segbench.report.exports) beside them, and an index.

Rows come from report_rows, tables from report_tables, pages from report_html (plots from report_plots).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from segbench.core.files import atomic_write
from segbench.core.names import safe_name
from segbench.errors import UserError
from segbench.report.exports import FORMATS, write_exports
from segbench.report.html import index_html, to_html
from segbench.report.rows import collect, labels
from segbench.report.tables import to_csv, to_markdown

REPORT_DIR = Path("reports")


def _folder(suite: str) -> str:
    """A file-system-safe folder name for a suite (two suites never share one)."""
    return safe_name(suite)


def _check_out(root: Path) -> None:
    """Refuse an output folder that cannot be one: a file, under a file, or in a folder that cannot be written."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == root else f"is under the file '{existing}'"
        raise UserError(f"--out: '{root}' {where}; expected a folder for the report")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out: cannot write in '{existing}' (permission denied); choose another folder")


def by_suite(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows of each suite, without the per-class columns of other suites' classes."""
    frames = {}
    for suite, group in frame.groupby("suite", sort=True):
        empty = [c for c in group.columns if c.startswith("IoU.") and group[c].isna().all()]
        frames[str(suite)] = group.drop(columns=empty).reset_index(drop=True)
    return frames


@dataclass
class Report:
    """What ``build_report`` wrote, and per suite what it left out and why."""

    written: list[Path]
    notes: dict[str, list[str]]


def build_report(sources: list[Path | str], out_dir: Path | str | None = None, tracking_uri: str | None = None,
                 use_mlflow: bool = False, exports: tuple[str, ...] = FORMATS) -> Report:
    """Write the leaderboards of ``sources`` (and of the MLflow store when ``use_mlflow`` or ``tracking_uri``)
    into ``out_dir`` (default reports/), with the ``exports`` (segbench.report.exports.FORMATS) of each suite."""
    root = Path(out_dir) if out_dir is not None else REPORT_DIR
    _check_out(root)
    with tempfile.TemporaryDirectory(prefix="segbench-report-") as workspace:  # MLflow artifacts, while rendering
        collected = collect(sources, tracking_uri, use_mlflow, Path(workspace))
        frames = by_suite(collected.frame)
        folders = {suite: _folder(suite) for suite in frames}
        written = []
        for suite, group in frames.items():
            folder, notes = root / folders[suite], collected.notes.get(suite, [])
            written += [atomic_write(folder / "leaderboard.md", to_markdown(group, suite, notes)),
                        to_csv(group, folder / "leaderboard.csv"),
                        atomic_write(folder / "index.html", to_html(group, suite, notes))]
            written += write_exports(group.assign(label=labels(group)), suite, folder, exports)
            older = collected.older
            if older is not None and (older["suite"] == suite).any():  # their numbers kept, out of the ranking
                written.append(to_csv(by_suite(older[older["suite"] == suite])[suite], folder / "left_out.csv"))
        written.append(atomic_write(root / "index.html", index_html(frames, folders)))
    return Report(written, collected.notes)
