"""Evaluation under corruption (eval.corruptions, eval.severities): mPC and rPC against hand-computed values, the
corrupted evaluation against scoring images corrupted beforehand with the package, the cache across models and
runs, the CLI run, MLflow, the report and the gate on mPC."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_layouts import make_folder, stripes
from PIL import Image

imagecorruptions = pytest.importorskip("imagecorruptions")

from segbench.metrics.robustness import (  # noqa: E402
    Condition,
    bootstrap_robustness,
    by_group,
    mean_pc,
    per_corruption,
    per_severity,
    relative_pc,
)
from segbench.metrics.statistics import bootstrap  # noqa: E402

TINY = ["train.iters=2", "train.batch_size=4", "data.train_samples=8", "eval.batch_size=4", "bench.enabled=false",
        "progress=false"]


def _condition(name: str, severity: int, intersection, union) -> Condition:
    i, u = np.asarray(intersection, float), np.asarray(union, float)
    miou = float(np.mean([a / b for a, b in zip(i.sum(0), u.sum(0)) if b > 0]))
    return Condition(name, severity, {"mIoU": miou, "aAcc": 0.5 + severity / 100}, i, u)


def test_mpc_and_rpc_equal_hand_computed_values():
    # two images, two classes; clean mIoU = mean(8/10, 6/10) = 0.7
    clean = (np.array([[4, 3], [4, 3]]), np.array([[5, 5], [5, 5]]))
    conditions = [
        _condition("fog", 1, [[4, 2], [4, 2]], [[5, 5], [5, 5]]),  # mean(8/10, 4/10) = 0.6
        _condition("fog", 3, [[2, 2], [2, 2]], [[5, 5], [5, 5]]),  # 0.4
        _condition("snow", 1, [[5, 5], [5, 5]], [[5, 5], [5, 5]]),  # 1.0
        _condition("snow", 3, [[1, 0], [1, 0]], [[5, 5], [5, 5]]),  # mean(2/10, 0) = 0.1
    ]
    assert [c.metrics["mIoU"] for c in conditions] == pytest.approx([0.6, 0.4, 1.0, 0.1])
    assert mean_pc(conditions) == pytest.approx((0.6 + 0.4 + 1.0 + 0.1) / 4)  # 0.525
    assert relative_pc(mean_pc(conditions), 0.7) == pytest.approx(0.525 / 0.7)  # 0.75
    assert relative_pc(0.5, 0.0) != relative_pc(0.5, 0.0)  # NaN, not a division error
    means = per_corruption(conditions)
    assert means["fog"]["mIoU"] == pytest.approx(0.5) and means["snow"]["mIoU"] == pytest.approx(0.55)
    assert means["fog"]["aAcc"] == pytest.approx(0.52)
    assert per_severity(conditions) == pytest.approx({1: 0.8, 3: 0.25})
    intervals = bootstrap_robustness(clean, conditions)
    assert intervals["mPC"].estimate == pytest.approx(0.525)
    assert intervals["rPC"].estimate == pytest.approx(0.75)


def test_mpc_interval_of_one_corruption_is_the_mIoU_interval_and_rpc_of_an_unchanged_view_is_one(images):
    intersection, union = images(40, 0.6, seed=3)
    corrupted_i, corrupted_u = images(40, 0.4, seed=4)
    one = [Condition("fog", 1, {"mIoU": 0.0}, corrupted_i, corrupted_u)]
    intervals = bootstrap_robustness((intersection, union), one, seed=7)
    reference = bootstrap(corrupted_i, corrupted_u, seed=7)  # the same resampled images in the same order
    assert (intervals["mPC"].low, intervals["mPC"].high) == pytest.approx((reference.low, reference.high))
    unchanged = [Condition("fog", 1, {"mIoU": 0.0}, intersection, union)]
    same = bootstrap_robustness((intersection, union), unchanged)["rPC"]
    assert (same.estimate, same.low, same.high) == pytest.approx((1.0, 1.0, 1.0))


def test_groups_are_scored_on_their_own_images():
    intersection = np.array([[1, 1], [3, 0], [2, 2]])
    union = np.array([[2, 2], [4, 1], [4, 4]])
    ids = ["fog/val/a/x", "night/val/b/y", "fog/val/a/z"]
    groups = by_group(intersection, union, ids, lambda i: i.split("/")[0])
    assert groups["fog"] == pytest.approx({"mIoU": 0.5, "mDice": 2 / 3, "images": 2})  # (1+2)/(2+4) per class
    assert groups["night"]["mIoU"] == pytest.approx((3 / 4 + 0 / 1) / 2)


# ---------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, _migrated_store, cli_for_setup):
    """Two models, two corruptions x two severities, run twice against one corruption cache (in this process: no
    interpreter start for a set-up; on 32x32 images: nothing checked depends on their size)."""
    tmp = tmp_path_factory.mktemp("robustness")
    cache = tmp / "cache"
    shutil.copy(_migrated_store, tmp / "mlflow.db")  # already migrated: no seconds on the store's schema
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    common = ["models=[unet-resnet10t,fpn-resnet10t]", "data.val_samples=8", "data.image_size=32", *TINY,
              "eval.corruptions=[gaussian_noise,contrast]", "eval.severities=[2,4]"]
    env = {"SEGBENCH_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    runs = [cli_for_setup("run", *common, f"output_dir={tmp / 'first'}", f"tracking.uri={uri}", env=env, cwd=tmp),
            cli_for_setup("run", *common, f"output_dir={tmp / 'second'}", "tracking.enabled=false", env=env, cwd=tmp)]
    for code, _, err in runs:
        assert code == 0, err[-3000:]
    return tmp, uri, runs[0][1]


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


@pytest.mark.slow
def test_a_run_reports_every_corruption_and_severity_with_mpc_and_rpc(two_runs):
    tmp, uri, stdout = two_runs
    results = _results(tmp / "first")
    assert {"mPC", "rPC"} <= set(results["metric_definitions"])
    for record in results["models"]:
        robustness = record["robustness"]
        assert [(c["corruption"], c["severity"]) for c in robustness["conditions"]] == [
            ("gaussian_noise", 2), ("gaussian_noise", 4), ("contrast", 2), ("contrast", 4)]
        mious = [c["metrics"]["mIoU"] for c in robustness["conditions"]]
        assert set(robustness["conditions"][0]["metrics"]) == set(record["metrics"]) - {"mPC", "rPC"}
        assert record["metrics"]["mPC"] == pytest.approx(np.mean(mious), abs=1e-12)
        assert record["metrics"]["rPC"] == pytest.approx(np.mean(mious) / record["metrics"]["mIoU"], abs=1e-12)
        assert robustness["per_corruption"]["contrast"]["mIoU"] == pytest.approx(np.mean(mious[2:]))
        assert robustness["per_severity"]["4"] == pytest.approx((mious[1] + mious[3]) / 2)
        interval = robustness["intervals"]["mPC"]
        assert interval["low"] <= record["metrics"]["mPC"] <= interval["high"]
        cost = robustness["cost"]
        assert 0 < cost["corruption_seconds"] and 0 < cost["corruption_share"] < 1
    assert "under corruption" in stdout and "mPC" in stdout


@pytest.mark.slow
def test_corruptions_are_computed_once_per_data_set(two_runs):
    tmp, _, _ = two_runs
    costs = [[m["robustness"]["cost"] for m in _results(tmp / run)["models"]] for run in ("first", "second")]
    counts = [[(c["corrupted_images_computed"], c["corrupted_images_from_cache"]) for c in run] for run in costs]
    # 8 images x 4 views: the first model computes them, the second model and the second run read them
    assert counts == [[(32, 0), (0, 32)], [(0, 32), (0, 32)]]
    assert len(list((tmp / "cache" / "corruptions").glob("??/*.png"))) == 32


@pytest.mark.slow
def test_mpc_and_rpc_go_to_mlflow(two_runs):
    from mlflow.tracking import MlflowClient

    tmp, uri, _ = two_runs
    for record in _results(tmp / "first")["models"]:
        logged = MlflowClient(tracking_uri=uri).get_run(record["mlflow_run_id"]).data.metrics
        assert logged["mPC"] == pytest.approx(record["metrics"]["mPC"])
        assert logged["rPC"] == pytest.approx(record["metrics"]["rPC"])
        assert logged["mIoU.corruption.contrast"] == pytest.approx(
            record["robustness"]["per_corruption"]["contrast"]["mIoU"])


@pytest.mark.slow
def test_the_gate_checks_mpc(two_runs, cli, tmp_path):
    tmp, _, _ = two_runs
    baseline = tmp / "first" / "results.json"
    code, out, err = cli("gate", str(baseline), str(baseline), "--max-drop", "mPC=0.5")
    assert code == 0, out + err
    worse = _results(tmp / "first")
    worse["models"][0]["metrics"]["mPC"] -= 0.01  # one percentage point
    (tmp_path / "worse").mkdir()
    (tmp_path / "worse" / "results.json").write_text(json.dumps(worse))
    code, out, err = cli("gate", str(tmp_path / "worse"), str(baseline), "--max-drop", "mPC=0.5")
    assert code == 1 and "mPC" in out
    code, out, err = cli("gate", str(tmp_path / "worse"), str(baseline), "--max-drop", "mPC=2")
    assert code == 0, out + err


@pytest.mark.slow
def test_the_report_shows_robustness(two_runs, cli, tmp_path):
    tmp, _, _ = two_runs
    code, out, err = cli("report", str(tmp / "first"), "--out", str(tmp_path / "report"))
    assert code == 0, err
    page = (tmp_path / "report" / "synthetic" / "index.html").read_text()
    assert "Robustness under corruption" in page and "mIoU against severity" in page and "gaussian_noise" in page
    markdown = (tmp_path / "report" / "synthetic" / "leaderboard.md").read_text()
    assert "rPC" in markdown and "contrast" in markdown


def test_a_corrupted_view_scores_as_images_corrupted_beforehand(tmp_path, cli_for_setup):
    """segbench's evaluation under gaussian_blur at severity 2 equals evaluating the same model on a folder whose
    images were corrupted with the package first."""
    masks = {f"img{i}": stripes(tuple(np.arange(i, i + 8) % 3)) for i in range(4)}
    clean = make_folder(tmp_path / "clean", {"train": masks, "val": masks})
    corrupted = make_folder(tmp_path / "corrupted", {"train": masks, "val": masks})
    for path in sorted((corrupted / "images" / "val").glob("*.png")):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        Image.fromarray(np.uint8(imagecorruptions.corrupt(pixels, corruption_name="gaussian_blur",
                                                          severity=2))).save(path)
    folder = ["data.name=folder", "data.classes=[a,b,c]", "models=[unet-resnet10t]", *TINY]
    env = {"SEGBENCH_CACHE_DIR": str(tmp_path / "cache")}  # both runs in this process: no interpreter starts
    code, _, err = cli_for_setup("run", *folder, f"data.root={clean}", "eval.corruptions=[gaussian_blur]",
                                 "eval.severities=[2]", f"output_dir={tmp_path / 'under'}", "tracking.enabled=false",
                                 env=env, cwd=tmp_path)
    assert code == 0, err[-3000:]
    under = _results(tmp_path / "under")["models"][0]
    checkpoint = tmp_path / "under" / under["checkpoint"]["path"]
    code, _, err = cli_for_setup("run", *folder, f"data.root={corrupted}", "train.enabled=false",
                                 f"weights.unet-resnet10t={checkpoint}", f"output_dir={tmp_path / 'before'}",
                                 "tracking.enabled=false", env=env, cwd=tmp_path)
    assert code == 0, err[-3000:]
    before = _results(tmp_path / "before")["models"][0]
    scored = under["robustness"]["conditions"][0]["metrics"]
    assert scored == pytest.approx(before["metrics"], abs=1e-12)
    assert scored != pytest.approx({k: under["metrics"][k] for k in scored}, abs=1e-9)  # the blur changed something


def test_cityscapes_to_acdc_scores_each_condition_on_its_own_images(tmp_path, cli, monkeypatch):
    from fixtures_layouts import make_acdc

    monkeypatch.delenv("ACDC_ROOT", raising=False)
    code, out, err = cli("run", "suite=cityscapes_to_acdc")
    assert code == 2 and err.startswith("segbench: error: acdc: data.root is not set") and "acdc.vision" in err
    root = make_acdc(tmp_path / "acdc")
    code, out, err = cli("run", "suite=cityscapes_to_acdc", f"data.root={root}", "models=[unet-resnet10t]",
                         "eval.mode=whole", "data.num_workers=0", "progress=false", "tracking.enabled=false",
                         f"output_dir={tmp_path / 'out'}")
    assert code == 0, err
    record = _results(tmp_path / "out")["models"][0]
    intersection = np.asarray(record["per_image"]["intersection"], float)
    union = np.asarray(record["per_image"]["union"], float)
    rows = {"fog": [0, 1], "night": [2], "rain": [3], "snow": [4]}  # the val samples in data set order
    adverse = record["robustness"]["adverse"]
    assert list(adverse) == list(rows)
    for condition, chosen in rows.items():
        i, u = intersection[chosen].sum(0), union[chosen].sum(0)
        assert adverse[condition]["mIoU"] == pytest.approx(np.mean([a / b for a, b in zip(i, u) if b > 0]))
        assert adverse[condition]["images"] == len(chosen)
    assert record["robustness"]["conditions"] == [] and record["robustness"]["mPC"] is None
