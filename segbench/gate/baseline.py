"""Baselines for the gate: ``segbench baseline update RUN BASELINE`` makes a run's results the new baseline."""

from __future__ import annotations

from pathlib import Path

from segbench.errors import UserError
from segbench.results.find import load_results
from segbench.results.schema import read_results, write_results


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
