"""Image/mask pairs on disk: the dataset class every on-disk layout uses, and the generic ``folder`` layout.

The ``folder`` layout is ``root/images/{split}/**/NAME.ext`` and ``root/masks/{split}/**/NAME.png``,
matched by their path relative to the split folder without the suffix. Masks hold class indices
0..K-1 (``reduce_zero_label``: 1..K, with 0 ignored) and ``ignore_index`` for pixels that do not
count; binary masks therefore hold 0/1 (1-bit PNGs are read as 0/1). Class names come from
``data.classes``, display colours from ``data.palette`` (default: the Pascal VOC colour map).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from segbench.config import DataConfig
from segbench.datasets.base import DatasetInfo
from segbench.datasets.checks import (
    IMAGE_SUFFIXES,
    Problem,
    check_layout,
    check_samples,
    read_image,
    read_mask,
    refusal,
)
from segbench.errors import UserError, warn

DESCRIPTION = "your own images/{split} and masks/{split} folders, classes from data.classes"
ENV = "SEGBENCH_FOLDER_ROOT"
LAYOUT = "images/{split}/NAME.jpg|png and masks/{split}/NAME.png (8-bit class indices)"
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


class LabelMap:
    """How raw mask values (0..255) become class indices; values the encoding does not define are errors."""

    def __init__(self, name: str, mapping: dict[int, int], ignored: set[int], ignore_index: int) -> None:
        self.name = name
        self.defined = np.zeros(256, dtype=bool)
        self.table = np.full(256, ignore_index, dtype=np.int64)
        for raw, cls in mapping.items():
            self.table[raw], self.defined[raw] = cls, True
        for raw in ignored:
            self.defined[raw] = True
        self.digest = hashlib.sha256(self.table.tobytes() + self.defined.tobytes()).hexdigest()[:16]

    def remapped(self, label_map: dict[int, int], num_classes: int, ignore_index: int) -> LabelMap:
        """This encoding with ``label_map``'s raw values (e.g. ``{255: 1}`` for 0/255 binary masks) taking
        precedence; a value mapped to ``ignore_index`` is ignored."""
        if not label_map:
            return self
        mapping = {raw: int(cls) for raw, cls in enumerate(self.table) if self.defined[raw] and cls != ignore_index}
        ignored = {raw for raw in range(256) if self.defined[raw] and self.table[raw] == ignore_index}
        for raw, cls in label_map.items():
            if cls != ignore_index and not 0 <= cls < num_classes:
                raise UserError(f"data.label_map: {raw}: {cls} names no class (expected 0..{num_classes - 1} "
                                f"or the ignore index {ignore_index})")
            mapping.pop(raw, None)
            ignored.discard(raw)
            (ignored.add(raw) if cls == ignore_index else mapping.__setitem__(raw, cls))
        text = ", ".join(f"{raw}->{cls}" for raw, cls in sorted(label_map.items()))
        return LabelMap(f"{self.name} with data.label_map {text}", mapping, ignored, ignore_index)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Class indices (int64, ignore_index for ignored or undefined values) for an array of raw values."""
        return self.table[raw]

    @classmethod
    def identity(cls, name: str, num_classes: int, ignore_index: int, reduce_zero_label: bool = False) -> LabelMap:
        """Values 0..K-1 are the classes (1..K, 0 ignored, with ``reduce_zero_label``); ``ignore_index`` is ignored."""
        offset = 1 if reduce_zero_label else 0
        mapping = {c + offset: c for c in range(num_classes) if c + offset < 256}
        ignored = ({0} if reduce_zero_label else set()) | ({ignore_index} if 0 <= ignore_index < 256 else set())
        ignored -= set(mapping)
        kind = f"values 1..{num_classes} (0 ignored)" if reduce_zero_label else f"values 0..{num_classes - 1}"
        return cls(f"{name} {kind}, {ignore_index} ignored", mapping, ignored, ignore_index)


