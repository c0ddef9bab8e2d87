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
    export: str | None = typer.Option(None, help="formats other tools read, written beside each leaderboard: a "
                                                 "comma-separated list of hf (model cards' model-index), mmseg "
                                                 "(metafile.yaml), robustbench (JSON and corruption x severity "
                                                 "CSV); all (default) or none"),
) -> None:
    """Build leaderboards per suite (Markdown, CSV, a static site of self-contained pages, and exports) from
    results.json files or the FINISHED runs in MLflow (the results.json each logged). Per model, settings and
    hardware the newest run is a row; older runs, and runs that did not finish, are left out and named on the
    page and here (the older runs' rows kept in left_out.csv)."""
    from segbench.report.build import build_report
    from segbench.report.exports import parse_formats

    formats = parse_formats(export)
    report = build_report(list(sources or []), out, tracking_uri, use_mlflow=not sources, exports=formats)
    for path in report.written:
        typer.echo(f"wrote {path}")
    for suite, notes in report.notes.items():
        for note in notes:
            typer.echo(f"note: {suite}: {note}")
