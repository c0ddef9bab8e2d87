"""The failure table of corrupted evaluation (eval.corruptions): a cache size that is not a number, images too small
to corrupt, a cache folder that is a file. Each is one line and exit 2 before any output folder or MLflow run
exists. And the cache itself: an entry swapped for another valid PNG, or resized, is recomputed, never trusted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from failure_table import assert_refused, snapshot, store_runs
from PIL import Image

pytest.importorskip("imagecorruptions")

RUN = ["eval", "models=[fcn32s-resnet10t]", "data.val_samples=2", "eval.batch_size=2", "bench.enabled=false",
       "progress=false", "eval.corruptions=[brightness]", "eval.severities=[1]"]

# (id, environment (with {tmp} for the test's folder), overrides, the line's pattern)
CASES = [
    ("cache size not a number", {"SEGBENCH_CORRUPTION_CACHE_GB": "abc"}, ["data.image_size=64"],
     r"SEGBENCH_CORRUPTION_CACHE_GB='abc': expected the corruption cache's size in GB, a number >= 0 \(0 turns the "
     r"cache off\)$"),
    ("cache size NaN", {"SEGBENCH_CORRUPTION_CACHE_GB": "nan"}, ["data.image_size=64"],
     r"SEGBENCH_CORRUPTION_CACHE_GB='nan': expected the corruption cache's size in GB"),
    ("cache size negative", {"SEGBENCH_CORRUPTION_CACHE_GB": "-1"}, ["data.image_size=64"],
     r"SEGBENCH_CORRUPTION_CACHE_GB='-1': expected"),
    ("images under 32x32", {}, ["data.image_size=16"],
     r"eval\.corruptions: corruptions need images of at least 32x32 pixels, and synthetic val has one of 16x16$"),
    ("cache folder a file", {"SEGBENCH_CACHE_DIR": "{tmp}/afile"}, ["data.image_size=64"],
     r"SEGBENCH_CACHE_DIR='.*afile': segbench's cache folder .*afile cannot be made, '.*afile' is a file; name a "
     r"folder$"),
]


@pytest.mark.parametrize(("env", "overrides", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_corruption_setting_that_cannot_work_is_one_line_exit_2_and_leaves_nothing(cli, tmp_path, mlflow_uri,
                                                                                    monkeypatch, env, overrides,
                                                                                    pattern):
    (tmp_path / "afile").write_text("a file where a folder is expected")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / "cache"))
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    before = snapshot(tmp_path)

    code, out, err = cli(*RUN, *overrides, "output_dir=out")

    assert_refused(code, out, err, pattern)
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()
    assert not list(tmp_path.rglob("*.partial"))
    assert store_runs(mlflow_uri) == []


def _image(seed: int, side: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


@pytest.mark.parametrize("tamper", ["another valid PNG", "the same PNG resized", "a PNG copied from another entry"])
def test_a_tampered_cache_entry_is_recomputed_and_replaced(tmp_path, tamper):
    from segbench.data.corruptions import CorruptionCache, compute, corrupt

    store = CorruptionCache(tmp_path, limit_bytes=10**9)
    image, other = _image(0), _image(1)
    expected = compute(image, "gaussian_noise", 3, "img-0")
    assert np.array_equal(corrupt(image, "gaussian_noise", 3, "img-0", store), expected)
    path = store.path(store.key(image, "gaussian_noise", 3, "img-0"))
    if tamper == "another valid PNG":
        Image.fromarray(other).save(path)
    elif tamper == "the same PNG resized":
        Image.fromarray(expected).resize((24, 24)).save(path)
    else:  # a genuine entry of segbench's, with its own digest, under the wrong address
        corrupt(other, "gaussian_noise", 3, "img-1", store)
        path.write_bytes(store.path(store.key(other, "gaussian_noise", 3, "img-1")).read_bytes())
        assert not np.array_equal(np.asarray(Image.open(path)), expected)

    again = corrupt(image, "gaussian_noise", 3, "img-0", store)

    assert np.array_equal(again, expected)  # recomputed, not read from the tampered file
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), expected)  # and the entry replaced
    assert np.array_equal(corrupt(image, "gaussian_noise", 3, "img-0", store), expected)


def test_a_cache_entry_is_read_back_when_it_is_intact(tmp_path):
    from segbench.data.corruptions import STATS, CorruptionCache, corrupt

    store = CorruptionCache(Path(tmp_path), limit_bytes=10**9)
    first = corrupt(_image(2), "brightness", 2, "img-2", store)
    hits = STATS.hits
    assert np.array_equal(corrupt(_image(2), "brightness", 2, "img-2", store), first)
    assert STATS.hits == hits + 1
