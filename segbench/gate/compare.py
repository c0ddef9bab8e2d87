"""The CI gate: compare a run with a baseline model by model; fail on a quality or speed regression.

Units. results.json stores quality as fractions; the gate takes and prints quality in percentage points
(``max_drop_points={"mIoU": 0.5}`` allows mIoU to fall from 71.20 % to 70.70 %, i.e. 0.005 as a fraction).
Speed tolerances are relative, in percent of the baseline's images/s (of the first speed record), or of
the ratio to a reference model measured in the same run when ``reference_model`` is named, which cancels
a machine that is slower or busier overall.

Exit codes: 0 pass, 1 regression (including a baseline model missing from the run: the change under test
dropped coverage the baseline promises; restore the model or update the baseline), 2 usage error or
unreadable data (a UserError). This module holds the verdicts; gate_render prints and writes them and
baseline makes a run the new baseline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from segbench.config.schema import UNHASHED
from segbench.core.files import flatten
from segbench.errors import UserError, closest
from segbench.metrics.confusion import REGISTRY
from segbench.metrics.per_image import PER_IMAGE_MEANS, bootstrap_mean_difference
from segbench.metrics.statistics import LEVEL, RESAMPLES, STATISTICS, bootstrap_difference
from segbench.results.find import load_results
from segbench.results.schema import ModelRecord, Results, Speed, plain

MAX_DROP_POINTS = {"mIoU": 0.5}
MAX_SPEED_DROP_PERCENT = 20.0
FAILING = ("fail", "missing")
SPEED_SETTINGS = ("batch_size", "input_shape", "precision", "memory_format", "compile", "backend")  # must match
COLUMNS = ["model", "check", "baseline", "run", "change", "limit", "unit", "ci_low", "ci_high", "p_value",
           "status", "note"]


@dataclass
class GateResult:
    """The checks (one row per model and check, COLUMNS), the labels of run and baseline, settings, notes."""

    checks: pd.DataFrame
    run: str
    baseline: str
    settings: dict
    notes: list[str] = field(default_factory=list)

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
        differ = _differing_settings(run.suite.config, baseline.suite.config)
        notes.append(f"suite settings differ (config hash {run.suite.config_hash} vs baseline "
                     f"{baseline.suite.config_hash}): {', '.join(differ) or 'keys not recorded'}")
    return notes


def _differing_settings(run: dict, baseline: dict) -> list[str]:
    """Dotted config keys whose values differ, leaving out those that do not change the numbers."""
    mine, theirs = flatten(run), flatten(baseline)
    return sorted(key for key in set(mine) | set(theirs) if mine.get(key) != theirs.get(key)
                  and key.split(".")[0] not in UNHASHED)


def _per_image(record: ModelRecord) -> tuple | None:
    data = record.per_image
    return (data.intersection, data.union) if data and data.intersection else None


def _quality_rows(name: str, base: ModelRecord, mine: ModelRecord, max_drop_points: dict[str, float], paired: bool,
                  require_significant: bool, level: float, resamples: int, seed: int) -> list[dict]:
    rows = []
    for metric, tolerance in max_drop_points.items():
        b, r = base.metrics.get(metric), mine.metrics.get(metric)
        entry = REGISTRY.get(metric)  # fractions in percentage points; distances in their unit, lower better
        scale, sign = entry.scale, 1 if entry.higher_is_better else -1
        row = {"model": name, "check": metric, "unit": "pp" if entry.unit == "fraction" else entry.unit,
               "limit": -sign * tolerance, "baseline": None if b is None else scale * b,
               "run": None if r is None else scale * r}
        if b is None:
            rows.append(row | {"status": "skipped", "note": "no baseline value"})
            continue
        if r is None:
            rows.append(row | {"status": "fail", "note": "no value in the run"})
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
        elif not require_significant:
            status = "fail"
        elif drop_significant is None:
            status, note = "fail", "no per-image data: significance not tested"
        else:
            status = "fail" if drop_significant else "noise"
        rows.append(row | {"status": status, "note": note})
    return rows


def _speed(record: ModelRecord) -> Speed | None:
    speed = record.first_speed
    return speed if speed and speed.images_per_second else None


def _span(speed: Speed) -> tuple[float, float]:
    """The slowest and fastest of a speed record's timed repeats (its median alone if none are stored)."""
    repeats = speed.images_per_second_repeats or [speed.images_per_second]
    return min(repeats), max(repeats)


