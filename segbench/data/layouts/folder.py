"""The generic ``folder`` layout: a user's own images and masks.

The ``folder`` layout is ``root/images/{split}/**/NAME.ext`` and ``root/masks/{split}/**/NAME.png``,
matched by their path relative to the split folder without the suffix. Masks hold class indices
0..K-1 (``reduce_zero_label``: 1..K, with 0 ignored) and ``ignore_index`` for pixels that do not
count; binary masks therefore hold 0/1 (1-bit PNGs are read as 0/1). Class names come from
``data.classes``, display colours from ``data.palette`` (default: the Pascal VOC colour map).
"""

from __future__ import annotations

from pathlib import Path

from segbench.config.schema import DataConfig
from segbench.data.base import DatasetInfo, LabelMap
from segbench.data.checks import (
    IMAGE_SUFFIXES,
    check_layout,
)
from segbench.data.pairs import MASK_SUFFIXES, SegmentationFiles, list_files, make_dataset, pair_by_stem, voc_colormap
from segbench.errors import UserError

DESCRIPTION = "your own images/{split} and masks/{split} folders, classes from data.classes"
ENV = "SEGBENCH_FOLDER_ROOT"
LAYOUT = "images/{split}/NAME.jpg|png and masks/{split}/NAME.png (8-bit class indices)"


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
