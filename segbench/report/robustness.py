"""The report's robustness parts, for runs with ``eval.corruptions`` or on ACDC: clean mIoU beside mPC and rPC (with
their intervals and the rank under each), a corruption x model heatmap of mIoU (mean over severities), mIoU against
severity per model (severity 0 is the clean split), and mIoU per adverse condition; as an HTML section, Markdown,
and a console table at the end of ``segbench run``. Rows carry each model's robustness record (``row["robustness"]``,
plain JSON data)."""

from __future__ import annotations

import math

import pandas as pd
from markupsafe import Markup

from segbench.config.typed import plain
from segbench.report.plots import STYLE, _figure, _svg
from segbench.results.schema import ModelRecord

SCALE = 100.0  # fractions shown in percent


def _records(frame: pd.DataFrame) -> list[tuple[str, float, dict]]:
    """(label, clean mIoU, robustness record) of the rows that hold one."""
    label = frame["label"] if "label" in frame else frame["model"]
    column = frame["robustness"] if "robustness" in frame else [None] * len(frame)
    return [(str(name), float(miou), record) for name, miou, record in zip(label, frame["mIoU"], column)
            if isinstance(record, dict) and (record.get("conditions") or record.get("adverse"))]


def _pct(value, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{SCALE * value:.{digits}f}"


def _interval(record: dict, key: str) -> str:
    interval = (record.get("intervals") or {}).get(key)
    if not interval or interval.get("low") is None:
        return "-"
    return f"[{_pct(interval['low'])}, {_pct(interval['high'])}]"


def summary_table(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Per model: clean mIoU, mPC and rPC with their intervals, the worst corruption, and the ranks by clean mIoU
    and by mPC (text cells, percent); None when no row was evaluated under corruption."""
    records = [(label, miou, r) for label, miou, r in _records(frame) if r.get("conditions")]
    if not records:
        return None
    rows = []
    for label, miou, record in records:
        per = {name: values.get("mIoU") for name, values in (record.get("per_corruption") or {}).items()}
        worst = min(per, key=lambda n: per[n] if per[n] is not None else math.inf) if per else None
        rows.append({"model": label, "clean mIoU %": miou, "mPC %": record.get("mPC"),
                     "mPC CI": _interval(record, "mPC"), "rPC %": record.get("rPC"), "rPC CI": _interval(record, "rPC"),
                     "worst corruption": f"{worst} ({_pct(per[worst])})" if worst else "-",
                     "corrupting share %": (record.get("cost") or {}).get("corruption_share")})
    table = pd.DataFrame(rows)
    table.insert(1, "rank clean", table["clean mIoU %"].rank(ascending=False, method="min").astype("Int64"))
    table.insert(3, "rank mPC", table["mPC %"].rank(ascending=False, method="min").astype("Int64"))
    table = table.sort_values("mPC %", ascending=False, na_position="last")
    for column, digits in (("clean mIoU %", 2), ("mPC %", 2), ("rPC %", 2), ("corrupting share %", 1)):
        table[column] = [_pct(v, digits) for v in table[column]]
    return table.astype(str).reset_index(drop=True)


def corruption_matrix(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Corruptions (rows) x models (columns): mIoU in percent, mean over the severities; None without any."""
    columns = {label: {name: values.get("mIoU") for name, values in (record.get("per_corruption") or {}).items()}
               for label, _, record in _records(frame) if record.get("per_corruption")}
    if not columns:
        return None
    return SCALE * pd.DataFrame(columns).astype(float)


def adverse_matrix(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Adverse conditions (rows) x models (columns): mIoU in percent, plus the whole split; None without any."""
    columns = {label: {**{name: values.get("mIoU") for name, values in record["adverse"].items()}, "all": miou}
               for label, miou, record in _records(frame) if record.get("adverse")}
    return SCALE * pd.DataFrame(columns).astype(float) if columns else None


def severity_svg(frame: pd.DataFrame) -> str | None:
    """mIoU % (mean over corruptions) against severity, one line per model, severity 0 being the clean split."""
    import matplotlib

    lines = [(label, miou, record["per_severity"]) for label, miou, record in _records(frame)
             if record.get("per_severity")]
    if not lines:
        return None
    with matplotlib.rc_context(STYLE):
        figure, axes = _figure(7.6, 4.2)
        for label, miou, per_severity in lines:
            severities = [0] + [int(s) for s in per_severity]
            values = [SCALE * miou] + [SCALE * (v if v is not None else math.nan) for v in per_severity.values()]
            axes.plot(severities, values, marker="o", label=label)
        axes.set_xticks(sorted({s for _, _, p in lines for s in [0, *map(int, p)]}))
        axes.set_xlabel("corruption severity (0: clean)")
        axes.set_ylabel("mIoU % (mean over corruptions)")
        axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return _svg(figure, "severity")


def _heat(table: pd.DataFrame, uuid: str, caption: str) -> Markup:
    styler = (table.style.format("{:.1f}", na_rep="-")
              .format_index(escape="html", axis=0).format_index(escape="html", axis=1)
              .background_gradient(cmap="viridis", vmin=0, vmax=100, axis=None)
              .set_table_attributes('class="heat"').set_caption(caption).set_uuid(uuid))
    return Markup(styler.to_html())


def section(frame: pd.DataFrame, templates) -> Markup | None:
    """The suite page's robustness section (None when no row has a robustness record); ``templates`` is the
    report's Jinja2 environment."""
    summary, matrix, adverse = summary_table(frame), corruption_matrix(frame), adverse_matrix(frame)
    if summary is None and adverse is None:
        return None
    plot = severity_svg(frame)
    return Markup(templates.get_template("robustness.html.j2").render(
        summary=summary.to_dict(orient="records") if summary is not None else None,
        columns=list(summary.columns) if summary is not None else [],
        heatmap=_heat(matrix, "corruptions", "mIoU % under each corruption, mean over severities")
        if matrix is not None else None,
        adverse=_heat(adverse, "adverse", "mIoU % per adverse condition") if adverse is not None else None,
        severity=Markup(plot) if plot else None))


def to_markdown(frame: pd.DataFrame) -> str:
    """The robustness tables in Markdown ("" when no row has a robustness record)."""
    from segbench.core.files import markdown_cell

    parts = []
    summary = summary_table(frame)
    if summary is not None:
        parts += ["## Robustness under corruption", "",
                  summary.map(markdown_cell).to_markdown(index=False, disable_numparse=True), "",
                  "mPC: mean mIoU over the corruptions and severities; rPC = mPC / clean mIoU; CI: 95 % bootstrap "
                  "over images; rank: by clean mIoU and by mPC.", ""]
    matrix = corruption_matrix(frame)
    if matrix is not None:
        parts += ["### mIoU % per corruption (mean over severities)", "", matrix.to_markdown(floatfmt=".1f"), ""]
    adverse = adverse_matrix(frame)
    if adverse is not None:
        parts += ["## mIoU % per adverse condition", "", adverse.to_markdown(floatfmt=".1f"), ""]
    return "\n".join(parts)


def print_robustness(models: list[ModelRecord], title: str) -> None:
    """The console table at the end of ``segbench run`` with eval.corruptions (nothing otherwise)."""
    frame = pd.DataFrame({"model": [m.name for m in models], "mIoU": [m.metrics.get("mIoU") for m in models],
                          "robustness": [plain(m.robustness) if m.robustness else None for m in models]})
    summary = summary_table(frame)
    if summary is None:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in summary.columns:
        table.add_column(column, justify="left" if column in ("model", "worst corruption") else "right")
    for row in summary.itertuples(index=False):
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # a log file or CI: as wide as the table needs
        console = Console(width=max(console.width, table.__rich_measure__(console, console.options).maximum))
    console.print(table)
