"""The gate's speed check: which comparison (a ratio to a reference model of the same run, or raw images/s), and
when a drop is a regression rather than the noise of a shared machine.

Comparison. Two processes on one machine rarely run at the same speed, so raw images/s of a run and a baseline
differ by whatever else the machine did. By default speed is compared as a ratio to a reference model timed in
the same run, which cancels a machine that was slower or busier overall: the model that ``segbench run`` timed
alternately with every other (``reference_model`` in the speed records of both), else the baseline's fastest
model timed in both (a side whose records hold interleaved timings of that model still uses them).
``--reference-model`` names it; ``--absolute-speed`` compares raw images/s. With one model timed in both and
neither option, speed is reported and flagged, not failed.

Noise. Each side gives a series of timed repeats: the model's images/s divided by the reference's in the block
timed right after it (interleaved), or the model's repeats and the reference's taken apart (their ranges
combined), or the raw repeats. Each series gives its median and its typical range (``typical_range``: the range
less the most extreme quarter at each end; all of 3 repeats). A drop fails only when all four hold: the change of
the medians is below minus the tolerance; it is beyond the ranges (the run's highest typical figure under the
baseline's lowest); it is larger than the noise floor, the widest typical spread of the series compared (the
reference's among them); and, with other models gated beside it, it stands out from theirs: beyond the tolerance
against their median change (``against_suite``). A busier machine, or fewer cores, slows small and large models
unequally, so it moves the ratio of every model to the reference together; a regression moves one.

Timings on different intra-op thread counts or hardware do not compare, raw or as ratios: the gate then reports
speed and flags it, unless an option forces a comparison.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from segbench.deploy.timing import typical_range
from segbench.errors import UserError, closest
from segbench.report.protocol import under_load
from segbench.results.schema import ModelRecord, Results, Speed

SPEED_SETTINGS = ("batch_size", "input_shape", "precision", "memory_format", "compile", "backend")  # must match


@dataclass(frozen=True)
class SpeedComparison:
    """How speed is compared: ``ratio`` (to ``reference``), ``absolute``, ``unchecked`` (reported, flagged, never
    failed) or ``off``; ``why`` says how that was decided."""

    mode: str
    reference: str | None = None
    why: str = ""

    def describe(self) -> str:
        """One line for the output: which comparison, and why."""
        if self.mode == "ratio":
            return f"speed: images/s as a ratio to {self.reference}'s in the same run ({self.why})"
        if self.mode == "absolute":
            return f"speed: raw images/s of run against baseline ({self.why})"
        if self.mode == "unchecked":
            return f"speed: raw images/s reported, not gated ({self.why})"
        return "speed: not gated (--max-speed-drop 100)"


@dataclass(frozen=True)
class _Estimate:
    """One side's figure (median) and typical range; ``spread`` is the widest typical spread of its series."""

    value: float
    low: float
    high: float
    spread: float
    interleaved: bool = False


def timed(record: ModelRecord) -> Speed | None:
    """The record's first speed record when it holds a figure (NaN included: the caller says what it is)."""
    speed = record.first_speed
    return speed if speed is not None and speed.images_per_second is not None else None


def _repeats(speed: Speed) -> list[float]:
    return list(speed.images_per_second_repeats or [speed.images_per_second])


def choose(run: Results, baseline: Results, max_speed_drop: float | None, reference_model: str | None,
           absolute: bool) -> SpeedComparison:
    """The comparison the gate makes; a named reference model missing from either side is a UserError."""
    if max_speed_drop is None:
        return SpeedComparison("off")
    differs = _machine_differs(run, baseline)
    forced = f"; {differs}" if differs else ""
    if absolute:
        return SpeedComparison("absolute", why="asked for with --absolute-speed" + forced)
    if reference_model:
        _reference_records(reference_model, run, baseline)
        return SpeedComparison("ratio", reference_model, "named with --reference-model" + forced)
    if differs:
        return SpeedComparison("unchecked", why=f"{differs}: models scale differently with threads and hardware, "
                                                "so neither images/s nor their ratios compare; gate against a "
                                                "baseline timed on this setup, or force a comparison with "
                                                "--reference-model or --absolute-speed")
    mine = {m.name: m for m in run.models}
    both = [m for m in baseline.models if m.name in mine and _finite(timed(m)) and _finite(timed(mine[m.name]))]
    names = {m.name for m in both}
    alongside = [{timed(m).reference_model for m in records} - {None} for records in (both, [mine[m.name]
                                                                                          for m in both])]
    interleaved = alongside[0] & alongside[1]  # the reference both sides timed alternately with their models
    if len(interleaved) == 1 and (name := interleaved.pop()) in names:
        return SpeedComparison("ratio", name, "timed alternately with each model, block by block")
    if len(both) >= 2:
        fastest = max(both, key=lambda m: timed(m).images_per_second).name
        return SpeedComparison("ratio", fastest, "the baseline's fastest model timed in both; pick another with "
                                                 "--reference-model")
    if not both:
        return SpeedComparison("unchecked", why="no model was timed in both run and baseline, so there is no speed to "
                                                "compare")
    return SpeedComparison("unchecked", why="one model timed in both, so no reference in the same run can cancel "
                                            "the machine's load; --absolute-speed gates raw images/s")


