"""Leaderboards from results.json files or MLflow runs: Markdown, CSV and a self-contained HTML page per suite.

Reading is here too (``load_results``), shared with the gate: a results.json path or folder, an MLflow
run id, or ``latest``. One row per model; within a suite, the newest result per (model, config hash,
hardware) is kept, so rows with different settings or hardware stay apart and are labelled.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from datetime import datetime, timezone
from functools import partial
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from segbench.errors import UserError
from segbench.metrics import convention
from segbench.stats import LEVEL, bootstrap

REPORT_DIR = Path("reports")
RESULTS_NAME = "results.json"
QUALITY = ("mIoU", "mDice", "aAcc", "mAcc", "fwIoU")
SETTINGS = {  # settings that make numbers comparable: row column -> label
    "config_hash": "config hash",
    "accumulation": "accumulation",
    "absent_class": "absent classes",
    "ignore_index": "ignore index",
    "label_space": "label space",
    "eval_mode": "evaluation mode",
    "eval_images": "evaluated images",
    "precision": "precision",
    "memory_format": "memory format",
    "compile": "compile",
    "batch_size": "speed batch size",
    "input_shape": "speed input",
    "hardware": "hardware",
    "device": "device",
    "threads": "threads",
    "torch": "torch",
    "segbench": "segbench",
    "git_commit": "git commit",
}
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


# ---------------------------------------------------------------- reading


def read_results(path: Path | str) -> dict:
    """Read one results.json; a missing, unparseable or foreign file is a UserError."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_NAME
    if not path.is_file():
        raise UserError(f"no results file at {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list) or "suite" not in data:
        raise UserError(f"{path} is not a segbench results.json (no 'suite' and 'models')")
    return data


def find_results(source: Path | str) -> list[Path]:
    """A results.json file as is; a folder searched recursively for results.json files."""
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(path.rglob(RESULTS_NAME))
        if not found:
            raise UserError(f"no {RESULTS_NAME} under {path}")
        return found
    raise UserError(f"no such file or folder: {path}")


def _client(tracking_uri: str | None):
    from mlflow.tracking import MlflowClient

    from segbench.tracking import DEFAULT_URI

    return MlflowClient(tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI)


def mlflow_results(run_id: str, tracking_uri: str | None = None) -> dict:
    """The results.json logged with an MLflow run (a model's child run points to its parent's)."""
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no progress bar
    client = _client(tracking_uri)
    try:
        run = client.get_run(run_id)
        parent = run.data.tags.get("mlflow.parentRunId", run_id)
        with tempfile.TemporaryDirectory() as tmp:
            return read_results(client.download_artifacts(parent, RESULTS_NAME, tmp))
    except MlflowException as exc:
        raise UserError(f"MLflow run {run_id} at {client.tracking_uri}: {exc.message.splitlines()[0]}") from None


def latest_run(suite: str, tracking_uri: str | None = None) -> str:
    """The id of the newest finished ``segbench run`` of ``suite`` in the tracking store."""
    client = _client(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`segbench.kind` = 'run' and tags.`segbench.suite` = '{suite}' "
                                           "and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1) if experiments else []
    if not runs:
        raise UserError(f"no finished run of suite '{suite}' in MLflow at {client.tracking_uri}")
    return runs[0].info.run_id


def load_results(source: Path | str, tracking_uri: str | None = None, suite: str | None = None) -> tuple[dict, str]:
    """Results and a label for them from a results.json path or folder, an MLflow run id or ``latest``."""
    text = str(source)
    if text == "latest":
        if suite is None:
            raise UserError("'latest' needs a suite (taken from the baseline)")
        run_id = latest_run(suite, tracking_uri)
        return mlflow_results(run_id, tracking_uri), f"MLflow run {run_id}"
    if re.fullmatch(r"[0-9a-f]{32}", text) and not Path(text).exists():
        return mlflow_results(text, tracking_uri), f"MLflow run {text}"
    return read_results(source), text


# ---------------------------------------------------------------- rows


def _number(value) -> float:
    """A number from JSON or MLflow; null, missing or text becomes NaN."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def _get(run: pd.Series, key: str):
    """A value of an MLflow search row, None when absent or NaN."""
    value = run.get(key)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def model_rows(results: dict, source: str, time: float = math.nan) -> list[dict]:
    """One leaderboard row per model of a results.json (quality as fractions), with its settings."""
    env = results.get("environment") or {}
    conv = results.get("convention") or {}
    suite = results["suite"]
    classes = (results.get("dataset") or {}).get("classes") or []
    rows = []
    for record in results["models"]:
        speed = (record.get("speed") or [{}])[0]
        metrics = record.get("metrics") or {}
        row = {"suite": suite["name"], "model": record["name"], "arch": record.get("arch"),
               "backbone": record.get("backbone")}
        row.update({name: _number(metrics.get(name)) for name in QUALITY})
        per_image = record.get("per_image") or {}
        interval = None
        if per_image.get("intersection"):
            interval = bootstrap(per_image["intersection"], per_image["union"])
        row["mIoU_low"] = interval.low if interval else math.nan
        row["mIoU_high"] = interval.high if interval else math.nan
        row.update({
            "images_per_second": _number(speed.get("images_per_second")),
            "latency_ms_p50": _number(speed.get("latency_ms_p50")),
            "params": _number(record.get("params")),
            "gflops_per_image": _number(speed.get("gflops_per_image")),
            "config_hash": suite.get("config_hash"),
            "accumulation": conv.get("accumulation"),
            "absent_class": conv.get("absent_class"),
            "ignore_index": conv.get("ignore_index"),
            "label_space": conv.get("label_space"),
            "eval_mode": (record.get("evaluation") or {}).get("mode"),
            "eval_images": (record.get("evaluation") or {}).get("images"),
            "precision": speed.get("precision"),
            "memory_format": speed.get("memory_format"),
            "compile": speed.get("compile"),
            "batch_size": speed.get("batch_size"),
            "input_shape": "x".join(map(str, speed["input_shape"])) if speed.get("input_shape") else None,
            "hardware": env.get("device_name"),
            "device": env.get("device"),
            "threads": env.get("threads"),
            "torch": (env.get("packages") or {}).get("torch"),
            "segbench": env.get("segbench"),
            "git_commit": (env.get("git_commit") or "")[:12] or None,
            "mlflow_run_id": record.get("mlflow_run_id"),
            "source": source,
            "time": time,
        })
        iou = {item.get("class"): item.get("IoU") for item in record.get("per_class") or []}
        row.update({f"IoU.{name}": _number(iou.get(name)) for name in classes})
        rows.append(row)
    return rows


def mlflow_frame(tracking_uri: str | None = None, experiments: list[str] | None = None) -> pd.DataFrame:
    """``mlflow.search_runs`` of every model's child run, with its parent's tags and params as ``parent.*``."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(_client(tracking_uri).tracking_uri)
    try:
        frame = mlflow.search_runs(experiment_names=experiments, search_all_experiments=experiments is None)
    finally:
        mlflow.set_tracking_uri(previous)
    if frame.empty or "tags.mlflow.parentRunId" not in frame or "tags.segbench.kind" not in frame:
        return pd.DataFrame()
    parents = frame[frame["tags.segbench.kind"] == "run"].set_index("run_id").add_prefix("parent.")
    children = frame[frame["tags.mlflow.parentRunId"].isin(parents.index)]
    return children.join(parents, on="tags.mlflow.parentRunId")


def frame_rows(frame: pd.DataFrame) -> list[dict]:
    """Leaderboard rows from ``mlflow_frame``: what MLflow holds (no per-image data, so no interval, no GFLOPs)."""
    rows = []
    for _, run in frame.iterrows():
        get = partial(_get, run)
        classes = sorted(key[len("metrics.IoU."):] for key in frame.columns
                         if key.startswith("metrics.IoU.") and get(key) is not None)
        ignore_index = int(get("parent.params.data.ignore_index") or 255)
        dataset = get("parent.params.data.name") or "?"
        conv = convention(len(classes), ignore_index, f"{dataset}-{len(classes)}")
        start = get("start_time")
        row = {"suite": get("parent.tags.segbench.suite"), "model": get("params.model"), "arch": get("params.arch"),
               "backbone": get("params.backbone")}
        row.update({name: _number(get(f"metrics.{name}")) for name in QUALITY})
        row.update({
            "mIoU_low": math.nan, "mIoU_high": math.nan,
            "images_per_second": _number(get("metrics.images_per_second")),
            "latency_ms_p50": _number(get("metrics.latency_ms_p50")),
            "params": float(get("params.params") or "nan"),
            "gflops_per_image": math.nan,
            "config_hash": get("parent.tags.segbench.suite_hash"),
            "accumulation": conv["accumulation"], "absent_class": conv["absent_class"],
            "ignore_index": ignore_index, "label_space": conv["label_space"],
            "eval_mode": get("parent.params.eval.mode"), "eval_images": None,
            "precision": get("parent.params.bench.precision"), "memory_format": None, "compile": None,
            "batch_size": None, "input_shape": None,
            "hardware": get("parent.tags.segbench.hardware"), "device": get("parent.tags.segbench.device"),
            "threads": None, "torch": None, "segbench": get("parent.tags.segbench.version"),
            "git_commit": (get("parent.tags.mlflow.source.git.commit") or "")[:12] or None,
            "mlflow_run_id": get("run_id"),
            "source": f"MLflow run {get('tags.mlflow.parentRunId')}",
            "time": start.timestamp() if start is not None else math.nan,
        })
        row.update({f"IoU.{name}": _number(get(f"metrics.IoU.{name}")) for name in classes})
        rows.append(row)
    return rows


def collect(sources: list[Path | str], tracking_uri: str | None = None) -> pd.DataFrame:
    """All rows from results.json files (and MLflow when ``tracking_uri`` is given), newest per model kept."""
    rows = []
    for source in sources:
        for path in find_results(source):
            rows += model_rows(read_results(path), str(path), path.stat().st_mtime)
    if tracking_uri:
        rows += frame_rows(mlflow_frame(tracking_uri))
    if not rows:
        raise UserError("no results to report: name results.json files or folders, or a tracking URI")
    frame = pd.DataFrame(rows)
    # The same MLflow run from a results.json and from MLflow: keep the file's richer row.
    known = frame["mlflow_run_id"].notna()
    frame = pd.concat([frame[~known], frame[known].drop_duplicates("mlflow_run_id", keep="first")])
    frame = frame.sort_values("time", na_position="first")
    frame = frame.drop_duplicates(["suite", "model", "config_hash", "hardware"], keep="last")
    return frame.sort_values(["suite", "mIoU"], ascending=[True, False], na_position="last").reset_index(drop=True)


# ---------------------------------------------------------------- Markdown and CSV


def _cell(value, kind: str, row: pd.Series | None = None) -> str:
    """A table cell as text: metrics in percent, missing values as a dash."""
    if kind == "ci":
        low, high = row["mIoU_low"], row["mIoU_high"]
        return "-" if math.isnan(low) else f"[{100 * low:.2f}, {100 * high:.2f}]"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}"
    if kind == "mega":
        return f"{value / 1e6:.2f}"
    if kind in ("num1", "num2"):
        return f"{value:.{kind[-1]}f}"
    return str(value)


def _md(text: str) -> str:
    """Escape a cell for a Markdown table that GitHub renders (which would also render raw HTML)."""
    return escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def _groups(frame: pd.DataFrame) -> pd.DataFrame:
    """The distinct settings of a suite's rows, one row per group."""
    settings = frame[list(SETTINGS)].map(lambda v: "-" if v is None or v != v else str(v))
    return settings.drop_duplicates().reset_index(drop=True)


def to_markdown(frame: pd.DataFrame, suite: str) -> str:
    """The leaderboard as a GitHub Markdown table, metrics in percent, then the settings behind it."""
    lines = [f"## {_md(suite)} leaderboard", "",
             "| # | " + " | ".join(header for header, _ in TABLE.values()) + " |",
             "|---:|" + "|".join("---" if kind == "text" else "---:" for _, kind in TABLE.values()) + "|"]
    for rank, (_, row) in enumerate(frame.iterrows(), 1):
        cells = [_md(_cell(row.get(column), kind, row)) for column, (_, kind) in TABLE.items()]
        lines.append(f"| {rank} | " + " | ".join(cells) + " |")
    lines += ["", f"mIoU CI: {LEVEL:.0%} bootstrap percentile interval over images. Settings:", ""]
    for _, group in _groups(frame).iterrows():
        lines.append("- " + "; ".join(f"{label} {_md(group[key])}" for key, label in SETTINGS.items()))
    return "\n".join(lines) + "\n"


def to_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Every row column, quality as fractions (as in results.json), empty for missing values."""
    frame.drop(columns=["time"]).to_csv(path, index=False)
    return path


# ---------------------------------------------------------------- HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1360px;
padding:0 16px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.muted{color:#5b6475}a{color:#1f5fbf}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:6px 0}
th,td{padding:4px 8px;border-bottom:1px solid #e3e6ec;white-space:nowrap}
th{background:#f3f5f9;text-align:left;font-weight:600}
td.n,th.n{text-align:right}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:hover{background:#e6ebf3}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:10px}
th[aria-sort=descending]::after{content:" \\25BC";font-size:10px}
tbody tr:nth-child(even){background:#fafbfd}
table.heat td.n{min-width:48px;text-align:center}
.scroll{overflow-x:auto}
svg text{font:12px system-ui,sans-serif;fill:#1d2330}
svg .axis{stroke:#8a93a6}svg .grid{stroke:#eceff4}
svg .pt{fill:#7d8aa5}svg .front{fill:#e0662a;stroke:#fff;stroke-width:1.5}
svg .frontline{fill:none;stroke:#e0662a;stroke-width:2;stroke-dasharray:5 3}
svg .ci{stroke:#9aa4b8;stroke-width:1.5}
tr.differ td{background:#fff4d6}
"""

# Sort on header click by each cell's data-v (numbers) or text; missing values last. A #sort=column[:asc|:desc]
# fragment sorts on load, so a sorted view can be linked.
JS = """
(function(){
function key(cell){var v=cell.getAttribute('data-v');if(v===null)return cell.textContent.trim().toLowerCase();
  return v===''?null:parseFloat(v);}
function sortBy(table,index,dir){
  var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){var x=key(a.cells[index]),y=key(b.cells[index]);
    if(x===null||y===null)return x===y?0:(x===null?1:-1);
    return (x<y?-1:x>y?1:0)*(dir==='ascending'?1:-1);});
  rows.forEach(function(r){body.appendChild(r);});
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
    if(i===index)th.setAttribute('aria-sort',dir);else th.removeAttribute('aria-sort');});
}
Array.prototype.forEach.call(document.querySelectorAll('table.sortable'),function(table){
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
    th.addEventListener('click',function(){
      var dir=th.getAttribute('aria-sort')==='descending'?'ascending':'descending';
      if(!th.hasAttribute('aria-sort')&&th.getAttribute('data-kind')==='text')dir='ascending';
      sortBy(table,i,dir);});});
  var m=/^#sort=([\\w.]+)(?::(asc|desc))?$/.exec(location.hash);
  if(m){var th=table.querySelector('th[data-col="'+m[1]+'"]');
    if(th)sortBy(table,th.cellIndex,m[2]==='asc'?'ascending':'descending');}
  table.setAttribute('data-ready','1');
});
})();
"""

# Viridis stops for the IoU heatmap (0 -> 1).
VIRIDIS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


def _colour(value: float) -> tuple[str, str]:
    """Background and text colour for an IoU in [0, 1]."""
    x = min(max(value, 0.0), 1.0) * (len(VIRIDIS) - 1)
    i = min(int(x), len(VIRIDIS) - 2)
    rgb = [round(a + (b - a) * (x - i)) for a, b in zip(VIRIDIS[i], VIRIDIS[i + 1])]
    light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})", "#111" if light else "#fff"


