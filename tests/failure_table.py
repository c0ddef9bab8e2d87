"""What every failure table checks after a refusal: one line and exit 2, the tree's files unchanged, the MLflow
store's runs."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path


def store_runs(uri: str) -> list:
    """Every run in the MLflow store at ``uri`` (none when it holds no experiment)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments) if experiments else []


def snapshot(root: Path, skip: tuple[str, ...] = ("mlflow.db",)) -> dict[str, str]:
    """Each file under ``root`` (but those named in ``skip``) by its relative path, with its sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip}


def assert_refused(code: int, out: str, err: str, pattern: str) -> str:
    """Exit 2 and one ``segbench: error:`` line on stderr matching ``pattern`` (a regular expression), no traceback;
    the line."""
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("segbench: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in out + err
    return lines[0]
