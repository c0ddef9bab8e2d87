"""Real processes against a real store: runs started together, signals mid-run, an interrupted store set-up,
internal errors; and the mask conventions and weights records that keep numbers honest."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_layouts import write_mask
from safetensors.torch import save_file
from test_failures import TINY, binary_mask, folder_suite, folder_tree, resnet10t_state


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return env | {"SEGBENCH_CACHE_DIR": str(tmp_path / ".cache"), "PYTHONUNBUFFERED": "1"}


def _segbench(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "segbench", *args], cwd=cwd, env=_env(cwd),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


TOGETHER = 2  # runs started at once: on two cores, two are truly simultaneous


@pytest.mark.slow
def test_runs_started_together_in_an_empty_folder_all_finish(tmp_path):
    # two processes race to create and migrate one store, to create its experiment, to write to it and to claim
    # output folders named by the second they start in; a third would wait its turn at the same locks
    procs = [_segbench("run", *TINY, "train.iters=2", "data.image_size=32", cwd=tmp_path) for _ in range(TOGETHER)]
    outputs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0] * TOGETHER, [err[-2000:] for _, err in outputs]
    runs = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == TOGETHER and len(children) == TOGETHER
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all("mIoU" in r.data.metrics for r in children)
    folders = sorted((tmp_path / "outputs" / "synthetic").iterdir())
    assert len(folders) == TOGETHER and all((f / "results.json").is_file() for f in folders)
    assert not list(tmp_path.glob(".mlflow.db.*"))  # no migration leftovers


def _workers_of(pid: int) -> list[int]:
    """The processes ``pid`` forked (a loader's workers: the same command line), not the commands it runs."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            if fields.get("PPid", "").strip() == str(pid) and \
                    (status.parent / "cmdline").read_bytes() == Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(status.parent.name))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:\t", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


BUSY_S = 120  # the longest a busy process lives if the test dies before stopping it
BUSY_BEFORE_S = 0.5  # training under load before the signal (the busy processes spin within tens of milliseconds)


def _busy(count: int = 2) -> list[subprocess.Popen]:
    """``count`` CPU-bound processes, each ending by itself after BUSY_S: the busy machine a signal meets in CI."""
    loop = f"import time\nend = time.monotonic() + {BUSY_S}\nwhile time.monotonic() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(count)]


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_mid_training_kills_the_runs_and_writes_no_results(tmp_path, mlflow_uri, signum, code):
    uri = mlflow_uri  # already migrated (tmp_path/mlflow.db): training starts seconds sooner
    # one tiny model (0.5 M parameters): the state it writes on the signal takes milliseconds, not seconds
    proc = _segbench("run", *TINY, "models=[pspnet-resnet10t]", "train.iters=100000", "data.num_workers=2",
                     f"tracking.uri={uri}", f"output_dir={tmp_path / 'out'}", cwd=tmp_path)
    deadline, workers = time.time() + 180, []
    while time.time() < deadline and proc.poll() is None and not workers:  # training: its loader's workers are up
        time.sleep(0.1)  # (they start after the model's own MLflow run)
        workers = _workers_of(proc.pid)
    busy = _busy()  # the signal meets a busy machine, as in CI: two more processes want both cores
    try:
        time.sleep(BUSY_BEFORE_S)
        workers = _workers_of(proc.pid)
        proc.send_signal(signum)
        deadline = time.time() + 120  # busy until the workers, where the hand-overs break, have stopped
        while time.time() < deadline and proc.poll() is None and any(_alive(pid) for pid in workers):
            time.sleep(0.02)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert f"interrupted ({signal.Signals(signum).name})" in err and "Traceback" not in err, err[-3000:]
    runs = _runs(uri)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"KILLED"}
    assert not list(tmp_path.rglob("results.json")) and (tmp_path / "out.partial").is_dir()
    assert workers and not any(_alive(pid) for pid in workers)  # the loader's worker processes stopped too


