"""pytest-benchmark benchmarks (``nox -s bench``): confusion-matrix update, one forward pass, the data pipeline.

Saved as JSON under .benchmarks/ so that two commits compare with ``--benchmark-compare``.
"""

import pytest
import torch

from segbench.config.schema import DataConfig
from segbench.data.registry import build_dataset
from segbench.metrics.confusion import ConfusionMatrix
from segbench.models import factory

NUM_CLASSES = 19


@pytest.fixture(scope="module")
def cityscapes_like_batch():
    """4x512x1024 predictions and targets with 19 classes and ~10% ignored pixels."""
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, NUM_CLASSES, (4, 512, 1024), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.1] = 255
    pred = torch.randint(0, NUM_CLASSES, (4, 512, 1024), generator=g)
    return pred, target


@pytest.mark.benchmark(group="confusion-update")
def test_confusion_update_segbench(benchmark, cityscapes_like_batch):
    pred, target = cityscapes_like_batch
    cm = ConfusionMatrix(NUM_CLASSES)
    benchmark(cm.update, pred, target)


@pytest.mark.benchmark(group="confusion-update")
def test_confusion_update_segbench_per_image(benchmark, cityscapes_like_batch):
    pred, target = cityscapes_like_batch
    cm = ConfusionMatrix(NUM_CLASSES, per_image=True)
    benchmark(cm.update, pred, target)


@pytest.mark.benchmark(group="confusion-update")
def test_confusion_update_torchmetrics_jaccard(benchmark, cityscapes_like_batch):
    torchmetrics = pytest.importorskip("torchmetrics")
    pred, target = cityscapes_like_batch
    metric = torchmetrics.classification.MulticlassJaccardIndex(NUM_CLASSES, ignore_index=255)  # default checks on
    benchmark(metric.update, pred, target)


@pytest.mark.benchmark(group="forward")
@torch.no_grad()
def test_forward_unet_resnet18_256x512(benchmark):
    model = factory.build("unet-resnet18", NUM_CLASSES, "random").module.eval()
    x = torch.randn(1, 3, 256, 512)
    model(x)
    benchmark.pedantic(model, args=(x,), rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="data")
def test_synthetic_training_sample(benchmark):
    dataset = build_dataset(DataConfig(image_size=64), "train")
    counter = iter(range(10**9))
    benchmark(lambda: dataset[next(counter) % len(dataset)])
