"""The failure table of `segbench gate` and `segbench baseline update`: each mistake is answered with exit code 2 and
one line that names the thing and what was expected, and leaves every file as it was."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from failure_table import assert_refused, snapshot


def _results(tmp: Path, name: str = "run.json", **changes) -> str:
    """A two-model results.json (schema version 1) with per-model ``changes`` as {(model index, key): value}."""
    models = []
    for i, model in enumerate(("unet-r10", "fpn-r10")):
        models.append({"name": model, "metrics": {"mIoU": 0.6 - 0.1 * i},
                       "speed": [{"images_per_second": 100.0 * (i + 1), "batch_size": 1}]})
    for key, value in changes.items():
        index, field = key.split("__")
        if field == "ips":
            models[int(index[1:])]["speed"][0]["images_per_second"] = value
        elif value == "drop":
            del models[int(index[1:])]["metrics"][field]
        else:
            models[int(index[1:])]["metrics"][field] = value
    data = {"schema_version": 1, "suite": {"name": "toy", "config_hash": "h", "config": {"seed": 0}},
            "dataset": {"name": "synthetic", "classes": ["a", "b"], "split": "val"},
            "convention": {"num_classes": 2}, "models": models}
    (tmp / name).write_text(json.dumps(data))
    return str(tmp / name)


def _read_only(tmp: Path) -> list[str]:
    if os.geteuid() == 0:  # root writes anywhere it may: a folder no one can create files in instead
        return ["baseline", "update", _results(tmp), "/proc/segbench-baselines/new.json"]
    (tmp / "locked").mkdir()
    (tmp / "locked").chmod(0o555)
    return ["baseline", "update", _results(tmp), str(tmp / "locked" / "new.json")]


# Each case: (id, setup(tmp_path) -> command-line arguments, pattern the one-line error must match).
CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("NaN mIoU in the baseline", lambda t: ["gate", _results(t), _results(t, "base.json", m1__mIoU=float("nan"))],
     r"baseline: model 'fpn-r10' has mIoU = nan; a baseline must hold finite numbers"),
    ("null mIoU in the baseline", lambda t: ["gate", _results(t), _results(t, "base.json", m1__mIoU=None)],
     r"baseline: model 'fpn-r10' has no mIoU \(null\); a baseline must hold every gated metric"),
    ("mIoU missing from the baseline", lambda t: ["gate", _results(t), _results(t, "base.json", m0__mIoU="drop")],
     r"baseline: model 'unet-r10' has no mIoU \(missing\); a baseline must hold every gated metric"),
    ("infinite speed in the baseline", lambda t: ["gate", _results(t), _results(t, "base.json", m0__ips=float("inf"))],
     r"baseline: model 'unet-r10' has images/s = inf"),
    ("absolute speed and a reference model", lambda t: ["gate", _results(t), _results(t), "--absolute-speed",
                                                        "--reference-model", "fpn-r10"],
     r"--absolute-speed and --reference-model exclude each other"),
    ("speed tolerance above 100", lambda t: ["gate", _results(t), _results(t), "--max-speed-drop", "150"],
     r"--max-speed-drop must be a percentage in \[0, 100\], got 150"),
    ("NaN speed tolerance", lambda t: ["gate", _results(t), _results(t), "--max-speed-drop", "nan"],
     r"--max-speed-drop must be a percentage in \[0, 100\], got nan"),
    ("unknown reference model", lambda t: ["gate", _results(t), _results(t), "--reference-model", "fpn-r1"],
     r"reference model 'fpn-r1' is not in the baseline; did you mean 'fpn-r10'\?"),
    ("unknown gated metric", lambda t: ["gate", _results(t), _results(t), "--max-drop", "miou=0.5"],
     r"no quality metric 'miou'; did you mean 'mIoU'\?"),
    ("negative quality tolerance", lambda t: ["gate", _results(t), _results(t), "--max-drop", "mIoU=-1"],
     r"tolerance for mIoU must be a non-negative number of points, got -1\.0"),
    ("NaN quality tolerance", lambda t: ["gate", _results(t), _results(t), "--max-drop", "mIoU=nan"],
     r"tolerance for mIoU must be a non-negative number of points, got nan"),
    ("baseline 'latest'", lambda t: ["gate", _results(t), "latest"], r"baseline must be a results\.json path"),
    ("baseline to a read-only folder", _read_only, r"cannot write the baseline '.*new\.json'"),
    ("baseline to a folder", lambda t: ["baseline", "update", _results(t), str(t)],
     r"baseline '.*' is a folder; expected a \.json file to write"),
    ("baseline from no run", lambda t: ["baseline", "update", "latest", str(t / "new.json")],
     r"no finished run of any suite in MLflow"),
]


@pytest.mark.parametrize(("setup", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_gate_mistake_is_one_line_exit_2_and_changes_nothing(cli, tmp_path, mlflow_uri, monkeypatch, setup,
                                                                pattern):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    args = setup(tmp_path)
    before = snapshot(tmp_path)

    code, out, err = cli(*args)

    assert_refused(code, out, err, pattern)
    assert snapshot(tmp_path) == before  # nothing written, nothing deleted, nothing changed
