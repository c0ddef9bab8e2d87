"""The report's plots, drawn by matplotlib as SVG text to embed inline: speed against mIoU with its Pareto
front, and a confusion matrix per model. Text in the plots is literal (no mathtext) and escaped by
matplotlib's SVG writer; figures live on their own Agg canvas, so pyplot's global state is never touched."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from segbench.metrics.statistics import LEVEL

NAMED = 30  # up to this many points, every point is named in the speed plot
FRONT, POINT, INTERVAL = "#e0662a", "#7d8aa5", "#9aa4b8"
STYLE = {"svg.fonttype": "none", "text.parse_math": False, "font.size": 9, "axes.spines.top": False,
         "axes.spines.right": False, "axes.grid": True, "grid.color": "#eceff4"}


def pareto_front(speed: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Mask of the points no other point beats on both speed and quality (higher is better for both)."""
    front = np.ones(len(speed), dtype=bool)
    for i in range(len(speed)):
        better = (speed >= speed[i]) & (quality >= quality[i]) & ((speed > speed[i]) | (quality > quality[i]))
        front[i] = not better.any()
    return front


def _svg(figure, salt: str) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), with ids salted so that several plots share a page."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt}):
        figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _figure(width: float, height: float):
    """A figure on its own Agg canvas (no pyplot, no global backend) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def pareto_svg(frame: pd.DataFrame) -> str | None:
    """``pareto_figure(frame)`` as an inline ``<svg>``; None when no row has both numbers."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        figure = pareto_figure(frame)
        return None if figure is None else _svg(figure, "pareto")


def pareto_figure(frame: pd.DataFrame):
    """Images/s (log scale when they span more than 10x) against mIoU %, Pareto front highlighted, with each
    model's mIoU interval; labels from ``frame["label"]`` (the front's only, past NAMED points): a matplotlib
    ``Figure``, None when no row has both numbers."""
    import matplotlib
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    data = frame[frame["images_per_second"].notna() & frame["mIoU"].notna()]
    if data.empty:
        return None
    speed = data["images_per_second"].to_numpy(float)
    quality = 100 * data["mIoU"].to_numpy(float)
    low, high = 100 * data["mIoU_low"].to_numpy(float), 100 * data["mIoU_high"].to_numpy(float)
    front = pareto_front(speed, quality)
    with matplotlib.rc_context(STYLE):
        figure, axes = _figure(7.6, 4.2)
        log = speed.max() / max(speed.min(), 1e-9) > 10
        if log:  # ticks at 1, 2, 5 x 10^k written as plain numbers (no mathtext: text.parse_math is off)
            axes.set_xscale("log")
            axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axes.xaxis.set_minor_formatter(NullFormatter())
        has_ci = ~np.isnan(low)
        if has_ci.any():  # the legend names an interval only when one is drawn
            axes.errorbar(speed[has_ci], quality[has_ci], yerr=[quality[has_ci] - low[has_ci],
                                                                high[has_ci] - quality[has_ci]],
                          fmt="none", ecolor=INTERVAL, elinewidth=1.5, label=f"{LEVEL:.0%} CI")
        order = np.argsort(-speed[front])
        axes.plot(speed[front][order], quality[front][order], "--", color=FRONT, linewidth=2)
        axes.scatter(speed[~front], quality[~front], s=30, color=POINT, zorder=3, label="other models")
        axes.scatter(speed[front], quality[front], s=50, color=FRONT, edgecolors="white", zorder=4,
                     label="Pareto front")
        named = front | (len(speed) <= NAMED)  # many points: only the front's are named
        for x, y, label in zip(speed[named], quality[named], data["label"][named]):
            axes.annotate(str(label), (x, y), xytext=(6, 5), textcoords="offset points")
        axes.set_xlabel(f"images/s{' (log scale)' if log else ''}, higher is faster")
        axes.set_ylabel("mIoU %")
        axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return figure


def confusion_svg(matrix: list[list[int]], classes: list[str], title: str, salt: str) -> str:
    """``confusion_figure`` as an inline ``<svg>``."""
    import matplotlib

    with matplotlib.rc_context(STYLE | {"axes.grid": False}):
        return _svg(confusion_figure(matrix, classes, title), salt)


def confusion_figure(matrix, classes: list[str], title: str):
    """A confusion matrix normalised per ground-truth row (recall), rows ground truth, columns prediction;
    a column past the classes (segbench score) counts predictions outside them ("void"): a matplotlib
    ``Figure``."""
    import matplotlib

    counts = np.asarray(matrix, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = counts / counts.sum(1, keepdims=True)
    rows = list(classes)[:counts.shape[0]]
    columns = rows + ["void"] * (counts.shape[1] - len(rows))
    size = min(2.0 + 0.25 * len(columns), 12.0)
    with matplotlib.rc_context(STYLE | {"axes.grid": False}):
        figure, axes = _figure(size + 1.2, size)
        image = axes.imshow(share, cmap="viridis", vmin=0, vmax=1)
        if len(columns) <= 40:  # more tick labels than that are unreadable
            axes.set_xticks(range(len(columns)), [str(c) for c in columns], rotation=90)
            axes.set_yticks(range(len(rows)), [str(c) for c in rows])
        axes.set_xlabel("prediction")
        axes.set_ylabel("ground truth")
        axes.set_title(title)
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the ground-truth row")
        return figure