def _speed_row(name: str, base: ModelRecord, mine: ModelRecord, tolerance: float,
               reference: tuple[ModelRecord, ModelRecord] | None,
               require_significant: bool) -> dict:
    """Relative change of images/s (or of its ratio to the reference); its range spans the timing repeats."""
    b, r = _speed(base), _speed(mine)
    row = {"model": name, "check": "speed", "unit": "%", "limit": -tolerance}
    if b is None:
        return row | {"status": "skipped", "note": "no speed in the baseline"}
    if r is None:
        return row | {"status": "fail", "note": "speed not measured in the run"}
    setting = [k for k in SPEED_SETTINGS if _setting(b, k) != _setting(r, k)]
    if setting:
        return row | {"status": "skipped", "note": f"not comparable: {', '.join(setting)} differ"}
    (b_lo, b_hi), (r_lo, r_hi) = _span(b), _span(r)
    row.update(baseline=b.images_per_second, run=r.images_per_second)
    if reference is not None:
        ref_base, ref_run = (_speed(record) for record in reference)
        (rb_lo, rb_hi), (rr_lo, rr_hi) = _span(ref_base), _span(ref_run)
        b_lo, b_hi, r_lo, r_hi = b_lo / rb_hi, b_hi / rb_lo, r_lo / rr_hi, r_hi / rr_lo
        row.update(baseline=row["baseline"] / ref_base.images_per_second,
                   run=row["run"] / ref_run.images_per_second)
    row.update(change=100 * (row["run"] / row["baseline"] - 1), ci_low=100 * (r_lo / b_hi - 1),
               ci_high=100 * (r_hi / b_lo - 1))
    if row["change"] >= -tolerance - 1e-9:
        return row | {"status": "ok"}
    if not require_significant:
        return row | {"status": "fail"}
    # Significant: every timed repeat of the run slower than every one of the baseline, and repeats that agree
    # with each other within the tolerance (a machine busy for one model's whole timing cannot tell a drop).
    timed = (b, r) + ((_speed(reference[0]), _speed(reference[1])) if reference is not None else ())
    spreads = [100 * (speed.spread or 0.0) for speed in timed]
    if max(spreads) > tolerance:
        return row | {"status": "noise", "note": f"timing spread {max(spreads):.0f}% > {tolerance:g}%"}
    return row | {"status": "fail" if row["ci_high"] < 0 else "noise"}


def _setting(speed: Speed, key: str) -> object:
    """A speed setting; a record written before backends existed ran eager (or torch.compile)."""
    value = getattr(speed, key)
    return ("compile" if speed.compile else "eager") if key == "backend" and value is None else value


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


def _noisy(name: str, base: ModelRecord, mine: ModelRecord, tolerance: float) -> str | None:
    """``name (baseline 35%, run 12%)`` when a speed record's repeats spread wider than the tolerance."""
    spreads = [f"{label} {100 * speed.spread:.0f}%" for label, speed in (("baseline", _speed(base)),
                                                                       ("run", _speed(mine)))
               if speed and speed.spread is not None and 100 * speed.spread > tolerance]
    return f"{name} ({', '.join(spreads)})" if spreads else None


def parse_max_drops(items: list[str], defaults: dict[str, float] | None = None) -> dict[str, float]:
    """``["mIoU=0.5", "mDice=1"]`` (percentage points) merged over ``defaults`` (MAX_DROP_POINTS when None); a
    malformed item is a UserError."""
    drops = dict(MAX_DROP_POINTS if defaults is None else defaults)
    for item in items:
        metric, _, value = item.partition("=")
        try:
            drops[metric.strip()] = float(value)
        except ValueError:
            raise UserError(f"expected METRIC=POINTS such as mIoU=0.5, got '{item}'") from None
    return drops


def _check_options(max_drop_points: dict[str, float], max_speed_drop_percent: float | None, level: float) -> None:
    for metric, tolerance in max_drop_points.items():  # also the parity tolerances
        if metric not in REGISTRY:
            hints = closest(metric, REGISTRY)
            raise UserError(f"no quality metric '{metric}'" + (f"; did you mean '{hints[0]}'?" if hints else "")
                            + f" (one of {', '.join(REGISTRY)}; see `segbench list metrics`)")
        if not tolerance >= 0:
            raise UserError(f"tolerance for {metric} must be a non-negative number of points, got {tolerance}")
    if max_speed_drop_percent is not None and not 0 <= max_speed_drop_percent <= 100:
        raise UserError(f"speed tolerance must be a percentage in [0, 100], got {max_speed_drop_percent}")
    if not 0 < level < 1:
        raise UserError(f"confidence level must be in (0, 1), got {level}")


