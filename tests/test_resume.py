"""Resume after preemption: a run stopped by a signal mid-training continues with ``resume=`` to the numbers of an
uninterrupted run (same loss curve, same confusion matrix, same weights); finished models are kept; a changed suite
is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from failure_table import assert_refused, store_runs

import segbench.train.loop as train_loop

SMALL = ["train.batch_size=2", "data.train_samples=8", "data.val_samples=4", "data.image_size=32",
         "eval.batch_size=4", "bench.enabled=false", "progress=false", "train.save_checkpoint=true"]


def _signal_at(monkeypatch, call: int, signum: int = signal.SIGTERM) -> None:
    """Send ``signum`` to this process while training computes its ``call``-th learning rate (1-based, counted over
    every model of the suite), i.e. mid-iteration."""
    real, calls = train_loop.poly_lr, []

    def poly_lr(*args):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return real(*args)

    monkeypatch.setattr(train_loop, "poly_lr", poly_lr)


def _loss_curve(uri: str, run_id: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, "train_loss")
    by_step = {}
    for m in history:  # a resumed run logs the whole curve again: the steps are the iterations
        by_step[m.step] = m.value
    return [by_step[s] for s in sorted(by_step)]


def _same_numbers(a: dict, b: dict) -> None:
    for x, y in zip(a["models"], b["models"], strict=True):
        assert x["confusion_matrix"] == y["confusion_matrix"]
        assert x["metrics"] == y["metrics"] and x["per_image"] == y["per_image"]
        assert x["train"]["final_loss"] == y["train"]["final_loss"]
        assert x["checkpoint"]["sha256"] == y["checkpoint"]["sha256"]  # the same weights, bit for bit


@pytest.mark.slow
def test_interrupted_then_resumed_equals_uninterrupted(cli, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", "models=[unet-resnet10t]", "train.iters=6", *SMALL, f"tracking.uri={uri}"]
    code, _, err = cli(*args, f"output_dir={tmp_path / 'whole'}")
    assert code == 0, err
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())

    _signal_at(monkeypatch, 4)  # in iteration 4: the state after 4 iterations is written, then the run stops
    code, _, err = cli(*args, f"output_dir={tmp_path / 'cut'}")
    assert code == 128 + signal.SIGTERM, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    state = tmp_path / "cut.partial" / "state" / "unet-resnet10t.pt"
    assert f"at iteration 4 saved in {state}" in err and state.is_file()
    killed = {r.info.run_id: r.info.status for r in store_runs(uri) if r.info.status != "FINISHED"}
    assert sorted(killed.values()) == ["KILLED", "KILLED"]
    monkeypatch.undo()

    code, _, err = cli(*args, f"output_dir={tmp_path / 'cut'}", "resume=auto")
    assert code == 0, err
    resumed = json.loads((tmp_path / "cut" / "results.json").read_text())
    _same_numbers(resumed, whole)
    record = resumed["models"][0]
    assert record["train"]["resumed_at"] == [4]
    assert record["mlflow_run_id"] in killed and resumed["mlflow"]["parent_run_id"] in killed  # the same runs
    assert {r.info.status for r in store_runs(uri)} == {"FINISHED"}
    assert _loss_curve(uri, record["mlflow_run_id"]) == _loss_curve(uri, whole["models"][0]["mlflow_run_id"])
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == sorted(p.name for p in
                                                                           (tmp_path / "whole").iterdir())


def test_a_suite_interrupted_in_its_third_model_keeps_the_first_two(cli, tmp_path, monkeypatch):
    import segbench.pipeline.runner as runner

    args = ["run", "models=[unet-resnet10t,fpn-resnet10t,linknet-resnet10t]", "train.iters=2", *SMALL,
            "tracking.enabled=false", f"output_dir={tmp_path / 'out'}"]
    _signal_at(monkeypatch, 5, signal.SIGUSR1)  # in the third model's first iteration
    code, _, err = cli(*args)
    assert code == 128 + signal.SIGUSR1, err
    kept = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "out.partial" / "models").glob("*.json")}
    assert sorted(kept) == ["fpn-resnet10t", "unet-resnet10t"]
    monkeypatch.undo()

    ran = []
    real = runner.run_model
    monkeypatch.setattr(runner, "run_model", lambda spec, *a: ran.append(spec.name) or real(spec, *a))
    code, _, err = cli(*args, f"resume={tmp_path / 'out.partial'}")
    assert code == 0, err
    assert ran == ["linknet-resnet10t"]  # the finished models were not run again
    records = {r["name"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["models"]}
    for name, record in kept.items():
        assert {k: records[name]["train"][k] for k in record["train"]} == record["train"]  # its time too
        assert records[name]["metrics"] == record["metrics"]
        assert records[name]["confusion_matrix"] == record["confusion_matrix"]
    assert records["linknet-resnet10t"]["train"]["resumed_at"] == [1]


@pytest.mark.parametrize(("change", "pattern"), [
    ("train.lr=0.01", r"settings changed since .*: train\.lr \([0-9.e-]+ -> 0\.01\)"),
    ("train.precision=bf16", r"train\.precision \(unset -> bf16\)"),
])
def test_a_changed_suite_is_refused_on_resume(cli, tmp_path, monkeypatch, change, pattern):
    args = ["run", "models=[unet-resnet10t]", "train.iters=3", *SMALL, "tracking.enabled=false",
            f"output_dir={tmp_path / 'out'}"]
    _signal_at(monkeypatch, 2)
    assert cli(*args)[0] == 128 + signal.SIGTERM
    monkeypatch.undo()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert_refused(*cli(*args, change, f"resume={tmp_path / 'out.partial'}"), pattern)
    assert_refused(*cli(*args, change, "resume=auto"), pattern)  # output_dir's own run: not started afresh
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_resume_of_a_folder_that_is_no_interrupted_run_is_refused(cli, tmp_path):
    (tmp_path / "x").mkdir()
    assert_refused(*cli("run", "tracking.enabled=false", f"resume={tmp_path / 'x'}"),
                   r"resume: '.*x' is not an interrupted run's folder")


@pytest.mark.slow
def test_a_real_run_receiving_sigterm_resumes_to_the_uninterrupted_results(tmp_path, cli_for_setup):
    """A real process stopped by SIGTERM from outside, at whatever point of training it reached, continues in a
    new process to the numbers of an uninterrupted run. Tracking is off: a real run's MLflow runs under a signal are
    the robustness tests' (KILLED), their reuse on resume the in-process test's above."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {
        "SEGBENCH_CACHE_DIR": str(tmp_path / ".cache"), "PYTHONUNBUFFERED": "1"}
    # one tiny model (0.5 M parameters: its training state is written in milliseconds), 40 iterations: 35 left for
    # the signal after the first periodic state; progress at its default: stderr is a pipe, as in a batch job's log
    settings = ["models=[pspnet-resnet10t]", "train.iters=40", *(s for s in SMALL if s != "progress=false"),
                "train.checkpoint_every=5", "tracking.enabled=false"]
    args = [sys.executable, "-m", "segbench", "run", *settings]
    # the uninterrupted reference only makes numbers to compare: in this process, without a new interpreter
    code, _, err = cli_for_setup("run", *settings, f"output_dir={tmp_path / 'whole'}", env=env, cwd=tmp_path)
    assert code == 0, err
    proc = subprocess.Popen([*args, f"output_dir={tmp_path / 'cut'}"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "cut.partial" / "state" / "pspnet-resnet10t.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not state.exists():  # the 5th iteration is done
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "training state of pspnet-resnet10t at iteration" in err and "Traceback" not in err
    done = subprocess.run([*args, f"output_dir={tmp_path / 'cut'}", "resume=auto"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads((tmp_path / "cut" / "results.json").read_text())
    _same_numbers(resumed, json.loads((tmp_path / "whole" / "results.json").read_text()))
    assert 5 <= resumed["models"][0]["train"]["resumed_at"][0] < 40
    for log in (err, done.stderr):  # training and evaluation drew no progress bars into the log
        assert "\r" not in log and "it/s" not in log


def test_a_stop_during_evaluation_resumes_without_training_again(cli, tmp_path, monkeypatch):
    import segbench.pipeline.runner as runner

    args = ["run", "models=[unet-resnet10t]", "train.iters=3", "train.checkpoint_every=2", *SMALL,
            "tracking.enabled=false", f"output_dir={tmp_path / 'out'}"]
    real = runner.evaluate

    def stopped(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(runner, "evaluate", stopped)
    code, _, err = cli(*args)
    assert code == 128 + signal.SIGTERM, err
    monkeypatch.undo()
    trained = []
    monkeypatch.setattr(train_loop, "poly_lr", lambda *a: trained.append(a) or 0.0)
    code, _, err = cli(*args, "resume=auto")
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "results.json").read_text())["models"][0]
    assert trained == [] and record["train"]["resumed_at"] == [3] and len(record["train"]) > 0
