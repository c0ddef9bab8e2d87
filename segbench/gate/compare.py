"""The CI gate: compare a run with a baseline model by model; fail on a quality or speed regression.

Units. results.json stores quality as fractions; the gate takes and prints quality in percentage points
(``max_drop_points={"mIoU": 0.5}`` allows mIoU to fall from 71.20 % to 70.70 %, i.e. 0.005 as a fraction).
Speed tolerances are relative, in percent; how speed is compared, and when a drop is beyond the noise of the
timed repeats, is segbench.gate.speed's.

Exit codes: 0 pass, 1 regression (including a baseline model missing from the run: the change under test
dropped coverage the baseline promises; restore the model or update the baseline; and a NaN or infinite figure
in the run), 2 usage error or unreadable data (a UserError; a non-finite figure in the baseline is one). This
module holds the verdicts and makes a run the new baseline (``update_baseline``); gate.render prints and writes
the verdicts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from segbench.errors import UserError
from segbench.gate import speed as speeds
from segbench.gate.policy import (
    MAX_DROP_POINTS,
    MAX_SPEED_DROP_PERCENT,
    GatePolicy,
    check_metric_names,
    parse_max_drops,
)
from segbench.gate.speed import SpeedComparison
from segbench.metrics.confusion import REGISTRY
from segbench.metrics.per_image import PER_IMAGE_MEANS, bootstrap_mean_difference
from segbench.metrics.registry import MetricEntry
from segbench.metrics.statistics import STATISTICS, bootstrap_difference
from segbench.report.protocol import differing_settings
from segbench.results.find import load_results
from segbench.results.schema import ModelRecord, Results, plain, read_results, write_results

__all__ = ["MAX_DROP_POINTS", "MAX_SPEED_DROP_PERCENT", "GatePolicy", "GateResult", "gate", "parse_max_drops"]
FAILING = ("fail", "missing")
COLUMNS = ["model", "check", "baseline", "run", "change", "limit", "unit", "ci_low", "ci_high", "p_value",
           "status", "note"]


@dataclass
class GateResult:
    """The checks (one row per model and check, COLUMNS), the labels of run and baseline, the policy applied, how
    speed was compared, whether quality was paired over the same images, notes."""

    checks: pd.DataFrame
    run: str
    baseline: str
    policy: GatePolicy
    speed: SpeedComparison
    paired: bool
    notes: list[str] = field(default_factory=list)

    @property
    def settings(self) -> dict:
        """The policy, the comparison made and the units, as plain data (gate.json)."""
        return self.policy.to_dict() | {
            "paired": self.paired, "speed_comparison": self.speed.mode, "speed_reference": self.speed.reference,
            "speed_comparison_reason": self.speed.why,
            "units": {"quality": "percent; change in percentage points",
                      "speed": "images/s or ratio to the reference; change in percent"}}

    @property
    def passed(self) -> bool:
        """No check failed and no baseline model is missing."""
        return not self.checks["status"].isin(FAILING).any()

    @property
    def exit_code(self) -> int:
        """0 on pass, 1 on a regression."""
        return 0 if self.passed else 1


def same_images(run: Results, baseline: Results) -> bool:
    """True when both were evaluated on the same images: same data set, split, data settings and seed."""
    def key(results: Results) -> str:
        config = results.suite.config
        data = {k: v for k, v in (config.get("data") or {}).items() if k != "num_workers"}
        return json.dumps([plain(results.dataset), data, config.get("seed")], sort_keys=True)

    return key(run) == key(baseline)


def _check_comparable(run: Results, baseline: Results) -> list[str]:
    """Refuse results that cannot be compared (UserError); return notes on what differs but may."""
    if run.suite.name != baseline.suite.name:
        raise UserError(f"run is suite '{run.suite.name}', baseline is suite '{baseline.suite.name}'")
    for key in ("convention", "dataset"):
        mine, theirs = plain(getattr(run, key)) or {}, plain(getattr(baseline, key)) or {}
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differ:
            raise UserError(f"run and baseline differ in {key} ({', '.join(differ)}): their numbers are not comparable")
    notes = []
    if run.suite.config_hash != baseline.suite.config_hash:
        differ = differing_settings([run.suite.config, baseline.suite.config])
        notes.append(f"suite settings differ (config hash {run.suite.config_hash} vs baseline "
                     f"{baseline.suite.config_hash}): {', '.join(differ) or 'keys not recorded'}")
    return notes


def _per_image(record: ModelRecord) -> tuple | None:
    data = record.per_image
    return (data.intersection, data.union) if data and data.intersection else None


def _entry(metric: str, definitions: dict) -> MetricEntry:
    """The registry's entry for ``metric``, else one built from the results' own definition (a user's metric)."""
    if metric in REGISTRY:
        return REGISTRY.get(metric)
    defined = definitions[metric]
    get = defined.get if isinstance(defined, dict) else lambda key, default=None: getattr(defined, key, default)
    return MetricEntry(metric, get("definition", ""), get("convention", ""), get("equals", ""),
                       unit=get("unit", "fraction") or "fraction", higher_is_better=get("higher_is_better", True))


def _quality_rows(name: str, base: ModelRecord, mine: ModelRecord, policy: GatePolicy, paired: bool,
                  definitions: dict) -> list[dict]:
    rows = []
    level, resamples, seed = policy.level, policy.resamples, policy.seed
    for metric, tolerance in policy.max_drop_points.items():
        b, r = base.metrics.get(metric), mine.metrics.get(metric)
        entry = _entry(metric, definitions)  # fractions in percentage points; distances in their unit, lower better
        scale, sign = entry.scale, 1 if entry.higher_is_better else -1
        row = {"model": name, "check": metric, "unit": "pp" if entry.unit == "fraction" else entry.unit,
               "limit": -sign * tolerance, "baseline": None if b is None else scale * b,
               "run": None if r is None else scale * r}
        if r is None:
            rows.append(row | {"status": "fail", "note": "no value in the run"})
            continue
        if not math.isfinite(r):
            rows.append(row | {"run": None, "status": "fail", "note": f"{metric} is {r} in the run"})
            continue
        row["change"] = scale * (r - b)
        note = ""
        drop_significant = None
        pairs = (_per_image(mine), _per_image(base))
        if (metric in STATISTICS or metric in PER_IMAGE_MEANS) and None not in pairs:
            both_paired = paired and len(pairs[0][0]) == len(pairs[1][0])
            if metric in STATISTICS:
                diff = bootstrap_difference(pairs[0], pairs[1], both_paired, metric, resamples, level, seed)
                low, high, p_value = diff.low, diff.high, diff.p_value
            else:
                low, high, p_value = bootstrap_mean_difference(pairs[0], pairs[1], both_paired, metric, resamples,
                                                               level, seed)
            row.update(ci_low=100 * low, ci_high=100 * high, p_value=p_value)
            drop_significant = high < 0
        beyond = sign * row["change"] < -tolerance - 1e-9
        if not beyond:
            status = "ok"
        elif not policy.require_significant:
            status = "fail"
        elif drop_significant is None:
            status, note = "fail", "no per-image data: significance not tested"
        else:
            status = "fail" if drop_significant else "noise"
        rows.append(row | {"status": status, "note": note})
    return rows


def _parity_rows(record: ModelRecord, max_diff_points: dict[str, float]) -> list[dict]:
    """Deployment parity within the run: each backend's metric against eager's, |difference| in points."""
    entries = [e for e in (record.evaluation.backends or []) if e.status != "reference"] if record.evaluation else []
    if not entries:
        return [{"model": record.name, "check": "backend parity", "status": "fail",
                 "note": "no backend but eager evaluated (set eval.backends=[eager,onnxruntime])"}]
    rows = []
    for entry in entries:
        for metric, tolerance in max_diff_points.items():
            row = {"model": record.name, "check": f"{metric} {entry.backend}", "unit": "pp", "limit": tolerance}
            if entry.status == "skipped":
                rows.append(row | {"status": "skipped", "note": f"{entry.backend} not evaluated: {entry.reason}"})
                continue
            value, diff = entry.metrics.get(metric), entry.difference.get(metric)
            if value is None or diff is None:
                rows.append(row | {"status": "fail", "note": f"no {metric} under {entry.backend}"})
                continue
            row.update(baseline=100 * (value - diff), run=100 * value, change=100 * diff,
                       note=f"eager vs {entry.backend} in the same run; |change| <= limit")
            rows.append(row | {"status": "ok" if abs(100 * diff) <= tolerance + 1e-9 else "fail"})
    return rows


def _check_finite_baseline(baseline: Results, policy: GatePolicy, speed: SpeedComparison) -> None:
    """A baseline is trusted: a gated quality metric it lacks or holds as null, or a NaN or infinite gated figure
    in it, is a UserError naming model and metric (a check against nothing would pass whatever the run scores)."""
    for model in baseline.models:
        for metric in policy.max_drop_points:
            if model.metrics.get(metric) is None:
                state = "null" if metric in model.metrics else "missing"
                raise UserError(f"baseline: model '{model.name}' has no {metric} ({state}); a baseline must hold every "
                                "gated metric (update it from a good run with `segbench baseline update`, or gate "
                                "other metrics with --max-drop)")
        figures = {metric: model.metrics.get(metric) for metric in policy.max_drop_points}
        if speed.mode != "off" and model.first_speed is not None:
            figures["images/s"] = model.first_speed.images_per_second
        for metric, value in figures.items():
            if value is not None and not math.isfinite(value):
                raise UserError(f"baseline: model '{model.name}' has {metric} = {value}; a baseline must hold "
                                "finite numbers (update it from a good run with `segbench baseline update`)")


def gate(run: Path | str, baseline: Path | str, policy: GatePolicy | None = None,
         tracking_uri: str | None = None) -> GateResult:
    """Compare ``run`` (results.json path or folder, MLflow run id, or ``latest``) with ``baseline``, model by model.

    A quality metric fails when it drops by more than its tolerance in percentage points (with
    ``require_significant``, only when the bootstrap interval of the change also excludes zero); speed fails when
    it drops by more than the speed tolerance and beyond the noise of the timed repeats (segbench.gate.speed);
    a NaN or infinite figure fails in the run and is refused in the baseline. With ``max_backend_diff_points``
    every model of the run must also score, under each backend of its ``evaluation.backends``, within that many
    points of eager (either way); a backend skipped there (cannot run on that machine) is reported, not failed.
    """
    policy = policy or GatePolicy()
    if str(baseline) == "latest":
        raise UserError("the baseline must be a results.json path or an MLflow run id, not 'latest'")
    try:
        base_results, base_label = load_results(baseline, tracking_uri)
    except UserError as exc:
        raise UserError(f"baseline: {exc} (create one with `segbench baseline update RUN BASELINE`)") from None
    run_results, run_label = load_results(run, tracking_uri, suite=base_results.suite.name)
    definitions = {**base_results.metric_definitions, **run_results.metric_definitions}
    check_metric_names([*policy.max_drop_points, *(policy.max_backend_diff_points or {})], definitions)
    notes = _check_comparable(run_results, base_results)
    if not run_results.models:
        raise UserError(f"{run_label} holds no models")
    tolerance = policy.max_speed_drop_percent
    comparison = speeds.choose(run_results, base_results, tolerance, policy.reference_model, policy.absolute_speed)
    _check_finite_baseline(base_results, policy, comparison)
    paired = same_images(run_results, base_results)
    references = speeds.references(comparison, run_results, base_results)

    mine = {m.name: m for m in run_results.models}
    both = [base for base in base_results.models if base.name in mine]
    speed_rows = {} if tolerance is None else {row["model"]: row for row in speeds.against_suite(
        [speeds.speed_row(b.name, b, mine[b.name], tolerance, comparison, references) for b in both], tolerance,
        comparison)}
    rows, noisy = [], []
    for base in base_results.models:
        name = base.name
        if name not in mine:
            rows.append({"model": name, "check": "present", "status": "missing",
                         "note": "in the baseline, not in the run"})
            continue
        rows += _quality_rows(name, base, mine[name], policy, paired, definitions)
        if tolerance is not None:
            rows.append(speed_rows[name])
            noisy.append(speeds.noisy(name, base, mine[name], tolerance))
    if any(noisy):
        notes.append("timed repeats spread wider than the speed tolerance (the machine was busy): "
                     + "; ".join(filter(None, noisy)))
    if policy.max_backend_diff_points:
        rows += [row for record in run_results.models
                 for row in _parity_rows(record, policy.max_backend_diff_points)]
    known = {m.name for m in base_results.models}
    rows += [{"model": name, "check": "present", "status": "new", "note": "not in the baseline"}
             for name in mine if name not in known]
    return GateResult(pd.DataFrame(rows, columns=COLUMNS), run_label, base_label, policy, comparison, paired, notes)


def update_baseline(run: Path | str, baseline: Path | str, tracking_uri: str | None = None) -> Path:
    """Write ``run``'s results (path, MLflow run id or ``latest``: the newest finished run of the existing
    baseline's suite, or of any suite when the baseline does not exist yet) to ``baseline``: the same content, as
    schema version 2 in a compact layout (innermost arrays on one line) that diffs well in review. A baseline that
    cannot be written (read-only folder, a folder in its place) is a UserError; the old file stays as it was."""
    baseline = Path(baseline)
    if baseline.is_dir():
        raise UserError(f"baseline '{baseline}' is a folder; expected a .json file to write, e.g. {baseline}/NAME.json")
    suite = read_results(baseline).suite.name if str(run) == "latest" and baseline.is_file() else None
    results, _ = load_results(run, tracking_uri, suite=suite)
    try:
        return write_results(baseline, results, compact=True)
    except OSError as exc:
        raise UserError(f"cannot write the baseline '{baseline}': {exc.strerror or exc}") from None
