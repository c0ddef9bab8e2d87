"""The failure table of `segbench log`: a results.json whose numbers are not what the schema promises (a fraction
outside [0, 1], a NaN headline metric without its reason, a speed that is not a positive number) is one line and
exit 2, and no MLflow store is opened: no mlflow.db or mlruns/ in the working folder, no run in the store named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from failure_table import assert_refused, snapshot, store_runs


def _write(tmp: Path, results: dict, change: Callable[[dict], None]) -> str:
    change(results["models"][0])
    folder = tmp / "out"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))  # NaN written as JSON's NaN, as a hand edit would
    return str(folder)


def _set(path: str, value: object) -> Callable[[dict], None]:
    def change(model: dict) -> None:
        *parents, last = path.split(".")
        target = model
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[last] = value

    return change


CASES = [
    ("mIoU above 1", _set("metrics.mIoU", 7.5),
     r"out/results\.json: models\[0\] \('unet-r10'\)\.metrics\.mIoU is 7\.5, outside \[0, 1\] \(a fraction\)"),
    ("aAcc below 0", _set("metrics.aAcc", -0.2),
     r"models\[0\] \('unet-r10'\)\.metrics\.aAcc is -0\.2, outside \[0, 1\]"),
    ("a class IoU above 1", _set("per_class", [{"class": "road", "IoU": 1.5}]),
     r"models\[0\] \('unet-r10'\)\.per_class\.road\.IoU is 1\.5, outside \[0, 1\]"),
    ("NaN mIoU without its reason", _set("metrics.mIoU", float("nan")),
     r"models\[0\]\.metrics\.mIoU: expected a finite number for the finished model 'unet-r10', got the number nan"),
    ("null mDice without its reason", _set("metrics.mDice", None),
     r"models\[0\]\.metrics\.mDice: expected a finite number for the finished model 'unet-r10'"),
    ("a negative speed", _set("speed.0.images_per_second", -3.0),
     r"models\[0\] \('unet-r10'\)\.speed\[0\]\.images_per_second is -3\.0; expected a positive number"),
]


@pytest.mark.parametrize("store", ["default store", "store elsewhere"])
@pytest.mark.parametrize(("change", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_log_of_a_results_file_out_of_range_opens_no_store(cli, tmp_path, mlflow_uri, monkeypatch, images, record,
                                                           results, change, pattern, store):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    if store == "default store":
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # sqlite:///mlflow.db in the working folder
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    run = _write(work, results(record("unet-r10", *images(4, 0.6))), change)
    before = snapshot(work, skip=())

    code, out, err = cli("log", run)

    assert_refused(code, out, err, pattern)
    assert snapshot(work, skip=()) == before  # no mlflow.db, no mlruns/, results.json untouched
    if store == "store elsewhere":
        assert store_runs(mlflow_uri) == []  # nothing RUNNING, nothing at all


def test_log_sends_a_good_file_and_keeps_artifacts_beside_the_store(cli, tmp_path, mlflow_uri, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / ".cache"))
    code, _, err = cli("eval", "models=[fcn32s-resnet10t]", "data.val_samples=2", "data.image_size=32",
                       "eval.batch_size=2", "bench.enabled=false", "progress=false", "tracking.enabled=false",
                       "output_dir=out")
    assert code == 0, err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)

    code, out, err = cli("log", "out")

    assert code == 0, err
    runs = store_runs(mlflow_uri)
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 2
    assert not (work / "mlruns").exists() and not (work / "mlflow.db").exists()  # MLflow's default: ./mlruns
    database = Path(mlflow_uri.removeprefix("sqlite:///"))
    assert list((database.parent / "mlruns").rglob("results.json"))
