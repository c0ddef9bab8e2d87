"""The metric passport against hand-computed values and independent implementations (scipy, brute force)."""

import json
import math

import numpy as np
import pytest
import torch
from fixtures_layouts import INSTANCE_PREDICTION, make_cityscapes_instances, make_folder, paint, write_mask

from segbench.config.schema import DataConfig, EvalConfig, SuiteConfig, TrackingConfig
from segbench.data.registry import build_dataset, dataset_info, make_loader
from segbench.errors import UserError
from segbench.metrics import per_image
from segbench.metrics.boundary import BoundaryIoU, dilation_pixels
from segbench.metrics.calibration import Calibration, top1
from segbench.metrics.confusion import ConfusionMatrix
from segbench.metrics.passport import Passport
from segbench.metrics.protocol import Batch, Split
from segbench.metrics.surface import case_surface
from segbench.pipeline.score import score_predictions
from segbench.pipeline.validation import load_config

CAR, PERSON, RIDER = 12794.0202738185, 3462.4756337644, 3930.4788056518  # cityscapesScripts avgClassSize


def expected_iiou() -> tuple[dict, float, float]:
    """By hand from fixtures_layouts.INSTANCES and INSTANCE_PREDICTION (see the comments there)."""
    classes = {"car": 1.6 * CAR / (2 * CAR + 5),  # TP 6/10 + 40/40 instances, FN 4/10, FP 5 road pixels
               "person": 0.5 * PERSON / (PERSON + 10),  # half of the person hit; FP: the rider's 10 pixels
               "rider": 0.0,  # TP 0, FN one instance, FP 10 person pixels
               "truck": 0.0}  # no instance, FP 4 car pixels predicted truck
    categories = {"human": 1.0, "vehicle": 2 * CAR / (2 * CAR + 5)}  # category hits; FP 5 road pixels
    return classes, np.mean(list(classes.values())), np.mean(list(categories.values()))


def cityscapes_suite(tmp_path) -> SuiteConfig:
    root = make_cityscapes_instances(tmp_path / "cs")
    return SuiteConfig(name="t", models=["unet-resnet18"], progress=False, tracking=TrackingConfig(enabled=False),
                       data=DataConfig(name="cityscapes", root=str(root)), output_dir=str(tmp_path / "out"))


def test_cityscapes_iiou_of_scored_predictions_matches_the_hand_computed_official_value(tmp_path):
    cfg = cityscapes_suite(tmp_path)
    write_mask(tmp_path / "pred" / "frankfurt_000000_000019.png", paint(INSTANCE_PREDICTION, 0))
    record = json.loads(score_predictions(cfg, tmp_path / "pred", "train").read_text())["models"][0]
    classes, iiou, category = expected_iiou()
    assert record["metrics"]["iIoU"] == pytest.approx(iiou, rel=1e-12)
    assert record["metrics"]["iIoU_category"] == pytest.approx(category, rel=1e-12)
    found = record["passport"]["instances"]
    assert {k: v for k, v in found["classes"].items() if v is not None} == pytest.approx(classes)
    assert found["classes"]["bus"] is None and found["categories"]["human"] == pytest.approx(1.0)


def test_cityscapes_iiou_in_the_evaluation_loop_and_the_confusion_matrix_unchanged(tmp_path):
    cfg = cityscapes_suite(tmp_path)
    info = dataset_info(cfg.data)
    dataset = build_dataset(cfg.data, "val")
    passport = Passport.build(EvalConfig(), cfg.data, info, dataset, "cpu")
    (image, mask, maps), = make_loader(passport.dataset(dataset), 1, False, 0, "cpu", 0)
    assert set(maps) == {"instances"}
    pred = torch.from_numpy(paint(INSTANCE_PREDICTION, 0).astype(np.int64))[None]
    logits = torch.nn.functional.one_hot(pred, 19).permute(0, 3, 1, 2).float()
    with_passport, plain = ConfusionMatrix(19, per_image=True), ConfusionMatrix(19, per_image=True)
    batch = passport.batch(logits, mask, maps)
    passport.update(batch)
    with_passport.update(batch)
    plain.update(logits.max(dim=1).indices, mask)
    assert torch.equal(with_passport.matrix, plain.matrix)
    split = Split(info.classes, with_passport.matrix.numpy(), with_passport.compute(),
                  *with_passport.per_image_stats())
    metrics, record = passport.finish(split)
    _, iiou, category = expected_iiou()
    assert metrics["iIoU"] == pytest.approx(iiou) and metrics["iIoU_category"] == pytest.approx(category)


