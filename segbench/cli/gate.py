"""``segbench gate`` (a run against a baseline) and ``segbench baseline update``."""

from __future__ import annotations

import inspect
from pathlib import Path

import typer


def gate(
    run: str = typer.Argument(..., help="a results.json (or its folder), an MLflow run id, or 'latest'"),
    baseline: str = typer.Argument(..., help="the baseline: a results.json or an MLflow run id"),
    max_drop: list[str] | None = typer.Option(None, help="METRIC=POINTS allowed drop in percentage points "
                                                         "(default mIoU=0.5); repeatable"),
    max_speed_drop: float = typer.Option(20.0, help="allowed speed drop in percent (100: speed not gated)"),
    reference_model: str | None = typer.Option(None, help="compare speed as a ratio to this model of the same run "
                                                          "(default: chosen, see above)"),
    absolute_speed: bool = typer.Option(False, "--absolute-speed", help="compare raw images/s of run and baseline "
                                                                        "(only for runs on one quiet machine)"),
    require_significant: bool = typer.Option(False, help="quality: a drop must also be significant (paired "
                                                         "bootstrap over the per-image data)"),
    max_backend_diff: list[str] | None = typer.Option(None, help="METRIC=POINTS: every deployment backend of the "
                                                                 "run's eval.backends must score within POINTS of "
                                                                 "eager (e.g. mIoU=0.1); repeatable"),
    out: Path | None = typer.Option(None, help="write gate.md and gate.json here"),
    tracking_uri: str | None = typer.Option(None, help="MLflow store for run ids and 'latest'"),
) -> None:
    """Compare a run with a baseline model by model; exit 0 on pass, 1 on a regression (a NaN in the run is one),
    2 on bad input (a NaN in the baseline is).

    Quality: a metric fails when it drops by more than its tolerance in percentage points (--max-drop); with
    --require-significant only when its bootstrap interval also excludes zero.

    Speed is compared as a ratio to a reference model timed in the same run, which cancels a machine that was
    busier during one run than during the other: by default the model segbench run timed alternately with every
    other, block by block (the suite's smallest built-in model), else the baseline's fastest model timed in both;
    --reference-model names another; --absolute-speed compares raw images/s instead. With a single model, or
    when run and baseline were timed on different intra-op thread counts or hardware (models scale differently
    with both, so neither images/s nor their ratios compare), speed is reported and flagged, never failed, unless
    an option forces a comparison.

    Noise: a speed drop fails only when the change of the medians is below -MAX_SPEED_DROP %, every typical
    repeat of the run is slower than every typical repeat of the baseline (typical: the repeats less the most
    extreme quarter at each end), the drop exceeds the noise floor, the widest typical spread of the repeats
    compared, the reference's included, and, with other models gated beside it, it is also beyond -MAX_SPEED_DROP
    % against their median change: a busier machine slows small and large models unequally, so it moves every
    model's ratio to the reference together, while a regression moves one. Timing adds repeats (up to 3x
    bench.repeats) while that spread is above 10 %. The output names the comparison made and says why each speed
    row passed or failed.

    Options: --kebab-case flags for a command's options; key=value only for suite config overrides (run, bench,
    eval, score).
    """
    from segbench.core.plugins import load_entry_points
    from segbench.gate.compare import GatePolicy, parse_max_drops
    from segbench.gate.compare import gate as run_gate
    from segbench.gate.render import text, write_summary

    load_entry_points()  # installed plugins' metrics are gated like segbench's own

    policy = GatePolicy(max_drop_points=parse_max_drops(max_drop or []), max_speed_drop_percent=max_speed_drop,
                        reference_model=reference_model, absolute_speed=absolute_speed,
                        require_significant=require_significant,
                        max_backend_diff_points=parse_max_drops(max_backend_diff, {}) if max_backend_diff else None)
    result = run_gate(run, baseline, policy, tracking_uri)
    if out is not None:
        write_summary(result, out)
    typer.echo(text(result))
    raise typer.Exit(result.exit_code)


# typer keeps the single line breaks of a docstring's later paragraphs: one line per paragraph, wrapped on display
gate.__doc__ = "\n\n".join(" ".join(paragraph.split()) for paragraph in inspect.cleandoc(gate.__doc__).split("\n\n"))


def baseline_update(
    run: str = typer.Argument(..., help="a results.json (or its folder), an MLflow run id, or 'latest'"),
    baseline: Path = typer.Argument(..., help="the baseline file to write, e.g. baselines/synthetic.json"),
    tracking_uri: str | None = typer.Option(None, help="MLflow store for run ids and 'latest'"),
) -> None:
    """Make a run's results the new baseline (compact JSON, to commit)."""
    from segbench.gate.compare import update_baseline

    typer.echo(f"baseline: {update_baseline(run, baseline, tracking_uri)}")