def _machine_differs(run: Results, baseline: Results) -> str | None:
    """What differs between the setups that timed run and baseline (intra-op threads, hardware), or None."""
    setups = [results.environment for results in (run, baseline)]
    if None in setups:
        return None
    mine, theirs = setups
    if mine.threads and theirs.threads and mine.threads != theirs.threads:
        return f"timed on {_threads(mine.threads)}, the baseline on {_threads(theirs.threads)}"
    if mine.device_name and theirs.device_name and mine.device_name != theirs.device_name:
        return f"timed on {mine.device_name}, the baseline on {theirs.device_name}"
    return None


def _threads(count: int) -> str:
    return f"{count} thread" + ("" if count == 1 else "s")


def _finite(speed: Speed | None) -> bool:
    return speed is not None and math.isfinite(speed.images_per_second)


def _reference_records(name: str, run: Results, baseline: Results) -> tuple[ModelRecord, ModelRecord]:
    """The reference model's records in (baseline, run); it must be timed in both."""
    found = []
    for label, results in (("baseline", baseline), ("run", run)):
        records = {m.name: m for m in results.models}
        if name not in records:
            hints = closest(name, records)
            raise UserError(f"reference model '{name}' is not in the {label}"
                            + (f"; did you mean '{hints[0]}'?" if hints else ""))
        if not _finite(timed(records[name])):
            raise UserError(f"reference model '{name}' has no speed figure in the {label}")
        found.append(records[name])
    return found[0], found[1]


def _estimate(speed: Speed, reference: Speed | None, comparison: SpeedComparison) -> _Estimate:
    """One side's series: interleaved ratios, or the model's and the reference's repeats combined, or raw."""
    own = _repeats(speed)
    if reference is None:
        low, high = typical_range(own)
        return _Estimate(statistics.median(own), low, high, (high - low) / statistics.median(own))
    alongside = speed.reference_images_per_second_repeats
    if speed.reference_model == comparison.reference and alongside and len(alongside) == len(own):
        ratios = [mine / theirs for mine, theirs in zip(own, alongside)]
        low, high = typical_range(ratios)
        return _Estimate(statistics.median(ratios), low, high, (high - low) / statistics.median(ratios), True)
    theirs = _repeats(reference)
    (low, high), (ref_low, ref_high) = typical_range(own), typical_range(theirs)
    value = statistics.median(own) / statistics.median(theirs)
    spread = max((high - low) / statistics.median(own), (ref_high - ref_low) / statistics.median(theirs))
    return _Estimate(value, low / ref_high, high / ref_low, spread)