def detectron2_boundary(mask: np.ndarray, d: int) -> np.ndarray:
    """Detectron2's mask_to_boundary with scipy in place of OpenCV: pad by one zero, erode d times (3x3)."""
    from scipy.ndimage import binary_erosion

    padded = np.pad(mask, 1)
    eroded = binary_erosion(padded, np.ones((3, 3), bool), iterations=d, border_value=1)[1:-1, 1:-1]
    return mask & ~eroded


def test_boundary_iou_matches_detectron2_mask_to_boundary_per_class():
    rng = np.random.default_rng(0)
    k, d_ratio = 3, 0.05
    target = rng.integers(0, k, (2, 30, 40))
    target[:, 10:20, 5:30] = 1  # large regions, so the bands are not the whole image
    target[0, 0:3, 0:4] = 255  # ignored
    pred = np.where(rng.random(target.shape) < 0.2, rng.integers(0, k, target.shape), np.where(target < k, target, 0))
    acc = BoundaryIoU(k, dilation_ratio=d_ratio)
    acc.update(Batch(torch.from_numpy(pred), torch.from_numpy(target)))
    d = int(round(d_ratio * math.hypot(30, 40)))
    assert dilation_pixels(30, 40, d_ratio) == d == 2
    inter, union = np.zeros(k), np.zeros(k)
    for gt, pr in zip(target, pred):
        valid = gt != 255
        for c in range(k):
            g, p = detectron2_boundary(gt == c, d) & valid, detectron2_boundary(pr == c, d) & valid
            inter[c] += (g & p).sum()
            union[c] += (g | p).sum()
    assert acc.intersection.tolist() == inter.tolist() and acc.union.tolist() == union.tolist()
    assert acc.per_class() == pytest.approx(inter / union)


def test_expected_calibration_error_matches_a_per_pixel_loop():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (2, 4, 5, 6)).astype(np.float32)
    target = rng.integers(0, 4, (2, 5, 6))
    target[0, 0] = 255
    cal = Calibration(4, 15)
    conf, pred = top1(torch.from_numpy(logits))
    cal.update(Batch(pred, torch.from_numpy(target), conf))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    confidence, predicted = probs.max(1).ravel(), probs.argmax(1).ravel()
    labels = target.ravel()
    keep = labels != 255
    confidence, correct = confidence[keep], (predicted == labels)[keep]
    ece = 0.0
    for b in range(15):
        in_bin = (confidence > b / 15) & (confidence <= (b + 1) / 15)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    assert cal.ece() == pytest.approx(ece, abs=1e-6)


def test_per_image_scores_by_hand():
    # image 0: classes 0 and 1, IoU 1/2 and 1; image 1: class 0 only, IoU 0; image 2: nothing labelled
    inter = np.array([[1, 2], [0, 0], [0, 0]])
    union = np.array([[2, 2], [3, 0], [0, 0]])
    out = per_image.summary(inter, union)
    assert out["image_mIoU"] == pytest.approx((0.75 + 0.0) / 2)
    assert out["image_mIoU_median"] == pytest.approx(0.375)
    assert out["image_mIoU_worst5"] == out["image_mIoU_worst10"] == 0.0
    assert out["image_mDice"] == pytest.approx(((2 / 3 + 1) / 2 + 0) / 2)


