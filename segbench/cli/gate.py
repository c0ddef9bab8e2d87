"""``segbench gate`` (a run against a baseline) and ``segbench baseline update``."""

from __future__ import annotations

from pathlib import Path

import typer


def gate(
    run: str = typer.Argument(..., help="a results.json (or its folder), an MLflow run id, or 'latest'"),
    baseline: str = typer.Argument(..., help="the baseline: a results.json or an MLflow run id"),
    max_drop: list[str] | None = typer.Option(None, help="METRIC=POINTS allowed drop in percentage points "
                                                         "(default mIoU=0.5); repeatable"),
    max_speed_drop: float | None = typer.Option(None, help="allowed drop of images/s in percent (default 20; "
                                                           "100: speed not gated)"),
    reference_model: str | None = typer.Option(None, help="compare speed as a ratio to this model of the same run"),
    require_significant: bool = typer.Option(False, help="a drop must also be beyond noise (bootstrap, repeats)"),
    max_backend_diff: list[str] | None = typer.Option(None, help="METRIC=POINTS: every deployment backend of the "
                                                                 "run's eval.backends must score within POINTS of "
                                                                 "eager (e.g. mIoU=0.1); repeatable"),
    out: Path | None = typer.Option(None, help="write gate.md and gate.json here"),
    tracking_uri: str | None = typer.Option(None, help="MLflow store for run ids and 'latest'"),
) -> None:
    """Compare a run with a baseline model by model; exit 0 on pass, 1 on a regression, 2 on bad input."""
    from segbench.gate import compare as gating
    from segbench.gate.render import text, write_summary

    speed = gating.MAX_SPEED_DROP_PERCENT if max_speed_drop is None else max_speed_drop
    result = gating.gate(run, baseline, max_drop_points=gating.parse_max_drops(max_drop) if max_drop else None,
                         max_speed_drop_percent=speed, reference_model=reference_model,
                         require_significant=require_significant, tracking_uri=tracking_uri,
                         max_backend_diff_points=gating.parse_max_drops(max_backend_diff, {}) if max_backend_diff
                         else None)
    if out is not None:
        write_summary(result, out)
    typer.echo(text(result))
    raise typer.Exit(result.exit_code)


def baseline_update(
    run: str = typer.Argument(..., help="a results.json (or its folder), an MLflow run id, or 'latest'"),
    baseline: Path = typer.Argument(..., help="the baseline file to write, e.g. baselines/synthetic.json"),
    tracking_uri: str | None = typer.Option(None, help="MLflow store for run ids and 'latest'"),
) -> None:
    """Make a run's results the new baseline (compact JSON, to commit)."""
    from segbench.gate.baseline import update_baseline

    typer.echo(f"baseline: {update_baseline(run, baseline, tracking_uri)}")
