"""``segbench log``: send a finished run's results.json to MLflow, e.g. after the tracking store was down."""

from __future__ import annotations

from pathlib import Path

import typer


def log(
    run: Path = typer.Argument(..., help="a run's output folder or its results.json"),
    tracking_uri: str | None = typer.Option(None, help="the MLflow store (default: the one results.json names, "
                                                       "else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)"),
) -> None:
    """Log a finished run to MLflow from its results.json: the runs it names are completed and closed FINISHED,
    runs the store never got are created (their ids are written into results.json)."""
    from segbench.errors import UserError
    from segbench.pipeline.logged import send_results

    if not run.exists():
        raise UserError(f"no such file or folder: {run}")
    uri, path, count = send_results(run, tracking_uri)
    typer.echo(f"logged {count} runs of {path} to {uri}" if count else f"the runs of {path} are already in {uri}")