def brute_surface(pred: np.ndarray, gt: np.ndarray, tolerance: float, spacing=(1.0, 1.0)) -> tuple[float, float]:
    """Surface pixels: a mask pixel with a 4-neighbour outside the mask or the image; all pairwise distances."""
    def surface(mask):
        padded = np.pad(mask, 1)
        inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        return np.argwhere(mask & ~inner) * np.array(spacing)

    a, b = surface(pred), surface(gt)
    dist = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    ab, ba = dist.min(1), dist.min(0)
    nsd = ((ab <= tolerance).sum() + (ba <= tolerance).sum()) / (len(ab) + len(ba))
    return max(np.percentile(ab, 95), np.percentile(ba, 95)), nsd


@pytest.mark.parametrize("spacing", [None, (0.5, 2.0)])
def test_hd95_and_surface_dice_match_brute_force_distances(spacing):
    gt = np.zeros((24, 30), bool)
    gt[4:15, 5:20] = True
    pred = np.zeros_like(gt)
    pred[6:18, 3:16] = True
    pred[20:23, 25:29] = True  # a stray blob
    hd95, nsd = case_surface(pred, gt, 2.0, spacing)
    expected = brute_surface(pred, gt, 2.0, spacing or (1.0, 1.0))
    assert (hd95, nsd) == pytest.approx(expected)
    empty_hd95, empty_nsd = case_surface(pred, np.zeros_like(gt), 2.0)
    assert math.isnan(empty_hd95) and empty_nsd == 0


def binary_folder(tmp_path):
    rng = np.random.default_rng(0)
    masks = {}
    for split in ("train", "val"):
        masks[split] = {}
        for n in range(3):
            mask = np.zeros((32, 32), np.uint8)
            r, c = rng.integers(4, 16, 2)
            mask[r:r + 10, c:c + 12] = 255  # 0/255 binary masks
            masks[split][f"case{n}"] = mask
    return make_folder(tmp_path / "folder", masks)


def test_binary_folder_suite_reports_foreground_surface_and_saves_submittable_predictions(tmp_path):
    root = binary_folder(tmp_path)
    out = tmp_path / "out"
    cfg = load_config(["suite=folder_example", f"data.root={root}", "data.label_map={255: 1}", "data.num_workers=0",
                       "models=[unet-resnet10t]", "train.enabled=false", "bench.enabled=false",
                       "tracking.enabled=false", "progress=false", f"output_dir={out}", "eval.save_predictions=true",
                       "eval.overlays=2"])
    from segbench.pipeline.runner import run

    results = json.loads(run(cfg).read_text())
    record = results["models"][0]
    metrics, passport = record["metrics"], record["passport"]
    by_class = {row["class"]: row for row in record["per_class"]}
    assert metrics["fgIoU"] == pytest.approx(by_class["foreground"]["IoU"])
    assert metrics["fgDice"] == pytest.approx(by_class["foreground"]["Dice"])
    assert passport["foreground"] == ["foreground"] and len(passport["per_case"]) == 3
    assert {"HD95", "NSD", "case_Dice", "bIoU", "ECE", "image_mIoU"} <= set(metrics)
    assert passport["surface"] == {"tolerance": 1.0, "unit": "pixels", "spacing": None}
    assert set(results["metric_definitions"]) >= {"fgIoU", "HD95", "mIoU"}
    saved = passport["predictions"]
    assert saved["images"] == 3 and len(saved["overlays"]) == 2
    pngs = sorted((out / saved["labels"]).glob("*.png"))
    from PIL import Image

    values = set().union(*(np.unique(np.asarray(Image.open(p))).tolist() for p in pngs))
    assert values <= {0, 255}  # raw mask values: the inverse of data.label_map
    cfg.output_dir = str(tmp_path / "scored")
    rescored = json.loads(score_predictions(cfg, out / saved["labels"], "dataset").read_text())["models"][0]
    assert rescored["confusion_matrix"] == [row + [0] for row in record["confusion_matrix"]]