ABANDONED = """
import socket, sys
import multiprocessing.resource_sharer as sharer
import torch, typer.main
from segbench.data.registry import make_loader

sys.excepthook = typer.main.except_hook  # as in `segbench`: typer sets its hook when the command starts
real = sharer.DupFd.detach

def abandoned_then_real(self):  # a hand-over abandoned half-way (as by a signal), then the real one
    with socket.socket(socket.AF_UNIX) as peer:
        peer.connect(self._id[0])
    return real(self)

sharer.DupFd.detach = abandoned_then_real
batches = iter(make_loader(torch.arange(64.0).reshape(16, 4), 4, False, 2, "cpu", 0))
print(sum(float(batch.sum()) for batch in batches))
"""


def test_a_hand_over_the_command_abandons_prints_nothing_in_the_loader_workers(tmp_path):
    """The cause of a traceback on interrupt under load: a signal lands while the command receives a batch's
    tensors from a loader worker (a file descriptor each, over a socket); the worker's resource-sharer thread
    meets the closed socket. Here every hand-over is first abandoned, so the worker's thread meets it each time."""
    done = subprocess.run([sys.executable, "-c", ABANDONED], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout) == sum(range(64))  # every batch still arrived, through the real hand-overs
    assert "Traceback" not in done.stderr and "resource_sharer" not in done.stderr, done.stderr[-3000:]


def test_an_interrupted_store_set_up_leaves_no_store_and_the_next_run_works(tmp_path, monkeypatch):
    import segbench.results.tracking as tracking

    real = tracking._migrate

    def interrupted(path: Path) -> None:
        path.write_bytes(b"SQLite format 3\x00 half-written")
        raise KeyboardInterrupt

    monkeypatch.setattr(tracking, "_migrate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tracking.check_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(tracking, "_migrate", real)
    tracking.check_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert _runs(f"sqlite:///{tmp_path / 'mlflow.db'}") == []


def test_a_half_migrated_store_is_refused_with_its_remedy(cli, tmp_path):
    import sqlite3

    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("CREATE TABLE experiments (experiment_id INTEGER)")
    code, _, err = cli("run", *TINY, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                       f"output_dir={tmp_path / 'out'}")
    assert code == 2 and "not an MLflow store at this MLflow's schema (found revision None" in err
    assert "move it away" in err and not (tmp_path / "out.partial").exists()


def test_an_internal_error_is_one_line_exit_3_and_its_traceback_only_under_debug(cli, tmp_path, monkeypatch,
                                                                                 mlflow_uri):
    import segbench.pipeline.runner

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero in the evaluation")

    monkeypatch.setattr(segbench.pipeline.runner, "evaluate", broken)
    args = ("run", *TINY, f"tracking.uri={mlflow_uri}")
    code, _, err = cli(*args, f"output_dir={tmp_path / 'a'}")
    assert code == 3 and err.strip().splitlines() == [
        "segbench: internal error: ZeroDivisionError: division by zero in the evaluation (a bug in segbench, not "
        "in your input; rerun with --debug or SEGBENCH_DEBUG=1 for the traceback, and please report it)"]
    assert {r.info.status for r in _runs(mlflow_uri)} == {"FAILED"}
    # --debug anywhere on the line (it is global) shows the traceback, and the exit code stays 3, never 1 (a
    # regression's code)
    code, _, err = cli(*args, "--debug", f"output_dir={tmp_path / 'b'}")
    assert code == 3 and "Traceback (most recent call last)" in err and "ZeroDivisionError" in err


def test_label_map_reads_0_255_masks_as_binary_for_data_and_predictions(cli, tmp_path, mlflow_uri):
    root = folder_tree(tmp_path / "data", binary_mask(255))
    code, _, err = cli("run", *folder_suite(root), "data.label_map={255: 1}", f"tracking.uri={mlflow_uri}",
                       f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "results.json").read_text())["models"][0]
    foreground = sum(int((binary_mask(255)(i) == 255).sum()) for i in range(2))
    assert [row["support"] for row in record["per_class"]] == [2 * 32 * 32 - foreground, foreground]
    # the ground truth itself, saved the way the tool saved it (0/255), scores 1.0 under the same mapping
    for i in range(2):
        write_mask(tmp_path / "preds" / f"{i}.png", binary_mask(255)(i))
    code, _, err = cli("score", *folder_suite(root), "data.label_map={255: 1}", f"pred_dir={tmp_path / 'preds'}",
                       f"tracking.uri={mlflow_uri}", f"output_dir={tmp_path / 'score'}")
    assert code == 0, err
    scored = json.loads((tmp_path / "score" / "results.json").read_text())["models"][0]
    assert scored["metrics"]["mIoU"] == 1.0 and scored["per_class"][1]["support"] == foreground


