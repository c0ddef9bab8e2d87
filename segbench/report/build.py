"""``segbench report``: leaderboards per suite from results.json files or MLflow runs, written as a folder
that can be published as it is: ``<out>/<suite>/{leaderboard.md,leaderboard.csv,index.html}`` and an index.

Rows come from report_rows, tables from report_tables, pages from report_html (plots from report_plots).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from segbench.core.files import atomic_write
from segbench.core.names import safe_name
from segbench.report.html import index_html, to_html
from segbench.report.rows import collect
from segbench.report.tables import to_csv, to_markdown

REPORT_DIR = Path("reports")


def _folder(suite: str) -> str:
    """A file-system-safe folder name for a suite (two suites never share one)."""
    return safe_name(suite)


def by_suite(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows of each suite, without the per-class columns of other suites' classes."""
    frames = {}
    for suite, group in frame.groupby("suite", sort=True):
        empty = [c for c in group.columns if c.startswith("IoU.") and group[c].isna().all()]
        frames[str(suite)] = group.drop(columns=empty).reset_index(drop=True)
    return frames


def build_report(sources: list[Path | str], out_dir: Path | str | None = None, tracking_uri: str | None = None,
                 use_mlflow: bool = False) -> list[Path]:
    """Write the leaderboards of ``sources`` (and of the MLflow store when ``use_mlflow`` or ``tracking_uri``)
    into ``out_dir`` (default reports/); return the files written."""
    frames = by_suite(collect(sources, tracking_uri, use_mlflow))
    root = Path(out_dir) if out_dir is not None else REPORT_DIR
    folders = {suite: _folder(suite) for suite in frames}
    written = []
    for suite, group in frames.items():
        folder = root / folders[suite]
        written += [atomic_write(folder / "leaderboard.md", to_markdown(group, suite)),
                    to_csv(group, folder / "leaderboard.csv"),
                    atomic_write(folder / "index.html", to_html(group, suite))]
    written.append(atomic_write(root / "index.html", index_html(frames, folders)))
    return written
