"""The Boundary IoU band's log-step window (torch) and packed-bit window (numpy) equal the plain definition: shifted
copies of the label map; ``segbench score``'s passport, counted per image in its reader threads, equals the counts
by hand and the evaluation's accumulators."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures_layouts import write_image, write_mask
from PIL import Image

from segbench.metrics.boundary import OUTSIDE, BoundaryIoU, band, band_cpu, dilation_pixels, window
from segbench.metrics.protocol import Batch


def torch_band(labels: np.ndarray, d: int) -> np.ndarray:
    return band(torch.from_numpy(labels), d).numpy()


def shifted_copies_band(labels: np.ndarray, d: int) -> np.ndarray:
    """A pixel is in the band when one of the (2d+1)^2 pixels around it (outside the image: 255) differs from it."""
    n, h, w = labels.shape
    padded = np.full((n, h + 2 * d, w + 2 * d), OUTSIDE, np.uint8)
    padded[:, d:d + h, d:d + w] = labels
    out = np.zeros(labels.shape, bool)
    for dy in range(2 * d + 1):
        for dx in range(2 * d + 1):
            out |= padded[:, dy:dy + h, dx:dx + w] != labels
    return out


def random_map(rng: np.random.Generator, n: int, h: int, w: int, k: int) -> np.ndarray:
    """Blocky labels (with a few ignored 255s and single-pixel specks), so bands are neither empty nor everything."""
    block = int(rng.integers(1, 6))
    coarse = rng.integers(0, k, (n, -(-h // block), -(-w // block)))
    labels = np.kron(coarse, np.ones((1, block, block), np.int64))[:, :h, :w].astype(np.uint8)
    labels[rng.random(labels.shape) < 0.02] = 255
    labels[rng.random(labels.shape) < 0.01] = rng.integers(0, k)
    return labels


@pytest.mark.parametrize("band_of", [torch_band, band_cpu])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 7), (1, 9, 1), (2, 13, 17), (1, 31, 8), (3, 24, 40),
                                   (1, 6, 130), (2, 70, 64)])
@pytest.mark.parametrize("d", [1, 2, 3, 5, 8, 13, 32, 40, 64, 65])
def test_band_equals_shifted_copies(band_of, shape, d):
    """Odd and even sizes, one-pixel maps, rows of one, two and three 64-bit words, and windows wider than the
    image (d = 13 and up) or a word (d = 32 and up)."""
    rng = np.random.default_rng(hash((shape, d)) % 2**32)
    for k in (1, 2, 19):
        labels = random_map(rng, *shape, k)
        assert np.array_equal(band_of(labels, d), shifted_copies_band(labels, d)), (k, shape)


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 93])
def test_window_is_the_maximum_and_minimum_of_every_run(width):
    x = torch.from_numpy(np.random.default_rng(width).integers(0, 256, (3, 100 + width)).astype(np.uint8))
    runs = x.unfold(-1, width, 1)  # every run of ``width`` values, as torch's own view
    assert torch.equal(window(x, width, -1, torch.maximum), runs.max(-1).values)
    assert torch.equal(window(x.T, width, 0, torch.minimum), runs.min(-1).values.T)


def test_boundary_counts_by_hand_on_random_maps():
    """Per-class intersections and unions equal the counts of the shifted-copies bands, with void predictions."""
    rng = np.random.default_rng(7)
    k, d_ratio = 5, 0.1
    target, pred = random_map(rng, 2, 37, 50, k), random_map(rng, 2, 37, 50, k + 1)  # pred k: void
    metric = BoundaryIoU(k, dilation_ratio=d_ratio)
    metric.update(Batch(torch.from_numpy(pred), torch.from_numpy(target)))
    d = metric.dilations.pop()
    valid = target < k
    gt_in, pred_in = shifted_copies_band(target, d) & valid, shifted_copies_band(pred, d) & valid
    for c in range(k):
        g, p = gt_in & (target == c), pred_in & (pred == c)
        assert metric.intersection[c] == (g & p).sum()
        assert metric.union[c] == (g | p).sum()


def write_scored_cityscapes(root, rng) -> None:
    """Four val images of different sizes in the Cityscapes layout, with instance maps, and label-id predictions:
    blocks of other ids, void ids (0, 4) and values that are no id (250), ignored ground truth (0)."""
    ids = np.array([7, 8, 11, 17, 21, 23, 24, 26, 33], np.uint8)
    for n, (h, w) in enumerate([(40, 48), (33, 70), (36, 36), (64, 130)]):
        name = f"frankfurt_{n:06d}_000019"
        labels = np.kron(rng.choice(ids, (-(-h // 4), -(-w // 4))), np.ones((4, 4), np.uint8))[:h, :w]
        labels[:3, :5] = 0
        pred = labels.copy()
        changed = rng.random((h, w)) < 0.2
        pred[changed] = rng.choice(np.append(ids, [0, 4, 250]), changed.sum())
        gt_dir = root / "gtFine" / "val" / "frankfurt"
        write_image(root / "leftImg8bit" / "val" / "frankfurt" / f"{name}_leftImg8bit.png", seed=n, size=(w, h))
        write_mask(gt_dir / f"{name}_gtFine_labelIds.png", labels)
        Image.fromarray(labels.astype(np.uint16) * 1000 + 1).save(gt_dir / f"{name}_gtFine_instanceIds.png")
        write_mask(root / "pred" / f"{name}.png", pred)


def test_scored_passport_equals_counts_by_hand_and_the_evaluation_accumulators(tmp_path):
    """Boundary IoU's per-class counts from shifted-copies bands; Wang et al.'s per-image scores and the iIoU from
    the evaluation's accumulators fed the same class maps as a Batch."""
    from segbench.config.schema import DataConfig, SuiteConfig, TrackingConfig
    from segbench.data.registry import build_dataset, dataset_info
    from segbench.metrics.passport import Passport
    from segbench.metrics.protocol import Split
    from segbench.pipeline.score import prediction_table, score_predictions

    write_scored_cityscapes(tmp_path, np.random.default_rng(3))
    cfg = SuiteConfig(name="t", models=["unet-resnet18"], progress=False, tracking=TrackingConfig(enabled=False),
                      data=DataConfig(name="cityscapes", root=str(tmp_path)), output_dir=str(tmp_path / "out"))
    record = json.loads(score_predictions(cfg, tmp_path / "pred", "dataset").read_text())["models"][0]
    info, dataset = dataset_info(cfg.data), build_dataset(cfg.data, "val")
    k = info.num_classes
    classes = prediction_table("dataset", dataset.encoding, k)
    intersection, union = np.zeros(k, np.int64), np.zeros(k, np.int64)
    passport = Passport.build(cfg.eval, cfg.data, info, dataset, "cpu", confidences=False)
    for index, sample in enumerate(dataset.samples):
        target = dataset.target(index).astype(np.uint8)
        pred = classes[np.asarray(Image.open(tmp_path / "pred" / f"{sample.id.split('/')[-1]}.png"))]
        d = dilation_pixels(*target.shape)
        valid = target < k
        gt_in, pred_in = (shifted_copies_band(m[None].astype(np.uint8), d)[0] & valid for m in (target, pred))
        for c in range(k):
            g, p = gt_in & (target == c), pred_in & (pred == c)
            intersection[c] += (g & p).sum()
            union[c] += (g | p).sum()
        instances = np.asarray(Image.open(dataset.samples[index].mask.parent /
                                          sample.mask.name.replace("labelIds", "instanceIds"))).astype(np.int64)
        passport.update(Batch(torch.from_numpy(pred.astype(np.uint8))[None], torch.from_numpy(target)[None], None,
                              {"instances": torch.from_numpy(instances)[None]}))
    assert record["passport"]["boundary"]["intersection"] == intersection.tolist()
    assert record["passport"]["boundary"]["union"] == union.tolist()
    assert 0 < record["metrics"]["bIoU"] < 1
    per_image = np.array(record["per_image"]["intersection"]), np.array(record["per_image"]["union"])
    matrix = np.array(record["confusion_matrix"])
    from segbench.pipeline.score import metrics_with_void

    metrics, _ = passport.finish(Split(info.classes, matrix, metrics_with_void(matrix), *per_image))
    for name in ("mIoUI", "mIoUI_worst5", "mIoUI_worst10", "mDiceI", "iIoU", "iIoU_category", "bIoU"):
        assert record["metrics"][name] == metrics[name], name  # the same numbers, bit for bit
