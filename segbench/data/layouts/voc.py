"""Pascal VOC 2012 segmentation (21 classes with background) in its official layout.

``JPEGImages/ID.jpg`` with ``SegmentationClass/ID.png`` (palette PNGs whose indices are the classes;
255 marks object boundaries and is ignored), split lists in ``ImageSets/Segmentation/{split}.txt``.
``data.root`` may name VOC2012, VOCdevkit or the folder that holds VOCdevkit.
"""

from __future__ import annotations

from pathlib import Path

from segbench.config.schema import DataConfig
from segbench.data.base import DatasetInfo, LabelMap
from segbench.data.checks import Problem, check_layout
from segbench.data.pairs import SegmentationFiles, make_dataset, pair_by_stem, voc_colormap

DESCRIPTION = "Pascal VOC 2012 segmentation, 21 classes (VOCdevkit layout; data.root or VOC_ROOT)"
ENV = "VOC_ROOT"
SOURCE = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar)"
LAYOUT = ("VOCdevkit/VOC2012/JPEGImages/ID.jpg, SegmentationClass/ID.png and "
          "ImageSets/Segmentation/{split}.txt")

CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
PALETTE = voc_colormap(len(CLASSES))


def labels(ignore_index: int) -> LabelMap:
    """Palette indices 0..20 are the classes; 255 (object boundaries) is ignored."""
    return LabelMap("Pascal VOC indices (0..20, 255)", {i: i for i in range(len(CLASSES))}, {255}, ignore_index)


def dataset_root(cfg: DataConfig) -> Path:
    """The VOC2012 folder, whether ``data.root`` names it, VOCdevkit or the folder that holds VOCdevkit."""
    root = Path(cfg.root).expanduser()
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    return root


def check(cfg: DataConfig, splits: tuple[str, ...]) -> None:
    """Raise a UserError, on one line, if the data root, its folders or the split lists are missing."""
    check_layout("voc", dataset_root(cfg) if cfg.root else None, ENV,
                 f"expected {LAYOUT} under it; get the data set from {SOURCE}",
                 lambda root: [root / "JPEGImages", root / "SegmentationClass"]
                 + [root / "ImageSets" / "Segmentation" / f"{s}.txt" for s in splits])


def info(cfg: DataConfig) -> DatasetInfo:
    return DatasetInfo("voc", CLASSES, PALETTE, cfg.ignore_index, palette_masks=True)


def build(cfg: DataConfig, split: str, seed: int) -> SegmentationFiles:
    check(cfg, (split,))
    root = dataset_root(cfg)
    split_list = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    ids = sorted({line.strip() for line in split_list.read_text().splitlines() if line.strip()})
    mapping = labels(cfg.ignore_index)
    images = {i: root / "JPEGImages" / f"{i}.jpg" for i in ids if (root / "JPEGImages" / f"{i}.jpg").is_file()}
    masks = {i: (root / "SegmentationClass" / f"{i}.png", mapping)
             for i in ids if (root / "SegmentationClass" / f"{i}.png").is_file()}
    samples, orphans = pair_by_stem(images, masks, lambda i: str(root / "SegmentationClass" / f"{i}.png"))
    orphans += [Problem(str(root / "JPEGImages" / f"{i}.jpg"), f"listed in {split_list.name} but neither the "
                        "image nor its mask exists") for i in ids if i not in images and i not in masks]
    return make_dataset("voc", cfg, split, samples, orphans, root / "JPEGImages", mapping, info(cfg).classes)
