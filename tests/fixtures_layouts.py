"""Tiny data sets written in the real on-disk layouts (Cityscapes, ADE20K, Pascal VOC, folder) with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segbench.data.pairs import voc_colormap

WIDTH, HEIGHT = 64, 32
STRIPE = HEIGHT // 8  # masks are 8 horizontal stripes of one raw value each

# Raw label ids per stripe of a Cityscapes labelIds mask and the train ids they must become.
CITYSCAPES_IDS = (7, 26, 0, 255, 33, 8, 19, 4)
CITYSCAPES_TRAIN = (0, 13, 255, 255, 18, 1, 6, 255)
ADE_RAW = (0, 1, 150, 2, 0, 75, 149, 3)
ADE_TRAIN = (255, 0, 149, 1, 255, 74, 148, 2)
VOC_RAW = (0, 15, 255, 1, 20, 255, 7, 0)


def stripes(values: tuple[int, ...], width: int = WIDTH) -> np.ndarray:
    """A HEIGHT x width uint8 mask of 8 horizontal stripes, one raw value each."""
    return np.repeat(np.array(values, dtype=np.uint8), STRIPE)[:, None].repeat(width, axis=1)


def write_image(path: Path, seed: int, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    """A random RGB image of ``size`` (width, height); JPEG or PNG by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
    return path