def _e(value) -> str:
    return escape(str(value), quote=True)


def _data_value(value) -> str | None:
    """A number as a data-v attribute for sorting (empty for NaN); None for text."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return "" if math.isnan(value) else repr(float(value))
    return None


def leaderboard_html(frame: pd.DataFrame) -> str:
    """The sortable leaderboard table."""
    head = "".join(
        f'<th data-col="{_e(column)}" data-kind="{kind}"{" class=n" if kind != "text" else ""}'
        f'{" aria-sort=descending" if column == "mIoU" else ""}>{_e(header)}</th>'
        for column, (header, kind) in TABLE.items())
    body = []
    for _, row in frame.iterrows():
        cells = []
        for column, (_, kind) in TABLE.items():
            value = row["mIoU_low"] if kind == "ci" else row.get(column)
            number = _data_value(value)
            attr = f' data-v="{number}"' if number is not None else ""
            title = f' title="{_e(row["source"])}"' if column == "model" else ""
            cells.append(f'<td{attr}{title}{" class=n" if kind != "text" else ""}>{_e(_cell(value, kind, row))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="sortable" id="leaderboard"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def heatmap_html(frame: pd.DataFrame) -> str:
    """Per-class IoU (percent) as a table whose cells are coloured by value."""
    classes = [c[len("IoU."):] for c in frame.columns if c.startswith("IoU.") and frame[c].notna().any()]
    if not classes:
        return '<p class="muted">No per-class IoU in these results.</p>'
    head = "<th>model</th>" + "".join(f'<th class="n">{_e(name)}</th>' for name in classes)
    rows = []
    for _, row in frame.iterrows():
        cells = [f"<td>{_e(row['label'])}</td>"]
        for name in classes:
            value = row[f"IoU.{name}"]
            if math.isnan(value):
                cells.append('<td class="n muted" title="absent: NaN, left out of the mean">-</td>')
            else:
                background, colour = _colour(value)
                cells.append(f'<td class="n" style="background:{background};color:{colour}">{100 * value:.1f}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="heat"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def pareto_front(speed: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Mask of the points no other point beats on both speed and quality (higher is better for both)."""
    front = np.ones(len(speed), dtype=bool)
    for i in range(len(speed)):
        better = (speed >= speed[i]) & (quality >= quality[i]) & ((speed > speed[i]) | (quality > quality[i]))
        front[i] = not better.any()
    return front


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values spanning [low, high]."""
    span = (high - low) or abs(high) or 1.0
    step = 10 ** math.floor(math.log10(span / count))
    step *= next(m for m in (1, 2, 5, 10) if span / (step * m) <= count)
    return [t for t in np.arange(math.ceil(low / step) * step, high + step / 2, step).tolist() if low <= t <= high]


def scatter_svg(frame: pd.DataFrame, width: int = 760, height: int = 420) -> str:
    """Inline SVG: images/s (log scale when they span more than 10x) against mIoU, Pareto front highlighted."""
    data = frame[frame["images_per_second"].notna() & frame["mIoU"].notna()]
    if data.empty:
        return '<p class="muted">No speed and mIoU pairs to plot.</p>'
    left, right, top, bottom = 64, 150, 16, 48
    speed = data["images_per_second"].to_numpy(float)
    quality = 100 * data["mIoU"].to_numpy(float)
    low_q = 100 * data["mIoU_low"].to_numpy(float)
    high_q = 100 * data["mIoU_high"].to_numpy(float)
    log = speed.max() / max(speed.min(), 1e-9) > 10
    fx = np.log10 if log else (lambda v: np.asarray(v, float))
    x0, x1 = fx(speed.min()), fx(speed.max())
    pad = (x1 - x0) * 0.08 or (abs(x1) * 0.1 if not log else 0.1) or 1.0
    x0, x1 = x0 - pad, x1 + pad
    y_all = np.concatenate([quality, low_q[~np.isnan(low_q)], high_q[~np.isnan(high_q)]])
    y0, y1 = y_all.min(), y_all.max()
    pad = (y1 - y0) * 0.1 or 1.0
    y0, y1 = max(0.0, y0 - pad), min(100.0, y1 + pad)

    def px(v):
        return left + (fx(v) - x0) / (x1 - x0) * (width - left - right)

    def py(v):
        return top + (y1 - v) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="images per second against mIoU">']
    for t in _ticks(y0, y1):
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{py(t):.1f}" y2="{py(t):.1f}"/>'
                     f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    if log:  # 1-2-5 steps in every decade of the range
        x_ticks = [m * 10 ** d for d in range(math.floor(x0), math.ceil(x1) + 1) for m in (1, 2, 5)
                   if x0 <= math.log10(m * 10 ** d) <= x1]
    else:
        x_ticks = _ticks(x0, x1)
    for t in x_ticks:
        parts.append(f'<line class="grid" y1="{top}" y2="{height - bottom}" x1="{px(t):.1f}" x2="{px(t):.1f}"/>'
                     f'<text x="{px(t):.1f}" y="{height - bottom + 16}" text-anchor="middle">{t:g}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{height - bottom}" y2="{height - bottom}"/>'
                 f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{height - bottom}"/>'
                 f'<text x="{(left + width - right) / 2}" y="{height - 10}" text-anchor="middle">images/s'
                 f'{" (log scale)" if log else ""}, higher is faster</text>'
                 f'<text transform="translate(16 {(top + height - bottom) / 2}) rotate(-90)" '
                 f'text-anchor="middle">mIoU %</text>')
    front = pareto_front(speed, quality)
    order = np.argsort(-speed[front])
    line = " ".join(f"{px(s):.1f},{py(q):.1f}" for s, q in zip(speed[front][order], quality[front][order]))
    parts.append(f'<polyline class="frontline" points="{line}"/>')
    for i, (_, row) in enumerate(data.iterrows()):
        x, y = px(speed[i]), py(quality[i])
        if not math.isnan(low_q[i]):
            parts.append(f'<line class="ci" x1="{x:.1f}" x2="{x:.1f}" y1="{py(low_q[i]):.1f}" '
                         f'y2="{py(high_q[i]):.1f}"/>')
        tip = f"{row['label']}: mIoU {quality[i]:.2f}%, {speed[i]:.1f} images/s, {row['hardware']}"
        parts.append(f'<circle class="{"front" if front[i] else "pt"}" cx="{x:.1f}" cy="{y:.1f}" '
                     f'r="{6 if front[i] else 4.5}"><title>{_e(tip)}</title></circle>'
                     f'<text x="{x + 8:.1f}" y="{y - 6:.1f}">{_e(row["label"])}</text>')
    parts.append(f'<circle class="front" cx="{width - right + 20}" cy="{top + 10}" r="6"/>'
                 f'<text x="{width - right + 32}" y="{top + 14}">Pareto front</text>'
                 f'<line class="ci" x1="{width - right + 20}" x2="{width - right + 20}" y1="{top + 26}" '
                 f'y2="{top + 44}"/><text x="{width - right + 32}" y="{top + 40}">{LEVEL:.0%} CI</text></svg>')
    return "".join(parts)


def settings_html(frame: pd.DataFrame) -> str:
    """The settings behind the suite's numbers, one column per distinct group; rows that differ are marked."""
    groups = _groups(frame)
    head = "<th>setting</th>" + "".join(f"<th>group {i + 1}</th>" for i in range(len(groups)))
    rows = []
    for key, label in SETTINGS.items():
        differ = groups[key].nunique() > 1
        cells = "".join(f"<td>{_e(value)}</td>" for value in groups[key])
        rows.append(f'<tr{" class=differ" if differ else ""}><td>{_e(label)}</td>{cells}</tr>')
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'



