"""Cityscapes (fine annotations) in its official layout, scored on the 19 train classes.

``leftImg8bit/{split}/{city}/{name}_leftImg8bit.png`` with ``gtFine/{split}/{city}/{name}_gtFine_labelIds.png``
(label ids 0..33; the license plate's -1 is stored as 255). Label ids become train ids on the fly
with the official table; a pre-converted ``{name}_gtFine_labelTrainIds.png`` (0..18, 255) is used
instead when present. ``{name}_gtFine_instanceIds.png`` beside the mask, when present, gives iIoU: the data set
provides that metric (``METRICS``), the metric layer knows nothing of Cityscapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

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


# cityscapesScripts 2.3.0, evaluation/evalPixelLevelSemanticLabeling.py, args.avgClassSize (pixels)
AVG_CLASS_SIZE = {
    "person": 3462.4756337644,
    "rider": 3930.4788056518,
    "car": 12794.0202738185,
    "truck": 27855.1264367816,
    "bus": 35732.1511111111,
    "train": 67583.7075812274,
    "motorcycle": 6298.7200839748,
    "bicycle": 4672.3249222261,
}
INSTANCE_CATEGORIES = ("human", "vehicle")  # the categories all of whose classes have instances
MIN_INSTANCE_ID = 1000  # ids above it are instances
MAX_ID = 1 << 16  # instance maps are 16-bit
OFFICIAL = "cityscapesScripts 2.3.0 evalPixelLevelSemanticLabeling"


def read_instance_ids(path: Path) -> np.ndarray:
    """An instanceIds PNG as an HxW int64 array."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image).astype(np.int64)