def speed_row(name: str, base: ModelRecord, mine: ModelRecord, tolerance: float, comparison: SpeedComparison,
              references: tuple[ModelRecord, ModelRecord] | None) -> dict:
    """The speed check of one model: relative change, range over the repeats, status and why."""
    b, r = timed(base), timed(mine)
    row = {"model": name, "check": "speed", "unit": "%", "limit": -tolerance}
    if b is None:
        return row | {"status": "skipped", "note": "no speed in the baseline"}
    if r is None:
        return row | {"status": "fail", "note": "speed not measured in the run"}
    if not math.isfinite(r.images_per_second):
        return row | {"status": "fail", "note": f"images/s is {r.images_per_second} in the run"}
    setting = [k for k in SPEED_SETTINGS if _setting(b, k) != _setting(r, k)]
    if setting:
        return row | {"status": "skipped", "note": f"not comparable: {', '.join(setting)} differ"}
    if comparison.mode == "ratio" and name == comparison.reference:
        return row | {"status": "reference", "baseline": b.images_per_second, "run": r.images_per_second, "limit": None,
                      "note": "the reference: raw images/s, not gated"}
    ratio = comparison.mode == "ratio"
    base_est = _estimate(b, timed(references[0]) if ratio else None, comparison)
    run_est = _estimate(r, timed(references[1]) if ratio else None, comparison)
    change = 100 * (run_est.value / base_est.value - 1)
    row.update(baseline=base_est.value, run=run_est.value, change=change,
               ci_low=100 * (run_est.low / base_est.high - 1), ci_high=100 * (run_est.high / base_est.low - 1))
    floor = 100 * max(base_est.spread, run_est.spread)
    basis = "interleaved ratios" if base_est.interleaved and run_est.interleaved else "repeats"
    if change >= -tolerance - 1e-9:
        return row | {"status": "ok", "note": f"{change:+.1f}% within the {-tolerance:+g}% limit"}
    beyond_range = row["ci_high"] < 0
    if beyond_range and -change > floor:
        status = "flagged" if comparison.mode == "unchecked" else "fail"
        note = (f"{change:+.1f}% beyond the {-tolerance:+g}% limit and beyond the noise: every typical "
                f"{basis[:-1]} of the run below the baseline's, and the drop above the noise floor ({floor:.0f}%)")
        return row | {"status": status, "note": note + (" (not gated: one model)" if status == "flagged" else "")}
    why = (f"the {basis} overlap (range {row['ci_low']:+.0f}% to {row['ci_high']:+.0f}%)" if not beyond_range
           else f"the drop is within the noise floor {floor:.0f}% (widest typical spread of the {basis})")
    return row | {"status": "noise", "note": f"{change:+.1f}% beyond the {-tolerance:+g}% limit but {why}"}


def against_suite(rows: list[dict], tolerance: float, comparison: SpeedComparison) -> list[dict]:
    """A ratio drop fails only when it also stands out from the suite: beyond the tolerance against the median
    change of the run's other gated models. When they all moved by about as much, it was the reference that
    moved against them (a busier machine or fewer cores slow small and large models unequally), not this model."""
    if comparison.mode != "ratio":
        return rows
    changes = {row["model"]: 1 + row["change"] / 100 for row in rows if row.get("change") is not None}
    judged = []
    for row in rows:
        others = [change for name, change in changes.items() if name != row["model"]]
        if row["status"] != "fail" or row.get("change") is None or not others:
            judged.append(row)
            continue
        shift = 100 * (statistics.median(others) - 1)
        alone = 100 * (changes[row["model"]] / statistics.median(others) - 1)
        if alone >= -tolerance - 1e-9:
            note = (f"{row['change']:+.1f}% beyond the {-tolerance:+g}% limit, but the other models moved with it "
                    f"(median {shift:+.1f}%; {alone:+.1f}% against them): the reference moved, not this model")
            judged.append(row | {"status": "noise", "note": note})
        else:
            judged.append(row | {"note": row["note"] + f", and {alone:+.1f}% against the other models "
                                                       f"(median {shift:+.1f}%)"})
    return judged


def _setting(speed: Speed, key: str) -> object:
    """A speed setting; a record written before backends existed ran eager (or torch.compile)."""
    value = getattr(speed, key)
    return ("compile" if speed.compile else "eager") if key == "backend" and value is None else value


def references(comparison: SpeedComparison, run: Results, baseline: Results) -> tuple[ModelRecord, ModelRecord] | None:
    """The reference model's records in (baseline, run) for a ratio comparison, else None."""
    return _reference_records(comparison.reference, run, baseline) if comparison.mode == "ratio" else None


def noisy(name: str, base: ModelRecord, mine: ModelRecord, tolerance: float) -> str | None:
    """``name (baseline 35%, run 12%)`` when a speed record's repeats spread wider than the tolerance."""
    spreads = [f"{label} {100 * speed.spread:.0f}%" for label, speed in (("baseline", timed(base)),
                                                                       ("run", timed(mine)))
               if speed and under_load(speed.spread, tolerance / 100)]
    return f"{name} ({', '.join(spreads)})" if spreads else None