def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}<script>{JS}</script></body></html>\n")


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def labels(frame: pd.DataFrame) -> pd.Series:
    """Model names, with the config hash and hardware appended where a suite's rows have several."""
    label = frame["model"].astype(str)
    for column, width in (("config_hash", 6), ("hardware", 24)):
        if frame[column].nunique(dropna=False) > 1:
            label = label + " @" + frame[column].astype(str).str[:width]
    return label


def to_html(frame: pd.DataFrame, suite: str) -> str:
    """The suite's self-contained page: leaderboard, per-class IoU, speed against accuracy, settings."""
    frame = frame.assign(label=labels(frame))
    hardware = frame["hardware"].dropna().unique()
    caution = (f'<p class="muted">Speed measured on {len(hardware)} kinds of hardware: compare speeds within one.</p>'
               if len(hardware) > 1 else "")
    body = (f'<p class="muted"><a href="../index.html">all suites</a></p><h1>{_e(suite)}</h1>'
            f'<p class="muted">{len(frame)} models; generated {_stamp()}. Click a header to sort. Metrics in percent; '
            f"mIoU CI is a {LEVEL:.0%} bootstrap percentile interval over images; images/s are samples per second "
            f"at the speed batch size; latency is per batch.</p>"
            f"<h2>Leaderboard</h2>{leaderboard_html(frame)}"
            f"<h2>Per-class IoU %</h2>{heatmap_html(frame)}"
            f"<h2>Speed against accuracy</h2>{caution}{scatter_svg(frame)}"
            f'<h2>Settings</h2><p class="muted">Numbers are comparable within one group; highlighted settings '
            f"differ between groups.</p>{settings_html(frame)}"
            f'<h2>Sources</h2><ul>{"".join(f"<li>{_e(s)}</li>" for s in frame["source"].unique())}</ul>')
    return _page(f"segbench: {suite}", body)


