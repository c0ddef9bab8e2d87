"""The embedded data set: reproducible, and built the way its design claims."""

import numpy as np

from segbench.config.schema import DataConfig
from segbench.data.layouts.synthetic import CLASSES, CLOUD, POLE, PUDDLE, generate_scene
from segbench.data.registry import build_dataset, dataset_info


def test_same_seed_same_scene_and_splits_differ():
    a_img, a_lab = generate_scene(0, "train", 3)
    b_img, b_lab = generate_scene(0, "train", 3)
    assert (a_img == b_img).all() and (a_lab == b_lab).all()
    c_img, _ = generate_scene(0, "val", 3)
    assert not np.allclose(a_img, c_img)


def test_dataset_yields_normalised_tensors_and_every_class_occurs():
    cfg = DataConfig(image_size=48, val_samples=40)
    ds = build_dataset(cfg, "val")
    assert len(ds) == 40
    image, mask = ds[0]
    assert image.shape == (3, 48, 48) and str(image.dtype) == "torch.float32"
    assert mask.shape == (48, 48) and str(mask.dtype) == "torch.int64"
    seen = set()
    for i in range(len(ds)):
        seen |= set(ds[i][1].unique().tolist())
    assert seen == set(range(len(CLASSES)))
    assert dataset_info(cfg).classes == CLASSES


def test_context_classes_look_alike_locally():
    """Clouds and puddles share one appearance: their pixel statistics are the same."""
    cloud, puddle = [], []
    for i in range(200):
        image, label = generate_scene(1, "train", i)
        cloud.append(image[label == CLOUD])
        puddle.append(image[label == PUDDLE])
    cloud, puddle = np.concatenate(cloud), np.concatenate(puddle)
    assert abs(cloud.mean() - puddle.mean()) < 0.02
    assert abs(cloud.std() - puddle.std()) < 0.02


def test_poles_are_one_pixel_wide():
    for i in range(20):
        _, label = generate_scene(2, "train", i)
        rows = label == POLE
        assert rows.sum(axis=1).max() <= 2  # at most two poles on one row, each one pixel wide
