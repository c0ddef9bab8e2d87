"""Image/mask pairs on disk, shared by every on-disk layout: pairing files by name, the checked dataset class that
reads and transforms them, and the Pascal VOC colour map."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from segbench.config.schema import DataConfig
from segbench.data.base import LabelMap, Sample
from segbench.data.checks import (
    Problem,
    check_samples,
    read_image,
    read_mask,
    refusal,
)
from segbench.errors import UserError, warn

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


class SegmentationFiles(Dataset):
    """Checked image/mask pairs of one split, read on access and transformed together.

    ``problems`` lists what the checks found (each naming its file) and ``skipped`` counts the samples
    left out because of them (only with ``data.skip_bad``; otherwise a problem refuses the data set).
    ``encoding`` is the layout's own label encoding (e.g. Cityscapes label ids), for scoring predictions.
    """

    def __init__(self, name: str, split: str, samples: list[Sample], sizes: list[tuple[int, int]],
                 make_transform: Callable[[], Callable], crop_size: tuple[int, int] | None,
                 problems: list[Problem], skipped: int, encoding: LabelMap, absent: tuple[str, ...] = ()) -> None:
        self.name, self.split, self.encoding, self.absent_classes = name, split, encoding, absent
        self.samples, self.sizes = samples, sizes
        self.make_transform, self.crop_size = make_transform, crop_size
        self.problems, self.skipped = problems, skipped

    @functools.cached_property
    def transform(self) -> Callable:
        """The image and mask transforms, built on first use (torchvision is imported only when pixels are read:
        scoring prediction files reads masks alone)."""
        return self.make_transform()

    def __len__(self) -> int:
        return len(self.samples)

    def target(self, index: int) -> np.ndarray:
        """The mask of sample ``index`` as class indices (int64 HxW), untransformed."""
        sample = self.samples[index]
        return sample.labels(read_mask(sample.mask))

    def sample_id(self, index: int) -> str:
        return self.samples[index].id

    def raw_image(self, index: int) -> np.ndarray:
        """The image of sample ``index`` as read (HxWx3 uint8, upright), before any transform."""
        return np.array(read_image(self.samples[index].image))

    def with_image(self, index: int, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``index`` with ``image`` (HxWx3 uint8, e.g. a corrupted view) in place of its own pixels."""
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return self.transform(pixels, torch.from_numpy(self.target(index)))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.with_image(index, self.raw_image(index))

    @property
    def uniform_size(self) -> bool:
        """Whether every sample comes out the same size (so batches of more than one image can be stacked)."""
        return self.crop_size is not None or len(set(self.sizes)) <= 1


def _transforms(cfg: DataConfig, train: bool) -> Callable:
    from segbench.data.transforms import build_transforms  # torchvision: only once pixels are read

    return build_transforms(cfg, train)


def make_dataset(name: str, cfg: DataConfig, split: str, samples: list[Sample], orphans: list[Problem],
                 where: Path, encoding: LabelMap, classes: tuple[str, ...]) -> SegmentationFiles:
    """Check ``samples`` (plus the unpaired files in ``orphans``) and build the dataset, or refuse it."""
    train = split == cfg.train_split  # the training split gets the training transforms
    if not samples and not orphans:
        raise UserError(f"{name} {split}: no images found under {where}")
    num_classes = len(classes)
    remapped = {id(m): m.remapped(cfg.label_map, num_classes, cfg.ignore_index)
                for m in {id(s.labels): s.labels for s in samples}.values()}
    samples = [replace(s, labels=remapped[id(s.labels)]) for s in samples]
    encoding = encoding.remapped(cfg.label_map, num_classes, cfg.ignore_index)
    checks = check_samples(samples, f"{name}|{where.resolve()}|{split}", desc=f"checking {name} {split}")
    problems = list(orphans)
    kept, sizes = [], []
    for sample, result in zip(samples, checks):
        problems += result.problems
        if not result.problems:
            kept.append(sample)
            sizes.append(result.size)
    if problems and not cfg.skip_bad:
        raise UserError(refusal(name, split, problems))
    if not kept:
        raise UserError(f"{name} {split}: every sample under {where} has a problem, e.g. {problems[0]}")
    values = {v for sample, result in zip(samples, checks) if not result.problems for v in result.values}
    _check_binary_convention(f"{name} {split}", values, encoding, num_classes)
    present = {int(c) for sample, result in zip(samples, checks) if not result.problems
               for c in sample.labels(np.array(result.values, dtype=np.int64))}
    absent = tuple(c for i, c in enumerate(classes) if i not in present)
    crop = tuple(cfg.crop_size) if train and cfg.crop_size else None
    if crop and (crop[0] > min(h for h, _ in sizes) or crop[1] > min(w for _, w in sizes)):
        smallest = min(sizes, key=lambda hw: hw[0] * hw[1])
        warn(f"data.crop_size {crop[0]}x{crop[1]} is larger than {name} {split}'s smallest image "
             f"({smallest[0]}x{smallest[1]}, height x width): crops are padded with ignored pixels, "
             f"{crop[0] * crop[1] / (smallest[0] * smallest[1]):.1f}x the pixels; a crop_size within the images "
             "trains on the same data faster")
    return SegmentationFiles(name, split, kept, sizes, functools.partial(_transforms, cfg, train), crop,
                             problems, len(samples) - len(kept) + len(orphans), encoding, absent)


def _check_binary_convention(where: str, values: set[int], encoding: LabelMap, num_classes: int) -> None:
    """Refuse masks stored as 0/255 (the binary convention of microscopy and medical tools) while 255 is ignored:
    every foreground pixel would be dropped without a word."""
    if num_classes == 2 and values == {0, 255} and encoding.table[255] not in (0, 1):
        raise UserError(f"{where}: the masks hold only the values 0 and 255 (0/255 binary masks) but 255 is the "
                        "ignore index, so every foreground pixel would be dropped; map it to class 1 with "
                        "data.label_map={255: 1}")


def pair_by_stem(images: dict[str, Path], masks: dict[str, tuple[Path, LabelMap]],
                 expected_mask: Callable[[str], str]) -> tuple[list[Sample], list[Problem]]:
    """Pair files that share a key (masks carry their label map); every unpaired file becomes a Problem."""
    samples = [Sample(key, images[key], *masks[key]) for key in sorted(images.keys() & masks.keys())]
    orphans = [Problem(str(images[k]), f"image without its mask (expected {expected_mask(k)})")
               for k in sorted(images.keys() - masks.keys())]
    orphans += [Problem(str(masks[k][0]), "mask without its image") for k in sorted(masks.keys() - images.keys())]
    return samples, orphans


def list_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Files under ``folder`` (recursively) keyed by their relative path without the suffix."""
    return {p.relative_to(folder).with_suffix("").as_posix(): p
            for p in sorted(folder.rglob("*")) if p.suffix.lower() in suffixes and p.is_file()}


def voc_colormap(n: int) -> tuple[tuple[int, int, int], ...]:
    """The Pascal VOC colour map (bits of the class index spread over R, G, B), for ``n`` classes."""
    colours = []
    for index in range(n):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)
