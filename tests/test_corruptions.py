"""Corrupted views (segbench.data.corruptions): the package's own output, the same image in every process, computed
once thanks to the cache."""

from __future__ import annotations

import multiprocessing
import sys

import numpy as np
import pytest
import torch
from fixtures_layouts import make_folder, stripes

imagecorruptions = pytest.importorskip("imagecorruptions")

from segbench.data import corruptions  # noqa: E402
from segbench.data.corruptions import (  # noqa: E402
    ALL,
    DETERMINISTIC,
    STATS,
    CorruptedView,
    CorruptionCache,
    corrupt,
    resolve,
    seed_for,
)
from segbench.errors import UserError  # noqa: E402

RANDOMISED = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur", "snow",
              "frost", "spatter", "fog", "elastic_transform")


def scene(seed: int = 0, height: int = 48, width: int = 64) -> np.ndarray:
    """A smooth image with edges (a gradient and a bright square) plus mild noise, HxWx3 uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 255 / width, yy * 255 / height, np.full_like(xx, 90)], -1).astype(np.float64)
    image[10:30, 20:40] = 230
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def store(tmp_path):
    return CorruptionCache(tmp_path / "cache", limit_bytes=10**9)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_equal_the_package_output(name, store):
    image = scene()
    for severity in (1, 3, 5):
        expected = imagecorruptions.corrupt(image.copy(), severity=severity, corruption_name=name)
        assert np.array_equal(corrupt(image, name, severity, "a", store), expected), severity
        assert np.array_equal(corrupt(image, name, severity, "b", store), expected), severity  # from the cache


@pytest.mark.parametrize("name", RANDOMISED)  # glass_blur alone takes 3 s
def test_randomised_corruptions_are_the_same_for_the_same_key(name, store):
    image = scene()
    uncached = CorruptionCache(store.folder, limit_bytes=0)
    before = np.random.get_state()[1].copy()
    first = corrupt(image, name, 3, "frankfurt/000001", uncached)
    assert np.array_equal(np.random.get_state()[1], before)  # numpy's global state is restored
    assert np.array_equal(corrupt(image, name, 3, "frankfurt/000001", uncached), first)
    assert not np.array_equal(corrupt(image, name, 3, "frankfurt/000002", uncached), first)  # another image's draw
    # it is the package's own output under that seed
    seed = seed_for("frankfurt/000001", name, 3)
    np.random.seed(seed)
    kwargs = {"seed": seed} if name in ("glass_blur", "impulse_noise") else {}
    assert np.array_equal(imagecorruptions.corrupt(image.copy(), severity=3, corruption_name=name, **kwargs), first)


def _corrupt_all(names: tuple[str, ...]) -> dict[str, bytes]:
    store = CorruptionCache(limit_bytes=0)
    return {name: corrupt(scene(), name, 2, "img-7", store).tobytes() for name in names}


@pytest.mark.slow
def test_randomised_corruptions_are_the_same_in_other_processes():
    here = _corrupt_all(RANDOMISED)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        there = pool.map(_corrupt_all, [RANDOMISED[:6], RANDOMISED[6:]])
    assert there[0] | there[1] == here


def test_the_cache_computes_each_view_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / "cache"))
    from segbench.config.schema import DataConfig
    from segbench.data.registry import build_dataset

    masks = {name: stripes(tuple(np.arange(8) % 2)) for name in ("a", "b", "c")}
    root = make_folder(tmp_path / "data", {"val": masks})
    dataset = build_dataset(DataConfig(name="folder", root=str(root), classes=["x", "y"]), "val")
    counts = []
    for _ in range(3):  # the first model computes, the second model and a later run read the cache
        before = STATS.computed, STATS.hits
        view = CorruptedView(dataset, "gaussian_noise", 2)
        pairs = [view[i] for i in range(len(view))]
        counts.append((STATS.computed - before[0], STATS.hits - before[1]))
    assert counts == [(3, 0), (0, 3), (0, 3)]
    assert len(list((tmp_path / "cache" / "corruptions").glob("??/*.png"))) == 3
    for index, (image, mask) in enumerate(pairs):
        expected = corrupt(dataset.raw_image(index), "gaussian_noise", 2, dataset.sample_id(index),
                           CorruptionCache(limit_bytes=0))
        assert torch.equal(image, dataset.with_image(index, expected)[0])
        assert torch.equal(mask, dataset[index][1])  # the mask is the clean one


def test_views_load_the_same_in_worker_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / "cache"))
    from segbench.config.schema import DataConfig
    from segbench.data.registry import build_dataset, make_loader

    dataset = build_dataset(DataConfig(name="synthetic", val_samples=4, image_size=64), "val")
    view = CorruptedView(dataset, "motion_blur", 3, CorruptionCache(limit_bytes=0))
    batches = [torch.cat([images for images, _ in make_loader(view, 2, False, workers, "cpu", 0)])
               for workers in (0, 2)]
    assert torch.equal(batches[0], batches[1])
    assert not torch.equal(batches[0], torch.stack([dataset[i][0] for i in range(4)]))


def test_the_cache_keeps_to_its_size_limit(tmp_path):
    import os

    store = CorruptionCache(tmp_path, limit_bytes=10**9)
    for i in range(4):
        store.put(f"{i:02d}" + "0" * 62, scene(i))
        os.utime(store.path(f"{i:02d}" + "0" * 62), (1000 + i, 1000 + i))
    sizes = [store.path(f"{i:02d}" + "0" * 62).stat().st_size for i in range(4)]
    store.limit_bytes = sum(sizes[2:]) / 0.9  # room for the two most recent files
    assert store.prune() == sum(sizes[2:])
    assert [store.path(f"{i:02d}" + "0" * 62).exists() for i in range(4)] == [False, False, True, True]


def test_names_groups_and_all():
    assert len(ALL) == 18 and "elastic_transform" not in ALL
    assert resolve(["noise", "gaussian_noise", "elastic_transform"]) == (
        "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "elastic_transform")
    assert set(resolve(["all"])) == set(imagecorruptions.get_corruption_names("all")) - {"elastic_transform"}
    with pytest.raises(UserError, match=r"unknown corruption 'gausian_noise'; did you mean 'gaussian_noise'"):
        resolve(["gausian_noise"])
    with pytest.raises(UserError, match="expected an integer from 1 to 5"):
        corrupt(scene(), "fog", 6, "a", CorruptionCache(limit_bytes=0))
    with pytest.raises(UserError, match="at least 32x32 pixels"):
        corrupt(scene(height=16), "fog", 1, "a", CorruptionCache(limit_bytes=0))


def test_a_missing_package_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecorruptions", None)  # import fails as if not installed
    corruptions._package.cache_clear()
    try:
        with pytest.raises(UserError) as error:
            corrupt(scene(), "fog", 1, "a", CorruptionCache(limit_bytes=0))
    finally:
        corruptions._package.cache_clear()
    message = str(error.value)
    assert "\n" not in message
    assert "imagecorruptions-imaug package, which is not installed" in message
    assert "pip install 'segbench[robustness]'" in message
