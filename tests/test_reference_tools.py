"""Every "equals" in metric_definitions is a test: segbench's numbers against the named tools themselves.

The tools are dev dependencies (monai, torchmetrics, scikit-learn, cityscapesscripts): a missing one fails here
rather than skipping a claim. Hard cases: 9 multi-class images of different sizes with ignored pixels, a class
predicted but never in the ground truth and an all-one-class image; 10 binary cases (both empty, empty ground truth
with a false positive, empty prediction, foreground only on ignored pixels, foreground on the border, ...) with
anisotropic spacing. Where the reference is a paper or code not on PyPI ("definition of"), hand-computed values.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from segbench.config.schema import DataConfig, EvalConfig
from segbench.data.base import DatasetInfo
from segbench.metrics.confusion import REGISTRY, ConfusionMatrix
from segbench.metrics.passport import Passport
from segbench.metrics.protocol import Split

IGNORE = 255
K = 5  # multi-class: class 4 is predicted but never in the ground truth
SPACING = (0.5, 2.0)  # binary cases: anisotropic pixels (row, column)
TOLERANCE = 2.0  # NSD tolerance, in spacing units
COMPARED: dict[str, set[str]] = {}  # tool -> metrics a test below compares against it


def compares(tool: str, *metrics: str):
    """Mark a test as the one that checks ``metrics`` against ``tool`` (test_every_claimed_tool_is_tested reads it)."""
    COMPARED.setdefault(tool, set()).update(metrics)
    return lambda test: test


# ---------------------------------------------------------------- hard cases

def multiclass_cases() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(prediction, ground truth, float32 probabilities KxHxW whose argmax is the prediction) for 9 images."""
    rng = np.random.default_rng(22)
    cases = []
    for n, (h, w) in enumerate([(24, 32), (31, 17), (40, 40), (16, 48), (33, 29), (20, 20), (45, 30), (28, 36),
                                (12, 60)]):
        gt = np.zeros((h, w), np.int64)
        for _ in range(4):  # blocks of classes 0..3
            r, c = rng.integers(0, h - 4), rng.integers(0, w - 4)
            gt[r:r + rng.integers(4, h // 2 + 5), c:c + rng.integers(4, w // 2 + 5)] = rng.integers(0, 4)
        if n == 5:
            gt[:] = 2  # an all-one-class image
        pred = np.where(rng.random((h, w)) < 0.25, rng.integers(0, 4, (h, w)), gt)
        pred[rng.random((h, w)) < 0.04] = 4  # a class no ground truth holds
        gt[rng.random((h, w)) < 0.06] = IGNORE
        if n == 2:
            gt[:5] = IGNORE  # a band of ignored rows
        logits = rng.random((K, h, w)).astype(np.float32)
        np.put_along_axis(logits, pred[None], 1.0 + 2.0 * rng.random((1, h, w), dtype=np.float32), 0)
        probs = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
        cases.append((pred, gt, probs.astype(np.float32)))
    return cases


def binary_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """(prediction, ground truth) for 10 binary cases of different sizes."""
    def blank(h=20, w=24):
        return np.zeros((h, w), np.int64)

    cases = []
    gt, pred = blank(), blank()
    gt[0, :3] = IGNORE
    cases.append((pred, gt))  # 0: both empty
    gt, pred = blank(), blank()
    pred[5:9, 6:12] = 1
    cases.append((pred, gt))  # 1: empty ground truth, a false positive
    gt, pred = blank(18, 30), blank(18, 30)
    gt[4:12, 10:20] = 1
    cases.append((pred, gt))  # 2: empty prediction
    gt, pred = blank(), blank()
    gt[6:12, 6:14] = IGNORE
    pred[6:12, 6:14] = 1
    cases.append((pred, gt))  # 3: foreground only on ignored pixels
    gt, pred = blank(22, 26), blank(22, 26)
    gt[0:8, 0:10] = 1
    pred[0:6, 0:12] = 1
    cases.append((pred, gt))  # 4: foreground on the border
    rng = np.random.default_rng(7)
    for n in range(5):  # 5-9: overlapping blobs, some with ignored pixels and stray false positives
        h, w = 20 + 3 * n, 24 + 2 * n
        gt, pred = blank(h, w), blank(h, w)
        r, c = rng.integers(2, 8, 2)
        gt[r:r + 8 + n, c:c + 9] = 1
        pred[r + 1:r + 9 + n, c - 1:c + 7 + n] = 1
        if n % 2:
            pred[h - 3:h - 1, w - 4:w - 1] = 1
            gt[r:r + 2, c:c + 3] = IGNORE
        cases.append((pred, gt))
    return cases


def segbench_numbers(cases, k: int, spacing=None, probabilities=None) -> tuple[dict, dict]:
    """segbench's headline metrics and passport record, accumulated one image at a time as the evaluation does."""
    info = DatasetInfo("hard-cases", tuple(f"class{i}" for i in range(k)), tuple((i, i, i) for i in range(k)), IGNORE)
    data = DataConfig(spacing=list(spacing) if spacing else None)
    passport = Passport.build(EvalConfig(surface_tolerance=TOLERANCE), data, info, None, "cpu")
    confusion = ConfusionMatrix(k, IGNORE, per_image=True)
    for n, (pred, gt) in enumerate(cases):
        probs = probabilities[n] if probabilities is not None else np.eye(k, dtype=np.float32)[pred].transpose(2, 0, 1)
        batch = passport.batch(torch.from_numpy(probs)[None], torch.from_numpy(gt)[None], probabilities=True)
        assert torch.equal(batch.pred[0], torch.from_numpy(pred))
        passport.update(batch)
        confusion.update(batch)
    scores = confusion.compute()
    metrics, record = passport.finish(Split(info.classes, confusion.matrix.numpy(), scores,
                                            *confusion.per_image_stats()))
    return scores.metrics | metrics, record


@pytest.fixture(scope="module")
def multiclass():
    cases = multiclass_cases()
    metrics, _ = segbench_numbers([(p, g) for p, g, _ in cases], K, probabilities=[c[2] for c in cases])
    return cases, metrics


@pytest.fixture(scope="module")
def binary():
    cases = binary_cases()
    metrics, record = segbench_numbers(cases, 2, SPACING)
    return cases, metrics, record


def one_hot(label: np.ndarray, k: int, valid: np.ndarray) -> torch.Tensor:
    """1 x k x H x W one-hot of ``label`` with ignored pixels empty in every channel."""
    out = np.stack([(label == c) & valid for c in range(k)])
    return torch.from_numpy(out[None].astype(np.float32))


# ---------------------------------------------------------------- torchmetrics, scikit-learn

@compares("torchmetrics", "mIoU", "mDice", "aAcc")
def test_confusion_matrix_metrics_equal_torchmetrics(multiclass):
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex

    cases, ours = multiclass
    tools = {"mIoU": MulticlassJaccardIndex(K, average="macro", ignore_index=IGNORE),
             "mDice": MulticlassF1Score(K, average="macro", ignore_index=IGNORE),
             "aAcc": MulticlassAccuracy(K, average="micro", ignore_index=IGNORE)}
    for pred, gt, _ in cases:
        for metric in tools.values():
            metric.update(torch.from_numpy(pred).reshape(-1), torch.from_numpy(gt).reshape(-1))
    for name, metric in tools.items():
        assert ours[name] == pytest.approx(metric.compute().item(), abs=1e-6), name


@compares("scikit-learn", "mAcc")
def test_mean_accuracy_equals_scikit_learn_balanced_accuracy(multiclass):
    from sklearn.metrics import balanced_accuracy_score

    cases, ours = multiclass
    gt = np.concatenate([g.ravel() for _, g, _ in cases])
    pred = np.concatenate([p.ravel() for p, _, _ in cases])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true": class 4, left out as in segbench
        expected = balanced_accuracy_score(gt[gt != IGNORE], pred[gt != IGNORE])
    assert ours["mAcc"] == pytest.approx(expected, rel=1e-12)


def test_frequency_weighted_iou_by_hand(multiclass):
    cases, ours = multiclass
    matrix = np.zeros((K, K))
    for pred, gt, _ in cases:
        for g, p in zip(gt.ravel(), pred.ravel()):
            if g != IGNORE:
                matrix[g, p] += 1
    tp, support, predicted = np.diag(matrix), matrix.sum(1), matrix.sum(0)
    with np.errstate(invalid="ignore"):
        iou = tp / (support + predicted - tp)
    assert ours["fwIoU"] == pytest.approx(np.nansum(support / support.sum() * iou), rel=1e-12)


@compares("torchmetrics", "fgIoU", "fgDice")
def test_foreground_scores_equal_torchmetrics(binary):
    from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

    cases, ours, _ = binary
    iou = MulticlassJaccardIndex(2, average="none", ignore_index=IGNORE)
    f1 = MulticlassF1Score(2, average="none", ignore_index=IGNORE)
    for pred, gt in cases:
        for metric in (iou, f1):
            metric.update(torch.from_numpy(pred).reshape(-1), torch.from_numpy(gt).reshape(-1))
    assert ours["fgIoU"] == pytest.approx(iou.compute()[1].item(), abs=1e-6)
    assert ours["fgDice"] == pytest.approx(f1.compute()[1].item(), abs=1e-6)


def saturated_case():
    """Confident float32 logits: the left half's softmax is exactly 1.0 (30 % of it wrong), the right half's about
    0.95 (all right), so both fall in segbench's last bin and in two different torchmetrics bins."""
    rng = np.random.default_rng(3)
    target = rng.integers(0, 3, (1, 10, 12))
    pred = target.copy()
    pred[:, :, :6] = np.where(rng.random((1, 10, 6)) < 0.3, (target[:, :, :6] + 1) % 3, target[:, :, :6])
    logits = np.where(np.eye(3, dtype=bool)[pred].transpose(0, 3, 1, 2), 40.0, 0.0).astype(np.float32)
    logits[:, :, :, 6:] *= 3.64 / 40
    return torch.from_numpy(logits).softmax(1), torch.from_numpy(target)


@compares("torchmetrics", "ECE")
def test_ece_equals_torchmetrics_below_a_confidence_of_one(multiclass):
    from torchmetrics.classification import MulticlassCalibrationError

    cases, ours = multiclass
    tool = MulticlassCalibrationError(K, n_bins=15, norm="l1", ignore_index=IGNORE)
    for _, gt, probs in cases:
        assert probs.max() < 1.0
        tool.update(torch.from_numpy(probs)[None], torch.from_numpy(gt)[None])
    assert ours["ECE"] == pytest.approx(tool.compute().item(), abs=1e-6)


def test_ece_puts_a_confidence_of_one_in_the_last_bin_where_torchmetrics_does_not():
    from torchmetrics.classification import MulticlassCalibrationError

    from segbench.metrics.calibration import Calibration

    probs, target = saturated_case()
    confidence, pred = probs.max(1)
    assert (confidence[..., :6] == 1.0).all() and (confidence[..., 6:] < 1.0).all()
    ours = Calibration(3)
    ours.update(Passport.batch(probs, target, probabilities=True))
    # by hand: bins by floor(15 c), 1.0 in the last; sum over bins of |correct - confidence| over all pixels
    c, ok = confidence.double().ravel().numpy(), (pred == target).double().ravel().numpy()
    bins = np.minimum((c * 15).astype(int), 14)
    expected = sum(abs(ok[bins == b].sum() - c[bins == b].sum()) for b in range(15)) / c.size
    assert ours.ece() == pytest.approx(expected, rel=1e-12)
    tool = MulticlassCalibrationError(3, n_bins=15, norm="l1")(probs, target).item()
    assert abs(tool - expected) > 0.01  # torchmetrics' hidden 16th bin (its issue #3510)


# ---------------------------------------------------------------- MONAI

def monai_per_case(metric_cls, cases, k, include_background, ignore_empty, **kwargs) -> list[float]:
    """MONAI's per-image mean over channels (reduction 'mean_channel') for each case."""
    values = []
    for pred, gt in cases:
        valid = gt != IGNORE
        metric = metric_cls(include_background=include_background, ignore_empty=ignore_empty,
                            reduction="mean_channel", **kwargs)
        metric(one_hot(pred, k, valid), one_hot(gt, k, valid))
        values.append(metric.aggregate().item())
    return values


@compares("monai", "mIoUI", "mDiceI")
def test_wang_image_scores_equal_monai(multiclass, binary):
    from monai.metrics import DiceMetric, MeanIoU

    cases, ours = multiclass
    pairs = [(p, g) for p, g, _ in cases]
    assert ours["mIoUI"] == pytest.approx(np.mean(monai_per_case(MeanIoU, pairs, K, True, True)), abs=1e-6)
    assert ours["mDiceI"] == pytest.approx(np.mean(monai_per_case(DiceMetric, pairs, K, True, True)), abs=1e-6)
    cases, ours, _ = binary  # 2 classes: the foreground, 1 where both masks hold one same class
    assert ours["mIoUI"] == pytest.approx(np.mean(monai_per_case(MeanIoU, cases, 2, False, False)), abs=1e-6)
    assert ours["mDiceI"] == pytest.approx(np.mean(monai_per_case(DiceMetric, cases, 2, False, False)), abs=1e-6)


def wang_by_hand(pred: np.ndarray, gt: np.ndarray) -> float:
    """Wang et al.'s image IoU for K > 2: mean over the classes in the labelled ground truth."""
    valid = gt != IGNORE
    return float(np.mean([((pred == c) & (gt == c)).sum() / (((pred == c) & valid) | (gt == c)).sum()
                          for c in np.unique(gt[valid])]))


def test_wang_worst_case_and_all_one_class_image_by_hand(multiclass):
    from segbench.metrics.per_image import WangImageScores

    cases, ours = multiclass
    by_hand = [wang_by_hand(p, g) for p, g, _ in cases]
    assert ours["mIoUI"] == pytest.approx(np.mean(by_hand), rel=1e-12)
    # 9 images: floor(5 % x 9) = floor(10 % x 9) = 0, so the worst one image (the authors' max(1, int(q/100 N)))
    assert ours["mIoUI_worst5"] == ours["mIoUI_worst10"] == pytest.approx(min(by_hand), rel=1e-12)
    # the all-one-class image: only class 2 counts; segbench's image_mIoU also counts the predicted-only classes as 0
    pred, gt, _ = cases[5]
    valid = gt != IGNORE
    class2 = ((pred == 2) & valid).sum() / valid.sum()
    assert by_hand[5] == pytest.approx(class2)
    single = ConfusionMatrix(K, IGNORE, per_image=True)
    single.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
    from segbench.metrics.per_image import image_scores

    assert image_scores(*single.per_image_stats())[0] == pytest.approx(class2 / len(np.unique(pred[valid])))
    acc = WangImageScores(K)
    acc.scores = [(v / 30, 0.0) for v in range(30)]  # 30 images: worst 5 % is floor(1.5) = 1 image, 10 % is 3
    out = acc.compute(None).metrics
    assert out["mIoUI_worst5"] == 0.0 and out["mIoUI_worst10"] == pytest.approx((0 + 1 / 30 + 2 / 30) / 3)


@compares("monai", "case_Dice")
def test_case_dice_equals_monai_without_ignore_empty_and_both_empty_cases_left_out(binary):
    from monai.metrics import DiceMetric

    cases, ours, _ = binary
    kept = [(p, g) for p, g in cases if ((p == 1) & (g != IGNORE)).any() or (g == 1).any()]
    assert len(kept) == 8  # cases 0 and 3 have no foreground on labelled pixels
    with_empty_gt = np.mean(monai_per_case(DiceMetric, kept, 2, False, False))
    assert ours["case_Dice"] == pytest.approx(with_empty_gt, abs=1e-6)
    monai_default = np.nanmean(monai_per_case(DiceMetric, cases, 2, False, True))  # drops case 1's false positive
    assert abs(monai_default - ours["case_Dice"]) > 0.01


@compares("monai", "HD95", "NSD")
def test_surface_metrics_equal_monai(binary):
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    cases, ours, record = binary
    hd95, nsd = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about the empty masks (NaN)
        for pred, gt in cases:
            valid = gt != IGNORE
            y_pred, y = one_hot(pred, 2, valid)[:, 1:], one_hot(gt, 2, valid)[:, 1:]
            hd95.append(compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95,
                                                   spacing=list(SPACING)).item())
            nsd.append(compute_surface_dice(y_pred, y, [TOLERANCE], include_background=True,
                                            spacing=list(SPACING)).item())
    rows = record["per_case"]
    for row, a, b in zip(rows, hd95, nsd):
        assert (row["HD95"] is None or math.isnan(row["HD95"])) == math.isnan(a)
        assert (row["NSD"] is None or math.isnan(row["NSD"])) == math.isnan(b)
    assert ours["HD95"] == pytest.approx(np.nanmean(hd95), rel=1e-5)  # MONAI measures in float32
    assert ours["NSD"] == pytest.approx(np.nanmean(nsd), abs=1e-6)


# ---------------------------------------------------------------- cityscapesScripts

def write_cityscapes(root, rng) -> list[tuple]:
    """Three val images of different sizes in the official layout with instance maps; their label-id predictions."""
    from fixtures_layouts import write_image, write_mask

    files = []
    for n, (h, w) in enumerate([(40, 48), (32, 56), (36, 36)]):
        name = f"frankfurt_00000{n}_000019"
        labels = np.full((h, w), 7, np.uint8)  # road
        instances = labels.astype(np.uint16)
        shapes = [(24, 24001), (24, 24002), (25, 25001), (26, 26001), (26, 26002), (33, 33001), (32, 32001),
                  (27, 27001), (29, 29001), (26, 26)]  # person x2, rider, car x2, bicycle, motorcycle, truck,
        for label, instance in shapes:  # caravan (not evaluated), a crowd of cars (no instance id)
            r, c = rng.integers(0, h - 8), rng.integers(0, w - 8)
            size = rng.integers(3, 9, 2)
            labels[r:r + size[0], c:c + size[1]] = label
            instances[r:r + size[0], c:c + size[1]] = instance
        labels[:2, :5] = 0  # unlabeled: ignored
        pred = labels.copy()
        flip = rng.random((h, w)) < 0.3
        pred[flip] = rng.choice(np.array([7, 24, 25, 26, 27, 28, 31, 32, 33, 8, 0], np.uint8), flip.sum())
        gt_dir = root / "gtFine" / "val" / "frankfurt"
        write_image(root / "leftImg8bit" / "val" / "frankfurt" / f"{name}_leftImg8bit.png", seed=n, size=(w, h))
        write_mask(gt_dir / f"{name}_gtFine_labelIds.png", labels)
        Image.fromarray(instances).save(gt_dir / f"{name}_gtFine_instanceIds.png")
        write_mask(root / "pred" / f"{name}.png", pred)
        files.append((root / "pred" / f"{name}.png", gt_dir / f"{name}_gtFine_labelIds.png"))
    return files


@compares("cityscapesscripts", "iIoU", "iIoU_category")
def test_iiou_equals_the_official_cityscapes_evaluation(tmp_path):
    import json

    np.in1d = getattr(np, "in1d", np.isin)  # cityscapesScripts 2.3.0 calls np.in1d, which numpy 2.4 removed
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    from segbench.config.schema import SuiteConfig, TrackingConfig
    from segbench.pipeline.score import score_predictions

    files = write_cityscapes(tmp_path, np.random.default_rng(5))
    cfg = SuiteConfig(name="t", models=["unet-resnet18"], progress=False, tracking=TrackingConfig(enabled=False),
                      data=DataConfig(name="cityscapes", root=str(tmp_path)), output_dir=str(tmp_path / "out"))
    ours = json.loads(score_predictions(cfg, tmp_path / "pred", "dataset").read_text())["models"][0]["metrics"]

    args = official.args
    args.evalInstLevelScore, args.quiet = True, True
    matrix, stats = official.generateMatrix(args), official.generateInstanceStats(args)
    for pred, gt in files:
        official.evaluatePair(str(pred), str(gt), matrix, stats, {}, args)
    classes = {label.name: official.getInstanceIouScoreForLabel(label.id, matrix, stats, args)
               for label in official.labels if label.id in args.evalLabels and not label.ignoreInEval}
    categories = {c: official.getInstanceIouScoreForCategory(c, matrix, stats, args) for c in official.category2labels}
    assert ours["iIoU"] == pytest.approx(official.getScoreAverage(classes, args), rel=1e-12)
    assert ours["iIoU_category"] == pytest.approx(official.getScoreAverage(categories, args), rel=1e-12)


# ---------------------------------------------------------------- the mapping

def test_every_claimed_tool_is_tested():
    """Each definition that says it equals a tool's number has a test above that runs that tool; every other one
    says "definition of"."""
    claimed = {(name, e.tool) for name, e in REGISTRY.items() if e.tool}
    tested = {(name, tool) for tool, names in COMPARED.items() for name in names}
    assert claimed == tested
    for name, entry in REGISTRY.items():
        assert bool(entry.tool) != entry.equals.startswith("definition of"), name
        assert entry.tolerance in ("exact", "1e-6", "float32 in the reference"), name


def test_the_metrics_page_shows_every_metric_with_the_tolerance_its_test_holds():
    import re
    from pathlib import Path

    rows = {}
    for line in (Path(__file__).parent.parent / "docs" / "metrics.md").read_text().splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows.update({name: cells[-1] for name in re.findall(r"`([^`]+)`", cells[0])})
    assert {name: entry.tolerance for name, entry in REGISTRY.items()} == rows
