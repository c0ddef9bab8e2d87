"""``segbench report``: leaderboards from results.json files or the MLflow store."""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    sources: list[str] | None = typer.Argument(None, help="results.json files or folders; none: every run in the "
                                                          "MLflow store"),
    out: Path | None = typer.Option(None, help="output folder (default: reports/)"),
    tracking_uri: str | None = typer.Option(None, help="MLflow store to read (default: MLFLOW_TRACKING_URI, else "
                                                       "sqlite:///mlflow.db); with sources, read as well"),
) -> None:
    """Build leaderboards per suite (Markdown, CSV, self-contained HTML) from results.json files or the FINISHED
    runs in MLflow (the results.json each logged), every finished run a row per model; what is left out (runs
    that did not finish) is named on the page and here."""
    from segbench.report.build import build_report

    report = build_report(list(sources or []), out, tracking_uri, use_mlflow=not sources)
    for path in report.written:
        typer.echo(f"wrote {path}")
    for suite, notes in report.notes.items():
        for note in notes:
            typer.echo(f"note: {suite}: {note}")
