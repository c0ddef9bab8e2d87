"""Procedural street-like scenes generated in memory: the embedded default data set.

Each sample is a pure function of (seed, split, index). The classes are built to separate
architectures:

- ``sky`` and ``ground`` are large and easy; ``building`` has a periodic window texture;
- ``pole`` is one pixel wide: models that decode at stride 8 cannot resolve it;
- ``ball`` is small and has a distinctive colour;
- ``cloud`` and ``puddle`` are drawn with the *same* texture and colour distribution and differ
  only by what surrounds them (sky or ground): they need context, not local appearance.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from segbench.config.schema import DataConfig
from segbench.data.base import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo

CLASSES = ("sky", "ground", "building", "pole", "ball", "cloud", "puddle")
PALETTE = (
    (70, 130, 180),
    (128, 64, 128),
    (70, 70, 70),
    (153, 153, 153),
    (220, 20, 60),
    (250, 250, 250),
    (0, 80, 100),
)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}

SKY, GROUND, BUILDING, POLE, BALL, CLOUD, PUDDLE = range(len(CLASSES))


def generate_scene(seed: int, split: str, index: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Return one scene as (image HxWx3 float32 in [0, 1], label HxW uint8)."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    s = size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    image = np.empty((s, s, 3), np.float32)
    label = np.empty((s, s), np.uint8)

    horizon = int(rng.integers(int(0.35 * s), int(0.6 * s)))
    sky = yy < horizon
    sky_colour = np.array([0.45, 0.6, 0.85]) + rng.normal(0, 0.04, 3)
    image[:] = sky_colour + (yy / s)[..., None] * 0.15
    ground_colour = np.array([0.45, 0.38, 0.3]) + rng.normal(0, 0.04, 3)
    image[~sky] = ground_colour + rng.normal(0, 0.06, (int((~sky).sum()), 3))
    label[sky] = SKY
    label[~sky] = GROUND

    def blob(region_top: int, region_bottom: int, cls: int) -> None:
        rx, ry = rng.uniform(0.06, 0.14) * s, rng.uniform(0.04, 0.08) * s
        if region_bottom - region_top < 2 * ry + 2:
            return
        cy = rng.uniform(region_top + ry + 1, region_bottom - ry - 1)
        cx = rng.uniform(rx, s - rx)
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        tone = rng.uniform(0.7, 0.85)
        image[inside] = tone + rng.normal(0, 0.05, (int(inside.sum()), 1))
        label[inside] = cls

    for _ in range(rng.integers(0, 3)):
        blob(0, horizon, CLOUD)
    for _ in range(rng.integers(0, 3)):
        blob(horizon, s, PUDDLE)

    for _ in range(rng.integers(0, 3)):
        width = int(rng.uniform(0.12, 0.3) * s)
        left = int(rng.integers(0, s - width))
        top = int(rng.uniform(0.12, 0.8) * horizon)
        bottom = min(s, horizon + int(rng.integers(1, 4)))
        box = (yy >= top) & (yy < bottom) & (xx >= left) & (xx < left + width)
        grey = rng.uniform(0.3, 0.55)
        windows = ((yy - top) % 4 < 2) & ((xx - left) % 4 < 2)
        texture = np.where(windows, grey + 0.25, grey)[..., None].repeat(3, -1)
        image[box] = texture[box]
        label[box] = BUILDING

    for _ in range(rng.integers(1, 4)):
        r = rng.uniform(0.03, 0.06) * s
        cy = rng.uniform(horizon + r, s - 1)
        cx = rng.uniform(r, s - r)
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        image[inside] = (0.85, rng.uniform(0.1, 0.7), 0.1)
        label[inside] = BALL

    for _ in range(rng.integers(1, 3)):
        x = int(rng.integers(1, s - 1))
        top = int(rng.uniform(0.1, 0.7) * horizon)
        bottom = min(s, horizon + int(rng.integers(2, 8)))
        image[top:bottom, x] = rng.uniform(0.05, 0.2)
        label[top:bottom, x] = POLE

    image *= rng.uniform(0.85, 1.15)
    image += rng.normal(0, 0.03, image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label


DESCRIPTION = "procedural street-like scenes generated in memory (7 classes, 2 context-only, 1 thin)"


def info(cfg: DataConfig) -> DatasetInfo:
    return DatasetInfo("synthetic", CLASSES, PALETTE, cfg.ignore_index)


def image_size(cfg: DataConfig) -> tuple[int, int]:
    """Every scene is ``data.image_size`` square."""
    return cfg.image_size, cfg.image_size


def _to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    image = (image - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(label.astype(np.int64))


class SyntheticScenes(Dataset):
    """``length`` scenes of one split: the training split is generated on access (endless variety), an
    evaluation split is generated once when built and kept in memory (a few MB), like a small data set in RAM.
    """

    def __init__(self, split: str, length: int, size: int, seed: int) -> None:
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}, got '{split}'")
        self.name = "synthetic"
        self.split, self.length, self.size, self.seed = split, length, size, seed
        self._kept = None if split == "train" else [self._make(i) for i in range(length)]

    def _make(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _to_tensors(*generate_scene(self.seed, self.split, index, self.size))

    def __len__(self) -> int:
        return self.length

    def sample_id(self, index: int) -> str:
        return f"{index:06d}"

    def raw_image(self, index: int) -> np.ndarray:
        """Scene ``index`` as an 8-bit image (HxWx3 uint8), as a camera would store it."""
        image, _ = generate_scene(self.seed, self.split, index, self.size)
        return np.rint(image * 255).astype(np.uint8)

    def with_image(self, index: int, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Scene ``index`` with ``image`` (HxWx3 uint8, e.g. a corrupted view) in place of its own pixels."""
        _, label = generate_scene(self.seed, self.split, index, self.size)
        return _to_tensors(image.astype(np.float32) / 255, label)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self._kept[index] if self._kept is not None else self._make(index)


def build(cfg: DataConfig, split: str, seed: int) -> SyntheticScenes:
    length = cfg.train_samples if split == "train" else cfg.val_samples
    return SyntheticScenes("train" if split == cfg.train_split else "val", length, cfg.image_size, seed)
