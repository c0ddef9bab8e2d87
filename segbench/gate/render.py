"""The gate's verdicts for people and machines: a console text, a Markdown PR comment and a JSON summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from segbench.core.files import atomic_write, markdown_cell
from segbench.gate.compare import GateResult


def _number(value, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table(result: GateResult) -> pd.DataFrame:
    """The checks as display strings: values, change and its CI, limit, status."""
    rows = []
    for _, c in result.checks.iterrows():
        unit = c["unit"] or ""
        value_digits = 3 if c["check"] == "speed" and result.speed.mode == "ratio" else 2
        ci = "-" if pd.isna(c["ci_low"]) else f"[{_number(c['ci_low'])}, {_number(c['ci_high'])}]"
        rows.append({"model": c["model"], "check": c["check"], "baseline": _number(c["baseline"], value_digits),
                     "run": _number(c["run"], value_digits),
                     "change": "-" if pd.isna(c["change"]) else f"{c['change']:+.2f} {unit}",
                     f"{result.policy.level:.0%} CI": ci,
                     "limit": "-" if pd.isna(c["limit"]) else f"{c['limit']:+.2f} {unit}",
                     "status": c["status"], "note": "" if pd.isna(c["note"]) else c["note"]})
    return pd.DataFrame(rows)


def legend(result: GateResult) -> list[str]:
    """What the columns mean: units, the interval, pairing."""
    policy = result.policy
    pairing = "paired over the same images" if result.paired else "unpaired (different images)"
    units = "quality in percent, change in percentage points (pp)"
    interval = f"CI: quality, {policy.level:.0%} bootstrap interval of the change, {pairing}"
    lines = [units]
    if result.speed.mode != "off":
        lines.append(result.speed.describe())
        interval += ("; speed, the typical range over the timed repeats (a drop fails only beyond it and beyond the "
                     "noise floor, the widest typical spread of the repeats compared)")
    lines.append(interval)
    if policy.max_backend_diff_points:
        lines.append("backend parity (check METRIC BACKEND): baseline column = eager, run column = the backend, "
                     "both from the run; it fails when |change| exceeds the limit")
    return lines


def markdown(result: GateResult) -> str:
    """A PR comment: verdict, table, legend and notes."""
    cells = table(result).map(markdown_cell)
    lines = [f"### segbench gate: **{'PASS' if result.passed else 'FAIL'}**", "",
             f"Run `{result.run}` against baseline `{result.baseline}`.", "",
             cells.to_markdown(index=False, disable_numparse=True), ""]
    lines += [f"- {markdown_cell(line)}" for line in legend(result) + result.notes]
    return "\n".join(lines) + "\n"


def text(result: GateResult) -> str:
    """Plain text for a console or a CI log: table, legend, notes, verdict."""
    lines = [f"segbench gate: {result.run} against baseline {result.baseline}", "",
             table(result).to_string(index=False), ""]
    lines += legend(result) + [f"note: {note}" for note in result.notes]
    lines.append("PASS" if result.passed else "FAIL: regression")
    return "\n".join(lines)


def summary(result: GateResult) -> dict:
    """The verdict, settings, legend, notes and every check as plain JSON data (missing values as null)."""
    checks = result.checks.astype(object).where(result.checks.notna(), None)
    return {"passed": result.passed, "exit_code": result.exit_code, "run": result.run, "baseline": result.baseline,
            "settings": result.settings, "legend": legend(result), "notes": result.notes,
            "checks": checks.to_dict(orient="records")}


def write_summary(result: GateResult, out_dir: Path | str) -> list[Path]:
    """``gate.md`` (for a PR comment) and ``gate.json`` in ``out_dir``."""
    out_dir = Path(out_dir)
    return [atomic_write(out_dir / "gate.md", markdown(result)),
            atomic_write(out_dir / "gate.json", json.dumps(summary(result), indent=2, allow_nan=False) + "\n")]