def test_passport_off_leaves_the_confusion_matrix_metrics_only(tmp_path):
    from segbench.pipeline.runner import run

    cfg = load_config(["models=[fcn8s-resnet10t]", "train.enabled=false", "bench.enabled=false",
                       "data.val_samples=4", "data.image_size=32", "tracking.enabled=false", "progress=false",
                       "eval.passport=false", f"output_dir={tmp_path / 'off'}"])
    off = json.loads(run(cfg).read_text())["models"][0]
    cfg.eval.passport, cfg.output_dir = True, str(tmp_path / "on")
    on = json.loads(run(cfg).read_text())["models"][0]
    assert set(off["metrics"]) == {"mIoU", "mDice", "aAcc", "mAcc", "fwIoU"} and off["passport"] is None
    assert on["confusion_matrix"] == off["confusion_matrix"]
    assert {k: on["metrics"][k] for k in off["metrics"]} == off["metrics"]


@pytest.mark.parametrize("override, message", [
    ("eval.foreground_classes=[7]", "eval.foreground_classes: 7 names no class"),
    ("data.spacing=[1.0]", "data.spacing"),
    ("eval.boundary_dilation=0", "eval.boundary_dilation"),
    ("eval.surface=true", "eval.surface=true needs eval.foreground_classes"),
    ("eval.metrics=[iIoUU]", "unknown metric 'iIoUU'"),
])
def test_passport_settings_are_checked_at_config_time(override, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        load_config(["models=[unet-resnet10t]", override])


def test_list_metrics_gives_definitions_and_conventions(cli):
    code, stdout, _ = cli("list", "metrics")
    assert code == 0
    for name in ("iIoU", "iIoU_category", "bIoU", "ECE", "HD95", "NSD", "image_mIoU_worst5", "fgDice"):
        assert any(line.startswith(name + " ") for line in stdout.splitlines()), name
    assert "cityscapesScripts" in stdout and "MONAI" in stdout


def test_gate_gates_passport_metrics_in_their_direction_with_intervals(tmp_path, images, record, results):
    from segbench.gate.compare import GatePolicy, gate

    def model(iou: float, ece: float, iiou: float, seed: int = 0) -> dict:
        entry = record("unet-r10", *images(60, iou, seed=seed))
        entry["metrics"] |= {"ECE": ece, "iIoU": iiou,
                             "image_mIoU": per_image.summary(*map(np.array, entry["per_image"].values()))["image_mIoU"]}
        return entry

    base = tmp_path / "base.json"
    base.write_text(json.dumps(results(model(0.6, 0.05, 0.40))))
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(results(model(0.45, 0.08, 0.395, seed=0))))
    checks = gate(worse, base, GatePolicy(max_drop_points={"iIoU": 1.0, "ECE": 2.0, "image_mIoU": 1.0},
                                          max_speed_drop_percent=None)).checks.set_index("check")
    assert checks.loc["iIoU", "status"] == "ok" and checks.loc["iIoU", "change"] == pytest.approx(-0.5)
    assert checks.loc["ECE", "status"] == "fail" and checks.loc["ECE", "change"] == pytest.approx(3.0)
    assert checks.loc["image_mIoU", "status"] == "fail" and checks.loc["image_mIoU", "ci_high"] < 0
    with pytest.raises(UserError, match="no quality metric 'iIOU'"):
        gate(worse, base, GatePolicy(max_drop_points={"iIOU": 1.0}))


def test_per_case_rows_merge_in_data_set_order_across_ranks(monkeypatch):
    """Two ranks with contiguous shards (2 and 3 images): the rows are renumbered as one split, as under torchrun."""
    import torch.distributed as dist

    from segbench.core import distributed
    from segbench.metrics.per_image import WangImageScores
    from segbench.metrics.surface import ForegroundCases

    rng = np.random.default_rng(4)
    target = torch.from_numpy(rng.integers(0, 2, (5, 12, 12)))
    pred = torch.from_numpy(rng.integers(0, 2, (5, 12, 12)))
    whole, ranks = ForegroundCases([1], surface=True), [ForegroundCases([1], surface=True) for _ in range(2)]
    whole_wang, wang = WangImageScores(2), [WangImageScores(2) for _ in range(2)]
    whole.update(Batch(pred, target))
    whole_wang.update(Batch(pred, target))
    for part, (a, b) in zip(zip(ranks, wang), ((0, 2), (2, 5))):
        for acc in part:
            acc.update(Batch(pred[a:b], target[a:b]))
    states = [(list(r.rows), r.cases) for r in ranks], [list(w.scores) for w in wang]  # what each rank sends
    for index, (surface, image) in enumerate(zip(ranks, wang)):
        monkeypatch.setattr(distributed, "gather", lambda value, s=states: s[0] if isinstance(value, tuple) else s[1])
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "all_reduce", lambda tensor: None)
        surface.merge()
        image.merge()
        monkeypatch.undo()
        assert surface.rows == whole.rows and surface.cases == 5 and image.scores == whole_wang.scores, index


