"""The example plugin's own tests: its components are registered in segbench's registries and work."""

import numpy as np
import segbench_example_plugin  # noqa: F401  (registers the components)
import torch
from PIL import Image

from segbench.data.registry import DATASETS
from segbench.models import factory
from segbench.models.registry import parse_spec


def test_tinyseg_is_registered_and_gives_logits_at_the_input_size():
    model = factory.build(parse_spec("tinyseg", check=True), 5, "random").module
    assert model(torch.zeros(2, 3, 24, 40)).shape == (2, 5, 24, 40)


def test_suffix_pairs_reads_images_beside_their_masks(tmp_path):
    from segbench.config.schema import DataConfig

    mask = (np.arange(16 * 16).reshape(16, 16) % 3).astype(np.uint8)
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / "val" / f"a{i}.png") \
            if (tmp_path / "val").is_dir() else ((tmp_path / "val").mkdir(), Image.fromarray(
                np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / "val" / f"a{i}.png"))
        Image.fromarray(mask).save(tmp_path / "val" / f"a{i}_mask.png")
    cfg = DataConfig(name="suffix_pairs", root=str(tmp_path), classes=["a", "b", "c"])
    dataset = DATASETS.get("suffix_pairs").build(cfg, "val", 0)
    image, target = dataset[1]
    assert len(dataset) == 2 and image.shape == (3, 16, 16)
    assert torch.equal(target, torch.from_numpy(mask).long())


def test_error_rate_is_registered_and_counts_wrong_labelled_pixels():
    from segbench.metrics.protocol import Batch, Split
    from segbench.metrics.registry import REGISTRY

    entry = REGISTRY.get("error_rate")
    accumulator = entry.accumulator()
    accumulator.num_classes = 3
    accumulator.counts = torch.zeros(2, dtype=torch.float64)
    target = torch.tensor([[[0, 1, 2, 255]]])
    accumulator.update(Batch(pred=torch.tensor([[[0, 2, 2, 1]]]), target=target))
    split = Split(("a", "b", "c"), np.zeros((3, 4)), None, np.zeros((1, 3)), np.zeros((1, 3)))
    assert accumulator.compute(split).metrics == {"error_rate": 1 / 3}
    assert not entry.higher_is_better
