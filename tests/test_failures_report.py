"""The failure table of ``segbench report``: each refusal is one line ``segbench: error: ...`` and exit code 2, with
nothing written (no report folder, no file of the user's changed, no MLflow store created); an unreachable
tracking server is refused within tracking's connect timeout, and an interrupted report says what it left."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from failure_table import assert_refused, snapshot

BASELINE = Path(__file__).resolve().parent.parent / "baselines" / "synthetic.json"
HANG_GUARD_S = 120  # a subprocess still running after this long hangs


def _closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _failed_runs_only(tmp: Path, uri: str) -> list[str]:
    """A store whose only segbench run FAILED: nothing to report, and the line says why."""
    from segbench.config.schema import TrackingConfig
    from segbench.results.tracking import Tracker

    tracker = Tracker(TrackingConfig(uri=uri), "toy")
    tracker.end(tracker.start("toy-run", tags={"segbench.kind": "run", "segbench.suite": "toy"}), "FAILED")
    return ["report", "--tracking-uri", uri, "--out", str(tmp / "site")]


def _out_is_a_file(tmp: Path, uri: str) -> list[str]:
    return ["report", str(BASELINE), "--out", str(tmp / "keep.txt")]


def _out_under_a_file(tmp: Path, uri: str) -> list[str]:
    return ["report", str(BASELINE), "--out", str(tmp / "keep.txt" / "site")]


def _no_results_in_folder(tmp: Path, uri: str) -> list[str]:
    (tmp / "empty").mkdir()
    return ["report", str(tmp / "empty"), "--out", str(tmp / "site")]


def _not_results(tmp: Path, uri: str) -> list[str]:
    (tmp / "results.json").write_text(json.dumps({"hello": 1}))
    return ["report", str(tmp / "results.json"), "--out", str(tmp / "site")]


def _server_refuses(tmp: Path, uri: str) -> list[str]:
    return ["report", "--tracking-uri", f"http://127.0.0.1:{_closed_port()}", "--out", str(tmp / "site")]


def _missing_store(tmp: Path, uri: str) -> list[str]:
    return ["report", "--tracking-uri", f"sqlite:///{tmp / 'nowhere.db'}", "--out", str(tmp / "site")]


CASES: list[tuple[str, Callable[[Path, str], list[str]], str]] = [
    ("only-failed-runs", _failed_runs_only,
     r"no results to report: .*1 MLflow run\(s\) that did not finish left out: [0-9a-f]{32} \(FAILED\)"),
    ("out-is-a-file", _out_is_a_file, r"--out: '.*keep\.txt' is a file; expected a folder"),
    ("out-under-a-file", _out_under_a_file, r"--out: '.*site' is under the file '.*keep\.txt'"),
    ("folder-without-results", _no_results_in_folder, r"no results\.json under .*empty"),
    ("not-a-results-file", _not_results, r"is not a segbench results\.json"),
    ("server-refuses", _server_refuses, r"tracking\.uri: no MLflow server answers at http://127\.0\.0\.1:\d+ "
                                        r"within 5 s"),
    ("store-missing", _missing_store, r"no MLflow store at sqlite:///.*nowhere\.db .*does not exist"),
]


@pytest.mark.parametrize(("setup", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_report_mistake_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, mlflow_uri, monkeypatch, setup,
                                                                 pattern):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    (tmp_path / "keep.txt").write_text("a file of the user's")
    args = setup(tmp_path, mlflow_uri)
    before = snapshot(tmp_path)
    code, out, err = cli(*args)
    assert_refused(code, out, err, pattern)
    assert out == ""
    assert snapshot(tmp_path) == before and not (tmp_path / "site").exists() and not (tmp_path / "reports").exists()
    assert not (tmp_path / "nowhere.db").exists()


@pytest.mark.slow
def test_an_interrupted_report_says_what_a_report_leaves(tmp_path):
    """Ctrl-C while the report waits for a tracking server that accepts and never answers: exit 130 and the
    report's own message, not the one of an interrupted run."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(HANG_GUARD_S)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.Popen([sys.executable, "-m", "segbench", "report", "--tracking-uri",
                              f"http://127.0.0.1:{server.getsockname()[1]}", "--out", str(tmp_path / "site")],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with server, server.accept()[0]:  # the report is now waiting for the server's answer
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=HANG_GUARD_S)
    assert child.returncode == 130, (out, err)
    assert err.strip().splitlines() == ["segbench: interrupted (SIGINT); the report is incomplete: each file it wrote "
                                        "is complete (written whole), the others were not written"]
    assert not (tmp_path / "site").exists()