def write_mask(path: Path, mask: np.ndarray, palette: bool = False) -> Path:
    """An 8-bit mask PNG (mode L, or mode P with the VOC colour map)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8))
    if palette:
        image.putpalette([v for c in voc_colormap(256) for v in c])  # an L image with a palette becomes mode P
    image.save(path)
    return path


def make_cityscapes(root: Path) -> Path:
    """train: 2 images in aachen; val: 2 in frankfurt (one also has labelTrainIds), 1 in lindau (labelTrainIds only)."""
    train_ids = np.array(CITYSCAPES_TRAIN, dtype=np.uint8)
    layout = {"train": [("aachen", 0), ("aachen", 1)], "val": [("frankfurt", 0), ("frankfurt", 1), ("lindau", 0)]}
    for split, items in layout.items():
        for n, (city, index) in enumerate(items):
            name = f"{city}_{index:06d}_000019"
            write_image(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", seed=10 * len(split) + n)
            ids = np.roll(np.array(CITYSCAPES_IDS, dtype=np.uint8), n)
            gt = root / "gtFine" / split / city
            if city != "lindau":
                write_mask(gt / f"{name}_gtFine_labelIds.png", stripes(tuple(ids)))
            if split == "val" and (n == 0 or city == "lindau"):
                write_mask(gt / f"{name}_gtFine_labelTrainIds.png", stripes(tuple(np.roll(train_ids, n))))
    return root


# ACDC: (condition, split, sequence, frame) of each sample; fog/val's second frame has labelTrainIds only.
ACDC_SAMPLES = (("fog", "train", "GOPR0475", 41), ("night", "train", "GOPR0351", 3), ("fog", "val", "GOPR0476", 7),
                ("fog", "val", "GOPR0476", 9), ("night", "val", "GOPR0594", 12), ("rain", "val", "GOPR0400", 5),
                ("snow", "val", "GOPR0122", 33))


def make_acdc(root: Path) -> Path:
    """rgb_anon/{cond}/{split}/SEQ/*_rgb_anon.png with gt/{cond}/{split}/SEQ/*_gt_labelIds.png (ACDC_SAMPLES), plus
    a val_ref image (the good-weather reference, which is not read)."""
    train_ids = np.array(CITYSCAPES_TRAIN, dtype=np.uint8)
    for n, (condition, split, sequence, frame) in enumerate(ACDC_SAMPLES):
        name = f"{sequence}_frame_{frame:06d}"
        write_image(root / "rgb_anon" / condition / split / sequence / f"{name}_rgb_anon.png", seed=n)
        gt = root / "gt" / condition / split / sequence
        if (condition, frame) == ("fog", 9):
            write_mask(gt / f"{name}_gt_labelTrainIds.png", stripes(tuple(np.roll(train_ids, n))))
        else:
            write_mask(gt / f"{name}_gt_labelIds.png", stripes(tuple(np.roll(CITYSCAPES_IDS, n))))
        if split == "val":
            write_image(root / "rgb_anon" / condition / "val_ref" / sequence / f"{name}_rgb_ref_anon.png", seed=n)
    for condition in ("rain", "snow"):  # every condition has a train folder
        folder = root / "rgb_anon" / condition / "train" / "GOPR0001"
        write_image(folder / "GOPR0001_frame_000001_rgb_anon.png", seed=99)
        write_mask(root / "gt" / condition / "train" / "GOPR0001" / "GOPR0001_frame_000001_gt_labelIds.png",
                   stripes(CITYSCAPES_IDS))
    return root


def make_ade20k(root: Path) -> Path:
    """ADEChallengeData2016 under ``root``: 2 training and 3 validation JPEG/PNG pairs."""
    base = root / "ADEChallengeData2016"
    for split, count in (("training", 2), ("validation", 3)):
        for n in range(count):
            name = f"ADE_{'train' if split == 'training' else 'val'}_{n + 1:08d}"
            write_image(base / "images" / split / f"{name}.jpg", seed=n, size=(WIDTH + 8 * n, HEIGHT))
            write_mask(base / "annotations" / split / f"{name}.png", stripes(ADE_RAW, WIDTH + 8 * n))
    return root


def make_voc(root: Path) -> Path:
    """VOCdevkit/VOC2012 under ``root``: palette masks, train list of 2 ids, val list of 3."""
    base = root / "VOCdevkit" / "VOC2012"
    splits = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033", "2007_000042", "2007_000061"]}
    for split, ids in splits.items():
        for n, i in enumerate(ids):
            write_image(base / "JPEGImages" / f"{i}.jpg", seed=n)
            write_mask(base / "SegmentationClass" / f"{i}.png", stripes(VOC_RAW), palette=True)
        (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def make_folder(root: Path, masks: dict[str, dict[str, np.ndarray]], suffix: str = ".png") -> Path:
    """images/{split}/NAME{suffix} and masks/{split}/NAME.png for ``masks[split][NAME]``."""
    for split, items in masks.items():
        for n, (name, mask) in enumerate(items.items()):
            write_image(root / "images" / split / f"{name}{suffix}", seed=n, size=(mask.shape[1], mask.shape[0]))
            write_mask(root / "masks" / split / f"{name}.png", mask)
    return root


# A Cityscapes val image with instance ids (rows, columns, label id, instance id; the rest is road, id 7) and
# a prediction in train ids (rows, columns, train id; the rest road, 0), for hand-computed iIoU.
INSTANCES = (
    ((0, 2), (0, 5), 26, 26001),  # car, 10 pixels
    ((4, 8), (0, 10), 26, 26002),  # car, 40 pixels
    ((10, 12), (0, 10), 24, 24000),  # person, 20 pixels
    ((14, 16), (0, 10), 26, 26),  # a crowd of cars: id < 1000, no instance
    ((20, 22), (0, 5), 25, 25001),  # rider, 10 pixels
)
INSTANCE_PREDICTION = (
    ((0, 2), (0, 3), 13), ((0, 2), (3, 5), 14),  # car instance 26001: 6 car, 4 truck
    ((4, 8), (0, 10), 13),  # car instance 26002: all car
    ((10, 12), (0, 5), 11), ((10, 12), (5, 10), 12),  # person: 10 person, 10 rider
    ((20, 22), (0, 5), 11),  # rider predicted as person
    ((28, 29), (0, 5), 13),  # 5 road pixels predicted as car
)


def paint(shapes, background: int, dtype=np.uint8) -> np.ndarray:
    """A HEIGHT x WIDTH map of ``background`` with each ((r0, r1), (c0, c1), value, ...) rectangle painted."""
    out = np.full((HEIGHT, WIDTH), background, dtype=dtype)
    for (r0, r1), (c0, c1), value, *_ in shapes:
        out[r0:r1, c0:c1] = value
    return out


def make_cityscapes_instances(root: Path) -> Path:
    """train and val: frankfurt_000000_000019 with labelIds and 16-bit instanceIds (INSTANCES)."""
    labels = paint(INSTANCES, 7)
    instances = paint([(r, c, inst) for r, c, _, inst in INSTANCES], 7, np.uint16)
    for split in ("train", "val"):
        name = "frankfurt_000000_000019"
        write_image(root / "leftImg8bit" / split / "frankfurt" / f"{name}_leftImg8bit.png", seed=0)
        gt = root / "gtFine" / split / "frankfurt"
        write_mask(gt / f"{name}_gtFine_labelIds.png", labels)
        Image.fromarray(instances).save(gt / f"{name}_gtFine_instanceIds.png")
    return root