def index_html(frames: dict[str, pd.DataFrame], folders: dict[str, str]) -> str:
    """The site's front page: one row per suite with its best model."""
    rows = []
    for suite, frame in frames.items():
        best = frame.iloc[0]
        rows.append(f'<tr><td><a href="{_e(folders[suite])}/index.html">{_e(suite)}</a></td>'
                    f'<td class="n" data-v="{len(frame)}">{len(frame)}</td><td>{_e(best["model"])}</td>'
                    f'<td class="n" data-v="{_data_value(best["mIoU"])}">{_cell(best["mIoU"], "pct")}</td>'
                    f'<td>{_e(", ".join(map(str, frame["hardware"].dropna().unique())))}</td></tr>')
    body = (f"<h1>segbench leaderboards</h1><p class=\"muted\">Generated {_stamp()}.</p>"
            '<table class="sortable"><thead><tr><th data-kind="text">suite</th><th class="n">models</th>'
            '<th data-kind="text">best model</th><th class="n">best mIoU %</th><th data-kind="text">hardware</th>'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    return _page("segbench leaderboards", body)


def _folder(suite: str) -> str:
    """A file-system-safe folder name for a suite."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", suite).strip("._") or "suite"


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def build_report(sources: list[Path | str], out_dir: Path | str | None = None,
                 tracking_uri: str | None = None) -> list[Path]:
    """Write ``<out_dir>/<suite>/{leaderboard.md,leaderboard.csv,index.html}`` and ``<out_dir>/index.html``."""
    frame = collect(sources, tracking_uri)
    root = Path(out_dir) if out_dir is not None else REPORT_DIR
    frames = {}
    for suite, group in frame.groupby("suite", sort=True):  # classes of other suites are all NaN here
        empty = [c for c in group.columns if c.startswith("IoU.") and group[c].isna().all()]
        frames[str(suite)] = group.drop(columns=empty).reset_index(drop=True)
    folders = {suite: _folder(suite) for suite in frames}
    written = []
    for suite, group in frames.items():
        folder = root / folders[suite]
        folder.mkdir(parents=True, exist_ok=True)
        written += [_write(folder / "leaderboard.md", to_markdown(group, suite)),
                    to_csv(group, folder / "leaderboard.csv"),
                    _write(folder / "index.html", to_html(group, suite))]
    written.append(_write(root / "index.html", index_html(frames, folders)))
    return written