class InstanceMaps:
    """Reads sample ``index``'s instance-id map for the loader (zeros where the sample has none)."""

    def __init__(self, files: list[Path | None]) -> None:
        self.files = files

    def __call__(self, index: int, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        path = self.files[index]
        return {"instances": read_instance_ids(path) if path is not None else np.zeros(shape, np.int64)}


class InstanceIoU:
    """Cityscapes iIoU, streamed: an accumulator of segbench.metrics' protocol (update, merge, compute), which this
    module cannot import (data comes before metrics). Ground-truth instance maps hold ``label_id * 1000 + k`` for
    instances and the bare label id elsewhere. As the official script: only ids > 1000 are instances (crowd regions
    and stuff are left out of the weighted TP and FN altogether); each instance's TP (pixels predicted as its class)
    and FN are weighted by the class's average instance size over the instance's size; FP is the unweighted FP of
    the confusion matrix. Category iIoU: a prediction of any class of the instance's category is a hit; FP are
    pixels of other categories predicted as one of its classes."""

    metrics = (
        {"name": "iIoU", "definition": "Cityscapes instance-weighted IoU, mean over the 8 instance classes: TP and FN "
         "of each instance weighted by the class's average instance size over the instance's size; FP not weighted",
         "convention": "dataset-level; instance ids > 1000 only; NaN classes out of the mean",
         "equals": f"{OFFICIAL} 'iIoU Classes' (evaluatePair, getInstanceIouScoreForLabel)",
         "tool": "cityscapesscripts"},
        {"name": "iIoU_category", "definition": "Cityscapes instance-weighted IoU of the categories human and vehicle",
         "convention": "dataset-level; a prediction of another class of the category is a hit",
         "equals": f"{OFFICIAL} 'iIoU Categories' (getInstanceIouScoreForCategory)", "tool": "cityscapesscripts"},
    )
    summed = ("weighted", "category_weighted")

    @classmethod
    def build(cls, setup) -> "InstanceIoU | None":
        """The accumulator where the split has instance maps (``*_gtFine_instanceIds.png``), else None."""
        samples = getattr(setup.dataset, "samples", None)
        files = instance_files(samples) if samples is not None else []
        if not any(files):
            return None
        return cls(setup.info.classes, instance_label_ids(), setup.info.categories, setup.device, files)

    def __init__(self, classes: tuple[str, ...], label_ids: dict[int, int],
                 categories: tuple[tuple[str, tuple[int, ...]], ...], device: torch.device | str = "cpu",
                 files: list[Path | None] | None = None) -> None:
        """``label_ids``: data-set label id -> class index for the classes with instances."""
        k = len(classes)
        self.classes, self.num_classes, self.reader = classes, k, InstanceMaps(files or [])
        self.categories = tuple((name, members) for name, members in categories if name in INSTANCE_CATEGORIES)
        lut = torch.full((MAX_ID // MIN_INSTANCE_ID + 1,), -1, dtype=torch.int64)
        avg = torch.zeros(k + 1, dtype=torch.float64)
        for label_id, cls in label_ids.items():
            if classes[cls] in AVG_CLASS_SIZE:
                lut[label_id], avg[cls] = cls, AVG_CLASS_SIZE[classes[cls]]
        category = torch.full((k + 1,), -1, dtype=torch.int64)
        member = torch.zeros(len(self.categories) + 1, k + 1, dtype=torch.bool)  # category x predicted class
        for c, (_, members) in enumerate(self.categories):
            category[list(members)] = c
            member[c, list(members)] = True
        self.lut, self.avg, self.category, self.member = (t.to(device) for t in (lut, avg, category, member))
        self.weighted = torch.zeros(2, k, dtype=torch.float64, device=device)  # TP, FN per class
        self.category_weighted = torch.zeros(2, len(self.categories), dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, batch) -> None:
        """Add a batch's NxHxW predicted class maps (any value >= num_classes is void) against its instance maps."""
        pred, instances = batch.pred, batch.maps.get("instances")
        if instances is None:
            return
        # per image, one count of (instance id, predicted class or void) over all its pixels: an instance's size,
        # hits and category hits are then read off its row (no sorting, no selection of pixels)
        k = self.num_classes
        parts = []
        for image, ids in zip(pred.clamp(0, k), instances):  # 32-bit keys: ids are 16-bit, k + 1 <= 256
            key = (ids.reshape(-1).to(torch.int32) * (k + 1)).add_(image.reshape(-1).to(torch.int32))
            joint = torch.bincount(key, minlength=MAX_ID * (k + 1))
            joint = joint.view(-1, k + 1)[MIN_INSTANCE_ID + 1:]  # only ids > 1000 are instances
            uniq = torch.nonzero(joint.sum(1)).squeeze(1)
            parts.append((uniq + MIN_INSTANCE_ID + 1, joint[uniq]))
        uniq = torch.cat([u for u, _ in parts])
        if not len(uniq):
            return
        rows = torch.cat([r for _, r in parts])  # instances x predicted class (or void), in image then id order
        sizes = rows.sum(1)
        cls = self.lut[uniq // MIN_INSTANCE_ID]
        hits = rows.gather(1, cls.clamp(min=0)[:, None])[:, 0].double()
        category = self.category[cls.clamp(min=0)].masked_fill(cls < 0, -1)
        cat_hits = (rows * self.member[category.clamp(min=0)]).sum(1).double()
        weight = self.avg[cls.clamp(min=0)] / sizes
        counted = cls >= 0  # instances of classes not evaluated (caravan, trailer) are left out
        self.weighted[0].index_add_(0, cls[counted], (hits * weight)[counted])
        self.weighted[1].index_add_(0, cls[counted], ((sizes - hits) * weight)[counted])
        in_category = category >= 0
        self.category_weighted[0].index_add_(0, category[in_category], (cat_hits * weight)[in_category])
        self.category_weighted[1].index_add_(0, category[in_category], ((sizes - cat_hits) * weight)[in_category])

    def merge(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            for name in self.summed:
                dist.all_reduce(getattr(self, name))

    def compute(self, split) -> tuple[dict[str, float], dict]:
        """(iIoU and iIoU_category, the passport's ``instances`` record) from the split's K x K(+void) matrix."""
        matrix = np.asarray(split.matrix, dtype=np.float64)
        k = self.num_classes
        tp, fn = self.weighted.cpu().numpy()
        per_class = {}
        for cls, name in enumerate(self.classes):
            if name in AVG_CLASS_SIZE:
                fp = matrix[:, cls].sum() - matrix[cls, cls]
                per_class[name] = _ratio(tp[cls], tp[cls] + fp + fn[cls])
        per_category = {}
        cat_tp, cat_fn = self.category_weighted.cpu().numpy()
        for c, (name, members) in enumerate(self.categories):
            outside = np.ones(k, dtype=bool)
            outside[list(members)] = False
            fp = matrix[outside][:, list(members)].sum()
            per_category[name] = _ratio(cat_tp[c], cat_tp[c] + fp + cat_fn[c])
        return ({"iIoU": _mean(per_class.values()), "iIoU_category": _mean(per_category.values())},
                {"instances": {"classes": per_class, "categories": per_category}})


METRICS = (InstanceIoU,)  # the metrics this data set provides (segbench.data.base.DatasetEntry.metrics)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def _mean(values) -> float:
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


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