@dataclass(frozen=True)
class Sample:
    """One image and its mask; ``id`` names it in prediction folders (its path without suffix, '/'-separated)."""

    id: str
    image: Path
    mask: Path
    labels: LabelMap


class SegmentationFiles(Dataset):
    """Checked image/mask pairs of one split, read on access and transformed together.

    ``problems`` lists what the checks found (each naming its file) and ``skipped`` counts the samples
    left out because of them (only with ``data.skip_bad``; otherwise a problem refuses the data set).
    ``encoding`` is the layout's own label encoding (e.g. Cityscapes label ids), for scoring predictions.
    """

    def __init__(self, name: str, split: str, samples: list[Sample], sizes: list[tuple[int, int]],
                 transform: Callable, crop_size: tuple[int, int] | None,
                 problems: list[Problem], skipped: int, encoding: LabelMap, absent: tuple[str, ...] = ()) -> None:
        self.name, self.split, self.encoding, self.absent_classes = name, split, encoding, absent
        self.samples, self.sizes = samples, sizes
        self.transform, self.crop_size = transform, crop_size
        self.problems, self.skipped = problems, skipped

    def __len__(self) -> int:
        return len(self.samples)

    def target(self, index: int) -> np.ndarray:
        """The mask of sample ``index`` as class indices (int64 HxW), untransformed."""
        sample = self.samples[index]
        return sample.labels(read_mask(sample.mask))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.array(read_image(self.samples[index].image))).permute(2, 0, 1)
        return self.transform(image, torch.from_numpy(self.target(index)))

    @property
    def uniform_size(self) -> bool:
        """Whether every sample comes out the same size (so batches of more than one image can be stacked)."""
        return self.crop_size is not None or len(set(self.sizes)) <= 1


def make_dataset(name: str, cfg: DataConfig, split: str, samples: list[Sample], orphans: list[Problem],
                 where: Path, encoding: LabelMap, classes: tuple[str, ...]) -> SegmentationFiles:
    """Check ``samples`` (plus the unpaired files in ``orphans``) and build the dataset, or refuse it."""
    from segbench.datasets.transforms import build_transforms  # torchvision: only once data is read

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
    return SegmentationFiles(name, split, kept, sizes, build_transforms(cfg, train), crop,
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


def _root(cfg: DataConfig) -> Path:
    return Path(cfg.root).expanduser()


def check(cfg: DataConfig, splits: tuple[str, ...]) -> None:
    """Raise a UserError if the class list or the folders for ``splits`` are missing."""
    if not cfg.classes:
        raise UserError("folder: data.classes is not set; name the classes, e.g. data.classes=[background,lesion]")
    if cfg.palette is not None and (len(cfg.palette) != len(cfg.classes) or
                                    any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in cfg.palette)):
        raise UserError(f"folder: data.palette must hold one [r, g, b] (0..255) per class "
                        f"({len(cfg.classes)} classes), got {cfg.palette}")
    check_layout("folder", _root(cfg) if cfg.root else None, ENV, f"expected {LAYOUT} under it",
                 lambda root: [root / kind / s for s in splits for kind in ("images", "masks")])


def info(cfg: DataConfig) -> DatasetInfo:
    classes = tuple(cfg.classes or ())
    palette = tuple(tuple(c) for c in cfg.palette) if cfg.palette else voc_colormap(len(classes))
    return DatasetInfo("folder", classes, palette, cfg.ignore_index)


def build(cfg: DataConfig, split: str, seed: int) -> SegmentationFiles:
    check(cfg, (split,))
    root = _root(cfg)
    images = list_files(root / "images" / split, IMAGE_SUFFIXES)
    labels = LabelMap.identity("folder", len(cfg.classes), cfg.ignore_index, cfg.reduce_zero_label)
    masks = {key: (path, labels) for key, path in list_files(root / "masks" / split, MASK_SUFFIXES).items()}
    samples, orphans = pair_by_stem(images, masks, lambda key: f"{root / 'masks' / split / key}.png")
    return make_dataset("folder", cfg, split, samples, orphans, root / "images" / split, labels, info(cfg).classes)
