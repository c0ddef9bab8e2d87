"""A tiny run through the real CLI: results.json, the MLflow store, reproducibility, Ctrl-C."""

import json

import numpy as np
import pytest

from segbench.metrics.confusion import compute_metrics

TINY = [
    "models=[unet-resnet10t,pspnet-resnet10t]",
    "train.iters=4",
    "train.batch_size=4",
    "data.image_size=32",
    "data.train_samples=16",
    "data.val_samples=8",
    "eval.batch_size=4",
    "bench.warmup=1",
    "bench.iters=2",
    "bench.repeats=1",
    "progress=false",
]


def run_tiny(cli, tmp_path, mlflow_uri, name="out", *extra):
    out = tmp_path / name
    code, stdout, stderr = cli("run", *TINY, f"output_dir={out}", f"tracking.uri={mlflow_uri}", *extra)
    assert code == 0, stderr
    return out, stdout


def test_run_writes_results_and_mlflow_runs(cli, tmp_path, mlflow_uri, monkeypatch):
    out, stdout = run_tiny(cli, tmp_path, mlflow_uri)
    path = out / "results.json"
    assert f"results: {path}" in stdout
    results = json.loads(path.read_text())
    assert results["schema_version"] == 2 and results["kind"] == "run"
    assert results["convention"] == {"accumulation": "dataset", "absent_class": "nan_excluded",
                                     "ignore_index": 255, "label_space": "synthetic-7", "num_classes": 7,
                                     "void_prediction": None}
    assert [m["name"] for m in results["models"]] == ["unet-resnet10t", "pspnet-resnet10t"]
    for record in results["models"]:
        # the metrics agree with the confusion matrix the run stored (recomputed independently here)
        matrix = np.array(record["confusion_matrix"])
        assert matrix.sum() == 8 * 32 * 32
        tp = np.diag(matrix)
        union = matrix.sum(0) + matrix.sum(1) - tp
        iou = tp[union > 0] / union[union > 0]
        assert record["metrics"]["mIoU"] == pytest.approx(iou.mean())
        assert record["metrics"]["aAcc"] == pytest.approx(tp.sum() / matrix.sum())
        assert record["metrics"]["mDice"] == pytest.approx(compute_metrics(matrix).mDice)
        assert len(record["per_class"]) == 7
        inter, union = np.array(record["per_image"]["intersection"]), np.array(record["per_image"]["union"])
        assert inter.shape == union.shape == (8, 7)
        assert (inter.sum(0) == tp).all() and (union.sum(0) == matrix.sum(0) + matrix.sum(1) - tp).all()
        assert [s["batch_size"] for s in record["speed"]] == [1]
        assert record["speed"][0]["images_per_second"] > 0
        assert (out / f"per_class_{record['name']}.csv").is_file()

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)  # not mlflow.set_tracking_uri: it would outlive this test
    runs = mlflow.search_runs(experiment_names=["synthetic"])
    parent_id = results["mlflow"]["parent_run_id"]
    children = runs[runs["tags.mlflow.parentRunId"] == parent_id]
    assert sorted(children["tags.mlflow.runName"]) == ["pspnet-resnet10t", "unet-resnet10t"]
    for _, row in children.iterrows():
        record = next(m for m in results["models"] if m["mlflow_run_id"] == row["run_id"])
        assert row["metrics.mIoU"] == pytest.approx(record["metrics"]["mIoU"])
        assert row["metrics.mDice"] == pytest.approx(record["metrics"]["mDice"])
        assert row["metrics.images_per_second"] == pytest.approx(record["speed"][0]["images_per_second"])
        assert row["status"] == "FINISHED"
    parent = runs[runs["run_id"] == parent_id].iloc[0]
    assert parent["tags.segbench.suite_hash"] == results["suite"]["config_hash"]
    assert parent["status"] == "FINISHED"
    client = mlflow.tracking.MlflowClient(mlflow_uri)
    assert "results.json" in [a.path for a in client.list_artifacts(parent_id)]
    assert len(client.get_metric_history(children.iloc[0]["run_id"], "train_loss")) == 4


