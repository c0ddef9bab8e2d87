"""The failure table's rows for the run orchestration: output folders, names that become paths, a tracking store
that fails mid-run, file-system failures. Each through the CLI a user types."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from failure_table import assert_refused, snapshot, store_runs
from hypothesis import given, settings
from hypothesis import strategies as st
from test_failures import TINY, binary_mask, folder_suite, folder_tree

from segbench.core.names import MAX_LENGTH, inside, safe_name

FAST = [*TINY, "train.iters=2", "data.num_workers=0"]


def _one_line(code: int, err: str, pattern: str) -> str:
    return assert_refused(code, "", err, re.escape(pattern))


# ---------------------------------------------------------------- names that become paths

HOSTILE = ["../../x", "/abs/path", "hf:nvidia/segformer-b0-finetuned-ade-512-512", "torchvision:lraspp_mobilenet",
           "my suite", "my_suite", "a\\b", "..", ".", "", "-rf", "CON", "nul.txt", "ünïcode", "a" * 300, "x/../../y",
           "C:\\Windows", "name\x00with nul", "tab\tname", ".hidden"]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_safe_name_is_one_harmless_path_component(name):
    safe = safe_name(name)
    assert safe and len(safe) <= MAX_LENGTH and ".." not in safe and not safe.startswith((".", "-"))
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in safe), safe
    assert safe.split(".")[0].lower() not in ("con", "nul")


def test_safe_names_keep_safe_names_and_separate_names_that_differ_only_in_what_was_dropped():
    assert safe_name("unet-resnet10t") == "unet-resnet10t" and safe_name("synthetic") == "synthetic"
    assert safe_name("my suite").startswith("my_suite-") and safe_name("my_suite") == "my_suite"
    assert len({safe_name(n) for n in HOSTILE}) == len(HOSTILE)
    assert safe_name("hf:nvidia/segformer-b0").startswith("hf_nvidia_segformer-b0-")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=120), min_size=1, max_size=3))
def test_an_output_path_is_always_inside_the_output_folder(tmp_path_factory, names):
    root = tmp_path_factory.getbasetemp() / "out"
    path = inside(root, *names)
    assert path.resolve().is_relative_to(root.resolve()) and len(path.relative_to(root).parts) == len(names)
    assert all(safe_name(a) != safe_name(b) for a in names for b in names if a != b)


def test_a_suite_name_that_climbs_writes_inside_outputs_and_keeps_its_name(cli, tmp_path, monkeypatch, mlflow_uri):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / ".cache"))
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    code, out, err = cli("run", *FAST, "name=../../x", f"tracking.uri={mlflow_uri}")
    assert code == 0, err
    written = [p for p in tmp_path.rglob("results.json") if "mlruns" not in p.parts]  # not MLflow's artifact copy
    assert len(written) == 1 and written[0].is_relative_to(work / "outputs"), written
    assert written[0].parent.parent == work / "outputs" / safe_name("../../x")
    assert json.loads(written[0].read_text())["suite"]["name"] == "../../x"  # the full name in results.json
    assert [r.data.tags["segbench.suite"] for r in store_runs(mlflow_uri) if "segbench.suite" in r.data.tags] == \
        ["../../x"]  # and in MLflow


def test_an_hf_folder_model_by_absolute_path_writes_its_files_under_a_safe_name(cli, tmp_path, monkeypatch,
                                                                                  mlflow_uri):
    from test_sources import segformer_folder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / ".cache"))
    segformer_folder(tmp_path / "segformer", ["background", "foreground"])
    model = f"hf:{tmp_path / 'segformer'}"
    root = folder_tree(tmp_path / "data", binary_mask(1))
    code, out, err = cli("eval", *folder_suite(root), f"models=[{model}]", "eval.save_predictions=true",
                         f"output_dir={tmp_path / 'out'}", f"tracking.uri={mlflow_uri}")
    assert code == 0, err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [m["name"] for m in results["models"]] == [model]
    assert (tmp_path / "out" / f"per_class_{safe_name(model)}.csv").is_file()
    assert (tmp_path / "out" / "predictions" / safe_name(model) / "labels").is_dir()
    assert {p.relative_to(tmp_path / "out").parts[0] for p in (tmp_path / "out").iterdir()} == \
        {"results.json", f"per_class_{safe_name(model)}.csv", "predictions"}
    child = next(r for r in store_runs(mlflow_uri) if "mlflow.parentRunId" in r.data.tags)
    assert child.info.run_name == model and child.data.params["model"] == model


# ---------------------------------------------------------------- default output folders

@pytest.mark.slow
def test_runs_in_one_folder_each_get_their_own_output_folder_and_the_report_shows_them_all(cli, tmp_path,
                                                                                           monkeypatch, mlflow_uri):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    for seed in (0, 0, 1):
        code, out, err = cli("run", *FAST, f"seed={seed}")
        assert code == 0, err
    folders = sorted((tmp_path / "outputs" / "synthetic").iterdir())
    assert len(folders) == 3 and all((f / "results.json").is_file() for f in folders), folders
    assert [f.name for f in folders] == sorted(f.name for f in folders)  # sorted by start: UTC stamps, -N after
    code, out, err = cli("report", "outputs", "--out", str(tmp_path / "report"))
    assert code == 0, err
    table = (tmp_path / "report" / "synthetic" / "leaderboard.csv").read_text().strip().splitlines()
    # every results.json is found; how the report shows two runs of one configuration is the report's choice
    assert len(table) >= 1 + 2 and {row.split(",")[1] for row in table[1:]} == {"unet-resnet10t"}, table
    code, out, err = cli("report", "--out", str(tmp_path / "from-mlflow"))
    assert code == 0, err
    assert len((tmp_path / "from-mlflow" / "synthetic" / "leaderboard.csv").read_text().strip().splitlines()) >= 3
    code, out, err = cli("gate", "latest", str(folders[0] / "results.json"), "--max-drop", "mIoU=100",
                         "--max-speed-drop", "100")
    assert code == 0, err  # `latest` is the newest run of the suite in MLflow, whatever its folder


def test_two_claims_of_one_default_folder_get_two_folders(tmp_path):
    from segbench.pipeline.session import _claim, default_dir

    base = tmp_path / default_dir("my suite", "run")
    first, second = _claim(base, explicit=False), _claim(base, explicit=False)
    assert first[1].is_dir() and second[1].is_dir() and first[0] != second[0]
    first[1].rename(first[0])  # the first run finished: its name stays taken
    third = _claim(base, explicit=False)
    assert third[0] not in (first[0], second[0]) and third[0].name == f"{base.name}-3"


# ---------------------------------------------------------------- the tracking store fails mid-run

def test_a_store_that_fails_mid_run_costs_no_result_and_segbench_log_sends_the_runs(cli, tmp_path, monkeypatch,
                                                                                   mlflow_uri):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / ".cache"))
    real = MlflowClient.log_batch
    calls = []

    def failing(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        calls.append(run_id)
        if len(calls) > 2:  # the parent's params and the model's went through; then the store is gone
            raise MlflowException("API request to endpoint /api/2.0/mlflow/runs/log-batch failed: Max retries")
        return real(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", failing)
    code, out, err = cli("run", *FAST, f"tracking.uri={mlflow_uri}", f"output_dir={tmp_path / 'out'}")
    assert code == 4, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        f"segbench: not logged: MLflow at {re.escape(mlflow_uri)}: logging to run {calls[2]} failed: "
        "MlflowException: API request to endpoint /api/2.0/mlflow/runs/log-batch failed: Max retries; "
        r"\d+ later tracking calls were skipped, so its runs are incomplete\. The results are complete in "
        f"{re.escape(str(tmp_path / 'out' / 'results.json'))}; send them with: segbench log "
        f"{re.escape(str(tmp_path / 'out'))}", lines[0]), err
    assert f"results: {tmp_path / 'out' / 'results.json'}" in out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (tmp_path / "out" / results["models"][0]["checkpoint"]["path"] / "model.safetensors").is_file()
    assert {r.info.status for r in store_runs(mlflow_uri)} == {"RUNNING"}  # as a dead server leaves them

    monkeypatch.setattr(MlflowClient, "log_batch", real)
    code, out, err = cli("log", str(tmp_path / "out"))
    assert code == 0, err
    assert out.strip() == f"logged 2 runs of {tmp_path / 'out' / 'results.json'} to {mlflow_uri}"
    runs = store_runs(mlflow_uri)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    model = results["models"][0]
    assert child.info.run_id == model["mlflow_run_id"]
    assert child.data.metrics["mIoU"] == pytest.approx(model["metrics"]["mIoU"])
    assert child.data.metrics["train_seconds"] == pytest.approx(model["train"]["seconds"])
    assert child.data.metrics[f"IoU.{model['per_class'][0]['class']}"] == pytest.approx(model["per_class"][0]["IoU"])
    code, out, err = cli("log", str(tmp_path / "out"))  # again: nothing to send
    assert code == 0 and out.strip() == f"the runs of {tmp_path / 'out' / 'results.json'} are already in {mlflow_uri}"
    assert len(store_runs(mlflow_uri)) == 2


def test_segbench_log_to_another_store_creates_the_runs_and_records_their_ids(cli, tmp_path, monkeypatch,
                                                                             mlflow_uri):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / ".cache"))
    code, out, err = cli("run", *FAST, "tracking.enabled=false", f"output_dir={tmp_path / 'out'}")
    assert code == 0, err
    before = json.loads((tmp_path / "out" / "results.json").read_text())
    assert before["models"][0]["mlflow_run_id"] is None
    code, out, err = cli("log", str(tmp_path / "out" / "results.json"), "--tracking-uri", mlflow_uri)
    assert code == 0, err
    after = json.loads((tmp_path / "out" / "results.json").read_text())
    runs = {r.info.run_id: r for r in store_runs(mlflow_uri)}
    assert set(runs) == {after["mlflow"]["parent_run_id"], after["models"][0]["mlflow_run_id"]}
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    assert after["mlflow"]["tracking_uri"] == mlflow_uri
    assert runs[after["models"][0]["mlflow_run_id"]].data.metrics["mIoU"] == \
        pytest.approx(before["models"][0]["metrics"]["mIoU"])
    assert {k: v for k, v in after.items() if k != "models" and k != "mlflow"} == \
        {k: v for k, v in before.items() if k != "models" and k != "mlflow"}


def test_runs_left_running_by_a_dead_process_are_marked_killed_when_the_store_is_seen_again(tmp_path, mlflow_uri):
    import sys

    from segbench.config.schema import TrackingConfig
    from segbench.results.tracking import Tracker

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tracker = Tracker(TrackingConfig(uri=mlflow_uri), "synthetic")
    orphan = tracker.start("orphan")
    tracker.log(orphan, tags={"segbench.pid": str(dead.pid)})  # opened by a process that died since
    alive = tracker.start("alive")  # this process: still running
    later = Tracker(TrackingConfig(uri=mlflow_uri), "synthetic")  # the next command that opens the store
    assert later.lost is None
    status = {r.info.run_name: r.info.status for r in store_runs(mlflow_uri)}
    assert status == {"orphan": "KILLED", "alive": "RUNNING"}
    tracker.end(alive)


# ---------------------------------------------------------------- file-system failures: one line, exit 2

@pytest.fixture
def read_only():
    """``read_only(path)``: make a file or folder unwritable, for root too (chattr +i where chmod is not enough)."""
    made = []

    def make(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o555 if path.is_dir() else 0o444)
        elif shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)],
                                                               capture_output=True).returncode != 0:
            pytest.skip("running as root and chattr +i does not work here: nothing is read-only to root")
        made.append(path)

    yield make
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        else:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_a_read_only_store_is_refused_before_anything_exists(cli, tmp_path, monkeypatch, mlflow_uri, read_only):
    monkeypatch.chdir(tmp_path)
    store = Path(mlflow_uri[len("sqlite:///"):])
    read_only(store)
    code, out, err = cli("run", *FAST, f"tracking.uri={mlflow_uri}")
    _one_line(code, err, f"the sqlite store '{store}' cannot be written")
    assert not (tmp_path / "outputs").exists()


def test_baseline_update_to_a_read_only_folder_is_one_line(cli, tmp_path, read_only, results, record, images):
    (tmp_path / "run.json").write_text(json.dumps(results(record("unet", *images(4, 0.7)))))
    (tmp_path / "baselines").mkdir()
    read_only(tmp_path / "baselines")
    code, out, err = cli("baseline", "update", str(tmp_path / "run.json"), str(tmp_path / "baselines" / "b.json"))
    _one_line(code, err, f"'{tmp_path / 'baselines' / 'b.json'}': cannot write it:")
    assert list((tmp_path / "baselines").iterdir()) == []


def test_report_out_naming_a_file_is_one_line(cli, tmp_path, results, record, images):
    (tmp_path / "run.json").write_text(json.dumps(results(record("unet", *images(4, 0.7)))))
    (tmp_path / "report.txt").write_text("mine")
    code, out, err = cli("report", str(tmp_path / "run.json"), "--out", str(tmp_path / "report.txt"))
    _one_line(code, err, "report.txt")
    assert (tmp_path / "report.txt").read_text() == "mine"


@pytest.mark.parametrize("target", ["checkpoint", "results"])
def test_a_full_disk_while_writing_is_one_line_and_the_runs_fail(cli, tmp_path, monkeypatch, mlflow_uri, target):
    import segbench.pipeline.runner as runner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / ".cache"))
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if target == "checkpoint":
        def save(model, folder, config):
            folder.mkdir(parents=True)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "model.safetensors"))
        monkeypatch.setattr(runner, "save_checkpoint", save)
    else:
        write_text = Path.write_text

        def write(self, data, *args, **kwargs):
            if self.name.startswith(".results.json"):
                raise full
            return write_text(self, data, *args, **kwargs)
        monkeypatch.setattr(Path, "write_text", write)
    code, out, err = cli("run", *FAST, f"tracking.uri={mlflow_uri}", f"output_dir={tmp_path / 'out'}")
    line = _one_line(code, err, "No space left on device")
    where = "checkpoints/unet-resnet10t/model.safetensors" if target == "checkpoint" else "results.json"
    assert f"out.partial/{where}'" in line
    status = {"mlflow.parentRunId" in r.data.tags: r.info.status for r in store_runs(mlflow_uri)}
    # the invocation failed; a model whose run was complete before the disk filled keeps it FINISHED
    assert status == {False: "FAILED", True: "FAILED" if target == "checkpoint" else "FINISHED"}
    assert (tmp_path / "out.partial").is_dir() and not (tmp_path / "out").exists()
    assert not list(tmp_path.rglob("results.json"))


def test_a_zoo_folder_that_does_not_exist_is_an_error_not_an_empty_zoo(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBENCH_ZOO", str(tmp_path / "nope"))
    code, out, err = cli("zoo", "list")
    _one_line(code, err, f"SEGBENCH_ZOO={tmp_path / 'nope'}: no such folder")


def test_nothing_is_left_behind_by_a_refused_store(cli, tmp_path, monkeypatch, mlflow_uri, read_only):
    """The read-only store row of the failure table, with its snapshot: no file changed, nothing created."""
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    shutil.copy(mlflow_uri[len("sqlite:///"):], store)
    (tmp_path / "keep.txt").write_text("a file of the user's")
    before = snapshot(tmp_path)
    read_only(store.parent)
    code, out, err = cli("run", *FAST, f"tracking.uri=sqlite:///{store}", f"output_dir={tmp_path / 'out'}")
    _one_line(code, err, f"cannot be written (its folder '{store.parent}' is read-only)")
    assert snapshot(tmp_path) == before and not list(tmp_path.glob("out*"))
