import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# OpenMP threads sleep instead of spinning while they wait: on a shared 2-core machine spinning threads of
# one process starve the others (tens of times more CPU for the same small models).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


@pytest.fixture(scope="session")
def _migrated_store(tmp_path_factory) -> Path:
    """A new MLflow sqlite store with its schema migrations run once per test session (they take ~3 s)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(_migrated_store, tmp_path) -> str:
    """A fresh, already-migrated MLflow store for one test."""
    path = tmp_path / "mlflow.db"
    shutil.copy(_migrated_store, path)
    return f"sqlite:///{path}"


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the real console entry point in-process; return (exit code, stdout, stderr)."""
    from segbench.cli import entry

    def invoke(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["segbench", *args])
        code = 0
        try:
            entry()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return invoke
