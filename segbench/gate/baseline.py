"""Baselines for the gate: ``segbench baseline update RUN BASELINE`` makes a run's results the new baseline."""

from __future__ import annotations

from pathlib import Path

from segbench.results.find import load_results
from segbench.results.schema import read_results, write_results


def update_baseline(run: Path | str, baseline: Path | str, tracking_uri: str | None = None) -> Path:
    """Write ``run``'s results (path, MLflow run id or ``latest``) to ``baseline``: the same content, as
    schema version 2 in a compact layout (innermost arrays on one line) that diffs well in review."""
    suite = None
    if str(run) == "latest":  # the newest run of the current baseline's suite
        suite = read_results(baseline).suite.name if Path(baseline).is_file() else None
    results, _ = load_results(run, tracking_uri, suite=suite)
    return write_results(baseline, results, compact=True)