def test_a_class_with_no_pixel_in_the_split_is_reported(cli, tmp_path, mlflow_uri):
    root = folder_tree(tmp_path / "data", binary_mask(1))
    code, _, err = cli("run", *folder_suite(root), "data.classes=[background,nucleus,mitosis]",
                       "data.palette=null", f"tracking.uri={mlflow_uri}", f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    assert "no pixel of class 'mitosis' in 2 images" in err
    record = json.loads((tmp_path / "run" / "results.json").read_text())["models"][0]
    assert record["data"]["classes_without_pixels"] == ["mitosis"] and record["per_class"][2]["support"] == 0


def test_backbone_weights_are_mapped_and_recorded_with_file_checksum_and_coverage(cli, tmp_path, mlflow_uri):
    state = resnet10t_state()
    path = tmp_path / "lite.safetensors"
    save_file({f"_trunk.{k}": v for k, v in state.items()} | {"_trunk.fc.weight": torch.zeros(2, 2)}, path)
    code, out, err = cli("run", *TINY, f"backbone_weights.resnet10t={path}",
                         "backbone_key_map.resnet10t={^_trunk\\.: ''}", f"tracking.uri={mlflow_uri}",
                         f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    expected_total = len([k for k in state if not k.startswith("fc.") and not k.endswith("num_batches_tracked")])
    record = json.loads((tmp_path / "run" / "results.json").read_text())["models"][0]
    backbone = record["weights"]["backbone"]
    assert backbone["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (backbone["loaded"], backbone["total"], backbone["coverage"]) == (expected_total, expected_total, 1.0)
    assert record["weights"]["model"] is None
    assert f"filled {expected_total} of {expected_total} backbone tensors" in out
    params = {r.info.run_name: r.data.params for r in _runs(mlflow_uri)}["unet-resnet10t"]
    assert params["backbone_weights"] == str(path) and params["backbone_weights_sha256"] == backbone["sha256"]
    assert params["weights"] == "random"


def test_an_existing_partial_folder_is_never_deleted(cli, tmp_path, mlflow_uri):
    (tmp_path / "out.partial").mkdir()
    (tmp_path / "out.partial" / "notes.txt").write_text("mine")
    code, _, _ = cli("run", *TINY, f"output_dir={tmp_path / 'out'}", f"tracking.uri={mlflow_uri}")
    assert code == 2 and (tmp_path / "out.partial" / "notes.txt").read_text() == "mine"


def test_masks_in_0_1_are_unaffected_by_the_convention_check(cli, tmp_path, mlflow_uri):
    root = folder_tree(tmp_path / "data", binary_mask(1))
    code, _, err = cli("run", *folder_suite(root), f"tracking.uri={mlflow_uri}", f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "results.json").read_text())["models"][0]
    assert record["per_class"][1]["support"] == sum(int(binary_mask(1)(i).sum()) for i in range(2))
    assert np.isfinite(record["metrics"]["mIoU"])


def _hub_cache(monkeypatch, cache: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_timm_backbone_weights_offline_and_not_cached_are_refused_with_how_to_fetch(cli, tmp_path, monkeypatch):
    _hub_cache(monkeypatch, tmp_path / "hub")
    code, _, err = cli("run", *TINY, "backbone_weights.resnet10t=timm", f"output_dir={tmp_path / 'out'}")
    assert code == 2 and "timm's weights timm/resnet10t.c3_in1k are not in the Hugging Face cache" in err
    assert str(tmp_path / "hub") in err and "timm.create_model('resnet10t', pretrained=True)" in err
    assert not (tmp_path / "out.partial").exists() and not (tmp_path / "out").exists()


def test_timm_backbone_weights_load_from_the_hugging_face_cache(cli, tmp_path, monkeypatch, mlflow_uri):
    from timm.models import get_pretrained_cfg

    _hub_cache(monkeypatch, tmp_path / "hub")
    hub_id = get_pretrained_cfg("resnet10t").hf_hub_id  # the layout huggingface_hub keeps its cache in
    repo = tmp_path / "hub" / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    state = resnet10t_state()
    save_file(state, repo / "snapshots" / "0123abcd" / "model.safetensors")
    code, _, err = cli("run", *TINY, "backbone_weights.resnet10t=timm", f"tracking.uri={mlflow_uri}",
                       f"output_dir={tmp_path / 'out'}")
    assert code == 0, err
    model = json.loads((tmp_path / "out" / "results.json").read_text())["models"][0]
    backbone = model["weights"]["backbone"]
    assert backbone["file"] == str(repo / "snapshots" / "0123abcd" / "model.safetensors")
    assert backbone["coverage"] == 1.0 and "normalisation" not in backbone  # one record of it: origin's
    assert model["origin"]["normalisation"]["mean"] == [0.485, 0.456, 0.406]


def test_a_backbone_trained_on_other_inputs_gets_them(monkeypatch):
    """A backbone whose published normalisation is not ImageNet's sees its own inputs: the runner's hook equals
    re-normalising by hand."""
    import segbench.models.pretrained as pretrained
    from segbench.config.schema import SuiteConfig
    from segbench.models import factory
    from segbench.models.factory import backbone_file
    from segbench.models.normalisation import IMAGENET, Normalisation, feed_normalised
    from segbench.models.pretrained import PublishedBackbone

    half = Normalisation((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1.0, "test")
    path = Path(__file__).parent / "_unused"
    monkeypatch.setattr(pretrained, "published_backbone", lambda name: PublishedBackbone(name, "timm/x", path, half))
    cfg = SuiteConfig(backbone_weights={"resnet10t": "timm"})
    assert backbone_file(cfg, "resnet10t") == (path, half)
    torch.manual_seed(0)
    model = factory.build("fpn-resnet10t", 3, "random").module.eval()
    images = torch.randn(1, 3, 64, 64)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    with torch.no_grad():
        by_hand = model((images * std + mean - 0.5) / 0.5)
        unchanged = model(images)
        feed_normalised(model, IMAGENET)
        torch.testing.assert_close(model(images), unchanged, rtol=0, atol=0)
        feed_normalised(model, half)
        torch.testing.assert_close(model(images), by_hand)


def test_the_report_shows_the_saved_predictions(cli, tmp_path, mlflow_uri):
    import base64

    root = folder_tree(tmp_path / "data", binary_mask(1))
    code, _, err = cli("run", *folder_suite(root), "eval.save_predictions=true", "eval.overlays=2",
                       f"tracking.uri={mlflow_uri}", f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    overlays = sorted((tmp_path / "run" / "predictions" / "unet-resnet10t" / "overlays").glob("*.png"))
    assert len(overlays) == 2
    code, _, err = cli("report", str(tmp_path / "run"), "--out", str(tmp_path / "rep"))
    assert code == 0, err
    html = (tmp_path / "rep" / "folder_example" / "index.html").read_text()
    assert html.count('alt="prediction of unet-resnet10t"') == 2
    assert all(base64.b64encode(path.read_bytes()).decode() in html for path in overlays)
