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
from segbench.report.protocol import UNDER_LOAD_SPREAD
from segbench.report.rows import SETTINGS, labels, setting_groups
from segbench.report.site import choices, default_rows, options, protocol_block, ranks
from segbench.report.tables import TABLE, cell

DETAILS = 12  # rows (best mIoU first) whose confusion matrix and predictions the page shows
LOAD_NOTE = (f"timed under load: the timed repeats spread more than {UNDER_LOAD_SPREAD:.0%} of their median (the "
             "gate's note 'the machine was busy'); time it again on an idle machine (segbench bench)")
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


def _link(target) -> str | None:
    """A weights link the published page can follow (a URL), else None."""
    return str(target) if isinstance(target, str) and target.startswith(("https://", "http://")) else None


def leaderboard_cells(frame: pd.DataFrame) -> tuple[list[dict], list[dict]]:
    """The sortable leaderboard's header cells and rows (each its filter attributes, weights, reproduce command
    and cells: text, sort value, tooltip); speed timed under load is flagged in its cell."""
    columns = [{"column": "rank", "header": "#", "kind": "num", "numeric": True}]
    columns += [{"column": column, "header": header, "kind": kind, "numeric": kind != "text"}
                for column, (header, kind) in TABLE.items()]
    rows = []
    for rank, (_, row) in zip(ranks(frame), frame.iterrows()):
        cells = [{"text": "-" if rank != rank else str(int(rank)), "v": _data_value(rank), "numeric": True}]
        for column, (_, kind) in TABLE.items():
            value = row["mIoU_low"] if kind == "ci" else row.get(column)
            text = cell(value, kind, row)
            loaded = column == "images_per_second" and bool(row.get("under_load"))
            cells.append({"text": text + (" (under load)" if loaded else ""), "v": _data_value(value),
                          "numeric": kind != "text", "load": loaded,
                          "title": row["source"] if column == "model" else (LOAD_NOTE if loaded else None),
                          "href": _link(row.get("weights_link")) if column == "model" else None})
        rows.append({"settings": row["settings_key"], "origin": str(row["origin"]), "family": str(row["family"]),
                     "search": f"{row['model']} {row.get('backbone') or ''} {row['family']}".lower(),
                     "weights": row["weights_link"] if isinstance(row.get("weights_link"), str) else "random weights",
                     "reproduce": row["reproduce"], "cells": cells})
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
    """The suite's self-contained page: filters (text, source, backbone family, settings), the leaderboard ranked
    within each settings, the settings that differ named, the protocol, per-class IoU, speed against accuracy per
    settings (speed timed under load flagged), confusion matrices and predictions of the DETAILS best rows,
    settings, and what was left out."""
    frame = frame.assign(label=labels(frame))
    best = frame.head(DETAILS)
    columns, rows = leaderboard_cells(frame)
    groups = setting_groups(frame)
    settings = [{"label": label, "values": list(groups[key]), "differ": groups[key].nunique() > 1}
                for key, label in SETTINGS.items()]
    found, differ = choices(frame)
    plotted = frame.assign(label=[f"{label} (timed under load)" if loaded else label
                                  for label, loaded in zip(frame["label"], frame["under_load"])])
    paretos = []
    for choice in found:
        plot = pareto_svg(plotted[plotted["settings_key"] == choice.key])
        paretos.append({"key": choice.key, "svg": Markup(plot) if plot else None})
    return _templates().get_template("suite.html.j2").render(
        title=f"segbench: {suite}", suite=suite, models=len(frame), stamp=_stamp(), level=f"{LEVEL:.0%}",
        columns=columns, rows=rows, heatmap=heatmap(frame), hardware=frame["hardware"].dropna().nunique(),
        paretos=paretos, confusions=confusions(best), overlays=overlay_strips(best),
        details=DETAILS if len(frame) > DETAILS else None, groups=len(groups), notes=list(notes),
        robustness=robustness.section(frame, _templates()), loaded=int(frame["under_load"].sum()),
        load_note=LOAD_NOTE, choices=found, differ=differ, protocol=protocol_block(frame, found),
        origins=options(frame, "origin"), families=options(frame, "family"),
        settings=settings, sources=list(frame["source"].unique()))


def index_html(frames: dict[str, pd.DataFrame], folders: dict[str, str]) -> str:
    """The site's front page: one row per suite with the best model of its default settings."""
    suites = []
    for suite, frame in frames.items():
        best = default_rows(frame).iloc[0]
        suites.append({"name": suite, "folder": folders[suite], "models": len(frame), "best": best["model"],
                       "best_v": _data_value(best["mIoU"]), "best_miou": cell(best["mIoU"], "pct"),
                       "hardware": ", ".join(map(str, frame["hardware"].dropna().unique()))})
    return _templates().get_template("index.html.j2").render(title="segbench leaderboards", stamp=_stamp(),
                                                             suites=suites)
