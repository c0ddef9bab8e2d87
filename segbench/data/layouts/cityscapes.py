"""Cityscapes (fine annotations) in its official layout, scored on the 19 train classes.

``leftImg8bit/{split}/{city}/{name}_leftImg8bit.png`` with ``gtFine/{split}/{city}/{name}_gtFine_labelIds.png``
(label ids 0..33; the license plate's -1 is stored as 255). Label ids become train ids on the fly
with the official table; a pre-converted ``{name}_gtFine_labelTrainIds.png`` (0..18, 255) is used
instead when present. ``{name}_gtFine_instanceIds.png`` beside the mask, when present, gives iIoU.
"""

from __future__ import annotations

from pathlib import Path

from segbench.config.schema import DataConfig
from segbench.data.base import DatasetInfo, LabelMap
from segbench.data.checks import check_layout
from segbench.data.pairs import SegmentationFiles, make_dataset, pair_by_stem

DESCRIPTION = "Cityscapes fine annotations, 19 train classes (official layout; data.root or CITYSCAPES_ROOT)"
ENV = "CITYSCAPES_ROOT"
SOURCE = ("https://www.cityscapes-dataset.com/ (leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip, "
          "unzipped into one folder)")
LAYOUT = ("leftImg8bit/{split}/CITY/NAME_leftImg8bit.png and "
          "gtFine/{split}/CITY/NAME_gtFine_labelIds.png (or _gtFine_labelTrainIds.png)")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
INSTANCE_IDS_SUFFIX = "_gtFine_instanceIds.png"  # label_id * 1000 + k per instance: for iIoU
NUM_LABEL_IDS = 34  # label ids 0..33; the license plate (-1) is stored as 255 and ignored

# The 19 train classes in train-id order: (name, label id, colour, category), from the official table.
TRAIN_CLASSES = (
    ("road", 7, (128, 64, 128), "flat"),
    ("sidewalk", 8, (244, 35, 232), "flat"),
    ("building", 11, (70, 70, 70), "construction"),
    ("wall", 12, (102, 102, 156), "construction"),
    ("fence", 13, (190, 153, 153), "construction"),
    ("pole", 17, (153, 153, 153), "object"),
    ("traffic light", 19, (250, 170, 30), "object"),
    ("traffic sign", 20, (220, 220, 0), "object"),
    ("vegetation", 21, (107, 142, 35), "nature"),
    ("terrain", 22, (152, 251, 152), "nature"),
    ("sky", 23, (70, 130, 180), "sky"),
    ("person", 24, (220, 20, 60), "human"),
    ("rider", 25, (255, 0, 0), "human"),
    ("car", 26, (0, 0, 142), "vehicle"),
    ("truck", 27, (0, 0, 70), "vehicle"),
    ("bus", 28, (0, 60, 100), "vehicle"),
    ("train", 31, (0, 80, 100), "vehicle"),
    ("motorcycle", 32, (0, 0, 230), "vehicle"),
    ("bicycle", 33, (119, 11, 32), "vehicle"),
)
CLASSES = tuple(c[0] for c in TRAIN_CLASSES)
PALETTE = tuple(c[2] for c in TRAIN_CLASSES)
CATEGORIES = tuple(
    (category, tuple(i for i, c in enumerate(TRAIN_CLASSES) if c[3] == category))
    for category in ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
)


def label_ids(ignore_index: int) -> LabelMap:
    """Label ids (0..33, 255) to train ids; every id that is not a train class is ignored."""
    mapping = {label_id: train_id for train_id, (_, label_id, _, _) in enumerate(TRAIN_CLASSES)}
    ignored = (set(range(NUM_LABEL_IDS)) | {255}) - set(mapping)
    return LabelMap("the Cityscapes label-id table (ids 0..33, 255)", mapping, ignored, ignore_index)


def train_ids(ignore_index: int) -> LabelMap:
    """Pre-converted train ids: 0..18 are the classes, 255 is ignored."""
    return LabelMap("Cityscapes train ids (0..18, 255)", {i: i for i in range(len(CLASSES))}, {255}, ignore_index)


def instance_label_ids() -> dict[int, int]:
    """Label id -> train id of the classes with instances (the Cityscapes iIoU classes)."""
    return {label_id: train_id for train_id, (name, label_id, _, category) in enumerate(TRAIN_CLASSES)
            if category in ("human", "vehicle")}


def instance_files(samples: list) -> list[Path | None]:
    """Each sample's ``*_gtFine_instanceIds.png`` beside its mask, None where there is none."""
    found = []
    for sample in samples:
        stem = sample.mask.name
        for suffix in (LABEL_IDS_SUFFIX, TRAIN_IDS_SUFFIX):
            stem = stem[: -len(suffix)] if stem.endswith(suffix) else stem
        path = sample.mask.parent / (stem + INSTANCE_IDS_SUFFIX)
        found.append(path if path.is_file() else None)
    return found


def _root(cfg: DataConfig) -> Path:
    return Path(cfg.root).expanduser()


def check(cfg: DataConfig, splits: tuple[str, ...]) -> None:
    """Raise a UserError, on one line, if the data root or the folders of ``splits`` are missing."""
    check_layout("cityscapes", _root(cfg) if cfg.root else None, ENV,
                 f"expected {LAYOUT} under it; get the data set from {SOURCE}",
                 lambda root: [root / kind / s for s in splits for kind in ("leftImg8bit", "gtFine")])


def info(cfg: DataConfig) -> DatasetInfo:
    return DatasetInfo("cityscapes", CLASSES, PALETTE, cfg.ignore_index, CATEGORIES)


def _by_name(folder: Path, suffix: str) -> dict[str, Path]:
    return {p.name[: -len(suffix)]: p for p in sorted(folder.glob(f"*/*{suffix}"))}


def build(cfg: DataConfig, split: str, seed: int) -> SegmentationFiles:
    check(cfg, (split,))
    root = _root(cfg)
    images = _by_name(root / "leftImg8bit" / split, IMAGE_SUFFIX)
    ids, trains = label_ids(cfg.ignore_index), train_ids(cfg.ignore_index)
    gt_folder = root / "gtFine" / split
    masks = {name: (path, ids) for name, path in _by_name(gt_folder, LABEL_IDS_SUFFIX).items()}
    masks.update({name: (path, trains) for name, path in _by_name(gt_folder, TRAIN_IDS_SUFFIX).items()})
    samples, orphans = pair_by_stem(
        images, masks, lambda name: str(gt_folder / images[name].parent.name / (name + LABEL_IDS_SUFFIX)))
    return make_dataset("cityscapes", cfg, split, samples, orphans, root / "leftImg8bit" / split, ids,
                        info(cfg).classes)