def test_same_seed_same_metrics(cli, tmp_path, mlflow_uri):
    first, _ = run_tiny(cli, tmp_path, mlflow_uri, "a", "tracking.enabled=false")
    second, _ = run_tiny(cli, tmp_path, mlflow_uri, "b", "tracking.enabled=false")
    a = json.loads((first / "results.json").read_text())["models"]
    b = json.loads((second / "results.json").read_text())["models"]
    assert [m["confusion_matrix"] for m in a] == [m["confusion_matrix"] for m in b]
    assert [m["train"]["final_loss"] for m in a] == [m["train"]["final_loss"] for m in b]


def test_ctrl_c_marks_runs_killed_and_writes_no_results(cli, tmp_path, mlflow_uri, monkeypatch):
    import segbench.pipeline.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(segbench.pipeline.runner, "evaluate", interrupted)
    out = tmp_path / "out"
    code, _, err = cli("run", *TINY, f"output_dir={out}", f"tracking.uri={mlflow_uri}")
    assert code == 130 and "interrupted" in err
    assert not out.exists()
    assert not (out.parent / "out.partial" / "results.json").exists()

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)  # not mlflow.set_tracking_uri: it would outlive this test
    runs = mlflow.search_runs(experiment_names=["synthetic"])
    assert len(runs) == 2 and set(runs["status"]) == {"KILLED"}


def test_score_command_on_a_cityscapes_tree(cli, tmp_path, mlflow_uri):
    from fixtures_layouts import make_cityscapes
    from PIL import Image

    from segbench.data.registry import build_dataset
    from segbench.pipeline.validation import load_config

    root = make_cityscapes(tmp_path / "cityscapes")
    dataset = build_dataset(load_config(["suite=cityscapes", f"data.root={root}"]).data, "val")
    preds = tmp_path / "preds"
    preds.mkdir()
    for index, sample in enumerate(dataset.samples):
        target = dataset.target(index)
        if index == 0:  # one perturbed image: its first column predicted as class 0 (road)
            target = target.copy()
            target[:, 0] = 0
        Image.fromarray(target.astype(np.uint8)).save(preds / f"{sample.id.replace('/', '_')}.png")
    out = tmp_path / "out"
    code, stdout, err = cli("score", "suite=cityscapes", f"data.root={root}", f"pred_dir={preds}",
                            "label_space=train", f"output_dir={out}", f"tracking.uri={mlflow_uri}", "progress=false")
    assert code == 0, err
    assert f"results: {out / 'results.json'}" in stdout
    record = json.loads((out / "results.json").read_text())["models"][0]
    # recompute the expected confusion by hand from the ground truth and the perturbation
    matrix = np.zeros((19, 20), np.int64)
    for index in range(len(dataset)):
        target = dataset.target(index)
        pred = target.copy()
        if index == 0:
            pred[:, 0] = 0
        keep = target != 255
        np.add.at(matrix, (target[keep], np.where(pred[keep] == 255, 19, pred[keep])), 1)
    tp = np.diag(matrix[:, :19])
    union = matrix.sum(1) + matrix[:, :19].sum(0) - tp
    expected = np.mean(tp[union > 0] / union[union > 0])
    assert record["metrics"]["mIoU"] == pytest.approx(expected)
    assert record["metrics"]["mIoU"] < 1.0


def test_crf_and_tta_options_reach_the_evaluation(cli, tmp_path):
    out = tmp_path / "out"
    code, _, err = cli("run", *TINY, "models=[pspnet-resnet10t]", "eval.crf.enabled=true", "eval.crf.iters=2",
                       "eval.flip=true", "eval.scales=[1.0,1.5]", f"output_dir={out}", "tracking.enabled=false")
    assert code == 0, err
    record = json.loads((out / "results.json").read_text())["models"][0]
    assert record["evaluation"]["crf"] is True
    assert record["evaluation"]["flip"] is True and record["evaluation"]["scales"] == [1.0, 1.5]
    assert record["evaluation"]["merge"] == "mean_softmax"
    assert np.array(record["confusion_matrix"]).sum() == 8 * 32 * 32


def test_an_output_dir_that_holds_files_is_refused(cli, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    code, _, err = cli("run", *TINY, f"output_dir={out}", "tracking.enabled=false")
    assert code == 2 and "already holds files" in err
    assert (out / "results.json").read_text() == "{}"