def test_cityscapes_instance_counts_of_a_batch_of_images_by_hand():
    """Weighted TP and FN of a 3-image batch (instances of every evaluated class, caravan, crowd and stuff ids)
    equal a per-instance count made by hand, image by image."""
    from segbench.data.layouts.cityscapes import AVG_CLASS_SIZE, CLASSES, InstanceIoU, info, instance_label_ids

    lut = instance_label_ids()
    rng = np.random.default_rng(3)
    instances = rng.choice([7, 26, 26000, 26001, 24000, 24005, 25002, 27001, 28000, 31000, 32001, 33004, 30000],
                           (3, 30, 40))
    pred = rng.integers(0, 20, (3, 30, 40))  # 19: void
    cfg = DataConfig(name="cityscapes")
    metric = InstanceIoU(CLASSES, lut, info(cfg).categories)
    metric.update(Batch(torch.from_numpy(pred), torch.zeros_like(torch.from_numpy(pred)), None,
                        {"instances": torch.from_numpy(instances)}))
    tp, fn = np.zeros(19), np.zeros(19)
    for ids, predicted in zip(instances, pred):
        for instance in np.unique(ids[ids > 1000]):
            if (label := instance // 1000) not in lut:
                continue  # caravan (30): not evaluated
            cls = lut[label]
            pixels = predicted[ids == instance]
            weight = AVG_CLASS_SIZE[CLASSES[cls]] / pixels.size
            tp[cls] += (pixels == cls).sum() * weight
            fn[cls] += (pixels != cls).sum() * weight
    assert metric.weighted.numpy() == pytest.approx(np.stack([tp, fn]), rel=1e-12)


def test_auto_label_space_misled_by_the_first_image_measures_the_passport_in_the_chosen_space(tmp_path):
    """The passport is measured in the first image's label space; when the whole split decides otherwise, it is
    measured again: the numbers equal those of label_space=dataset given outright."""
    from fixtures_layouts import make_cityscapes

    from segbench.data.layouts.cityscapes import TRAIN_CLASSES

    to_label_id = np.full(256, 0, np.uint8)
    to_label_id[: len(TRAIN_CLASSES)] = [label_id for _, label_id, _, _ in TRAIN_CLASSES]
    cfg = SuiteConfig(name="t", models=["unet-resnet18"], progress=False, tracking=TrackingConfig(enabled=False),
                      data=DataConfig(name="cityscapes", root=str(make_cityscapes(tmp_path / "cs"))))
    dataset = build_dataset(cfg.data, "val")
    for index, sample in enumerate(dataset.samples):  # the first image: all 0 (road in train ids, void in label ids)
        target = dataset.target(index)
        write_mask(tmp_path / "pred" / f"{sample.id}.png",
                   np.zeros_like(target) if index == 0 else to_label_id[np.where(target == 255, 0, target)])
    from segbench.pipeline.score import first_space, match_predictions

    assert first_space(dataset, match_predictions(dataset, tmp_path / "pred"), 19, "auto", "here") == "train"
    records = {}
    for space in ("auto", "dataset"):
        cfg.output_dir = str(tmp_path / f"out-{space}")
        records[space] = json.loads(score_predictions(cfg, tmp_path / "pred", space).read_text())["models"][0]
    assert records["auto"]["evaluation"]["label_space"] == "dataset"
    assert records["auto"]["metrics"] == records["dataset"]["metrics"]
    assert records["auto"]["passport"] == records["dataset"]["passport"]
    assert 0 < records["auto"]["metrics"]["bIoU"] < 1
