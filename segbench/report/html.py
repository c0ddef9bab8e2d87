"""The report's HTML pages, rendered from the Jinja2 templates in segbench/templates (autoescaped): a page per
suite (sortable leaderboard, per-class IoU heatmap by pandas' Styler, plots, settings) and an index."""

from __future__ import annotations

import base64
import math
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

from segbench.metrics.statistics import LEVEL
from segbench.report import robustness
from segbench.report.plots import confusion_svg, pareto_svg
from segbench.report.rows import SETTINGS, labels, setting_groups
from segbench.report.tables import TABLE, cell

DETAILS = 12  # rows (best mIoU first) whose confusion matrix and predictions the page shows
ABSENT_NOTE = "-: class absent from ground truth and prediction (NaN, left out of the mean)"


@lru_cache(maxsize=1)
def _templates():
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("segbench.report", "templates"), autoescape=select_autoescape(["j2"]),
                       trim_blocks=True, lstrip_blocks=True)


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _data_value(value) -> str | None:
    """A number as a data-v attribute for sorting (empty for NaN); None for text."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return "" if math.isnan(value) else repr(float(value))
    return None


def leaderboard_cells(frame: pd.DataFrame) -> tuple[list[dict], list[list[dict]]]:
    """The sortable leaderboard's header cells and rows of cells (text, sort value, tooltip)."""
    columns = [{"column": column, "header": header, "kind": kind, "numeric": kind != "text"}
               for column, (header, kind) in TABLE.items()]
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for column, (_, kind) in TABLE.items():
            value = row["mIoU_low"] if kind == "ci" else row.get(column)
            cells.append({"text": cell(value, kind, row), "v": _data_value(value), "numeric": kind != "text",
                          "title": row["source"] if column == "model" else None})
        rows.append(cells)
    return columns, rows


def heatmap(frame: pd.DataFrame) -> Markup | None:
    """Per-class IoU in percent as a table coloured by value (viridis, 0 to 100); None without per-class IoU."""
    classes = [c for c in frame.columns if c.startswith("IoU.") and frame[c].notna().any()]
    if not classes:
        return None
    table = pd.DataFrame(100 * frame[classes].to_numpy(float), index=pd.Index(frame["label"].to_list()),
                         columns=[c[len("IoU."):] for c in classes])
    styler = (table.style.format("{:.1f}", na_rep="-")
              .format_index(escape="html", axis=0).format_index(escape="html", axis=1)
              .background_gradient(cmap="viridis", vmin=0, vmax=100)
              .highlight_null(props="background-color:transparent;color:#5b6475")
              .set_table_attributes('class="heat"').set_caption(ABSENT_NOTE).set_uuid("heat"))
    return Markup(styler.to_html())


def confusions(frame: pd.DataFrame) -> list[Markup]:
    """One confusion-matrix plot per row that holds a matrix."""
    plots = []
    for i, (_, row) in enumerate(frame.iterrows()):
        if row.get("confusion") is not None:
            plots.append(Markup(confusion_svg(row["confusion"], row["classes"], str(row["label"]), f"cm{i}")))
    return plots


def overlay_strips(frame: pd.DataFrame) -> list[dict]:
    """Per model that saved predictions, its overlay PNGs embedded as data URIs (the page stays one file)."""
    strips = []
    for _, row in frame.iterrows():
        images = [{"src": f"data:image/png;base64,{base64.b64encode(Path(p).read_bytes()).decode()}",
                   "caption": Path(p).stem} for p in row.get("overlays") or [] if Path(p).is_file()]
        if images:
            strips.append({"label": str(row["label"]), "images": images})
    return strips


def to_html(frame: pd.DataFrame, suite: str, notes: list[str] = ()) -> str:
    """The suite's self-contained page: leaderboard, per-class IoU, speed against accuracy, confusion matrices
    and predictions of the DETAILS best rows, settings, and what was left out."""
    frame = frame.assign(label=labels(frame))
    best = frame.head(DETAILS)
    columns, rows = leaderboard_cells(frame)
    groups = setting_groups(frame)
    settings = [{"label": label, "values": list(groups[key]), "differ": groups[key].nunique() > 1}
                for key, label in SETTINGS.items()]
    pareto = pareto_svg(frame)
    return _templates().get_template("suite.html.j2").render(
        title=f"segbench: {suite}", suite=suite, models=len(frame), stamp=_stamp(), level=f"{LEVEL:.0%}",
        columns=columns, rows=rows, heatmap=heatmap(frame), hardware=frame["hardware"].dropna().nunique(),
        pareto=Markup(pareto) if pareto else None, confusions=confusions(best), overlays=overlay_strips(best),
        details=DETAILS if len(frame) > DETAILS else None, groups=len(groups), notes=list(notes),
        robustness=robustness.section(frame, _templates()),
        settings=settings, sources=list(frame["source"].unique()))


def index_html(frames: dict[str, pd.DataFrame], folders: dict[str, str]) -> str:
    """The site's front page: one row per suite with its best model."""
    suites = []
    for suite, frame in frames.items():
        best = frame.iloc[0]
        suites.append({"name": suite, "folder": folders[suite], "models": len(frame), "best": best["model"],
                       "best_v": _data_value(best["mIoU"]), "best_miou": cell(best["mIoU"], "pct"),
                       "hardware": ", ".join(map(str, frame["hardware"].dropna().unique()))})
    return _templates().get_template("index.html.j2").render(title="segbench leaderboards", stamp=_stamp(),
                                                             suites=suites)