def _reference(name: str, run: Results, baseline: Results) -> tuple[ModelRecord, ModelRecord]:
    """The reference model's records in (baseline, run); it must be timed in both."""
    found = []
    for label, results in (("baseline", baseline), ("run", run)):
        records = {m.name: m for m in results.models}
        if name not in records:
            hints = closest(name, records)
            raise UserError(f"reference model '{name}' is not in the {label}"
                            + (f"; did you mean '{hints[0]}'?" if hints else ""))
        if _speed(records[name]) is None:
            raise UserError(f"reference model '{name}' has no speed record in the {label}")
        found.append(records[name])
    return found[0], found[1]


def gate(run: Path | str, baseline: Path | str, *, max_drop_points: dict[str, float] | None = None,
         max_speed_drop_percent: float | None = MAX_SPEED_DROP_PERCENT, reference_model: str | None = None,
         require_significant: bool = False, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0,
         tracking_uri: str | None = None, max_backend_diff_points: dict[str, float] | None = None) -> GateResult:
    """Compare ``run`` (results.json path or folder, MLflow run id, or ``latest``) with ``baseline``, model by model.

    A quality metric fails when it drops by more than its tolerance in percentage points; speed fails when
    images/s (or its ratio to ``reference_model``) drops by more than ``max_speed_drop_percent`` percent
    (None or 100, which allows every drop: speed not gated). With ``require_significant`` such a drop fails
    only when it is also beyond noise: the bootstrap interval of the quality change excludes zero; every
    timed repeat of the run is slower than every one of the baseline, and the repeats of both spread by
    less than the tolerance. With ``max_backend_diff_points`` every model of the run must also score, under each
    backend of its ``evaluation.backends``, within that many points of eager (either way); a backend skipped
    there (cannot run on that machine) is reported, not failed.
    """
    max_drop_points = dict(MAX_DROP_POINTS if max_drop_points is None else max_drop_points)
    _check_options(max_drop_points, max_speed_drop_percent, level)
    if max_backend_diff_points:
        _check_options(max_backend_diff_points, None, level)
    if max_speed_drop_percent == 100:
        max_speed_drop_percent = None
    if str(baseline) == "latest":
        raise UserError("the baseline must be a results.json path or an MLflow run id, not 'latest'")
    try:
        base_results, base_label = load_results(baseline, tracking_uri)
    except UserError as exc:
        raise UserError(f"baseline: {exc} (create one with `segbench baseline update RUN BASELINE`)") from None
    run_results, run_label = load_results(run, tracking_uri, suite=base_results.suite.name)
    notes = _check_comparable(run_results, base_results)
    if not run_results.models:
        raise UserError(f"{run_label} holds no models")
    paired = same_images(run_results, base_results)
    reference = _reference(reference_model, run_results, base_results) if reference_model else None
    if max_speed_drop_percent is not None and reference is None and _hardware(run_results) != _hardware(base_results):
        notes.append("run and baseline ran on different hardware: raw speeds compared; name a reference model")

    mine = {m.name: m for m in run_results.models}
    rows, noisy = [], []
    for base in base_results.models:
        name = base.name
        if name not in mine:
            rows.append({"model": name, "check": "present", "status": "missing",
                         "note": "in the baseline, not in the run"})
            continue
        rows += _quality_rows(name, base, mine[name], max_drop_points, paired, require_significant, level,
                              resamples, seed)
        if max_speed_drop_percent is not None:
            if name == reference_model:
                rows.append({"model": name, "check": "speed", "status": "reference", "note": "raw images/s",
                             "baseline": _speed(base).images_per_second,
                             "run": _speed(mine[name]).images_per_second})
            else:
                rows.append(_speed_row(name, base, mine[name], max_speed_drop_percent, reference,
                                       require_significant))
            noisy.append(_noisy(name, base, mine[name], max_speed_drop_percent))
    if any(noisy):
        notes.append("timed repeats spread wider than the speed tolerance, so speed here is mostly noise: "
                     + "; ".join(filter(None, noisy)))
    if max_backend_diff_points:
        rows += [row for record in run_results.models for row in _parity_rows(record, max_backend_diff_points)]
    known = {m.name for m in base_results.models}
    rows += [{"model": name, "check": "present", "status": "new", "note": "not in the baseline"}
             for name in mine if name not in known]

    settings = {"max_drop_points": max_drop_points, "max_speed_drop_percent": max_speed_drop_percent,
                "reference_model": reference_model, "require_significant": require_significant, "level": level,
                "resamples": resamples, "seed": seed, "paired": paired,
                "max_backend_diff_points": max_backend_diff_points or None,
                "units": {"quality": "percent; change in percentage points", "speed": "images/s or ratio to the "
                          "reference; change in percent"}}
    return GateResult(pd.DataFrame(rows, columns=COLUMNS), run_label, base_label, settings, notes)


def _hardware(results: Results) -> str | None:
    return results.environment.device_name if results.environment else None
