"""Cityscapes iIoU, as cityscapesScripts' evalPixelLevelSemanticLabeling computes it, streamed.

Ground-truth instance maps (``*_gtFine_instanceIds.png``) hold ``label_id * 1000 + k`` for instances and the
bare label id elsewhere. As the official script: only ids > 1000 are instances (crowd regions and stuff are
left out of the weighted TP and FN altogether); each instance's TP (pixels predicted as its class) and FN are
weighted by the class's average instance size (the script's ``avgClassSize``) over the instance's size; FP
is the unweighted FP of the confusion matrix. Category iIoU: a prediction of any class of the instance's
category is a hit; FP are pixels of other categories predicted as one of its classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from segbench.metrics.confusion import nanmean

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


def read_instance_ids(path: Path) -> np.ndarray:
    """An instanceIds PNG as an HxW int64 array."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image).astype(np.int64)


class WithInstances(Dataset):
    """``base``'s (image, mask) pairs with each image's instance ids appended (zeros where there is no file)."""

    def __init__(self, base: Dataset, files: list[Path | None]) -> None:
        self.base, self.files = base, files

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image, mask = self.base[index]
        path = self.files[index]
        ids = read_instance_ids(path) if path is not None else np.zeros(mask.shape, np.int64)
        if ids.shape != tuple(mask.shape):
            raise ValueError(f"{path}: instance map is {ids.shape[1]}x{ids.shape[0]}, its mask "
                             f"{mask.shape[1]}x{mask.shape[0]}")
        return image, mask, torch.from_numpy(ids)


class InstanceIoU:
    """Weighted TP and FN per class and per category over a split; iIoU from them and the confusion matrix."""

    def __init__(self, classes: tuple[str, ...], label_ids: dict[int, int],
                 categories: tuple[tuple[str, tuple[int, ...]], ...], device: torch.device | str = "cpu") -> None:
        """``label_ids``: data-set label id -> class index for the classes with instances."""
        k = len(classes)
        self.classes, self.num_classes = classes, k
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
    def update(self, pred: torch.Tensor, instances: torch.Tensor) -> None:
        """Add NxHxW predicted class maps (any value >= num_classes is void) and their instance-id maps."""
        keep = instances > MIN_INSTANCE_ID
        if not keep.any():
            return
        image = torch.arange(instances.shape[0], device=instances.device).view(-1, 1, 1).expand_as(instances)
        keys = image[keep] * MAX_ID + instances[keep]
        uniq, inverse, sizes = torch.unique(keys, return_inverse=True, return_counts=True)
        cls = self.lut[(uniq % MAX_ID) // MIN_INSTANCE_ID]
        predicted = pred[keep].clamp(0, self.num_classes)
        hits = torch.bincount(inverse, weights=(predicted == cls[inverse]).double(), minlength=len(uniq))
        category = self.category[cls.clamp(min=0)].masked_fill(cls < 0, -1)
        cat_hits = torch.bincount(inverse, minlength=len(uniq),
                                  weights=self.member[category[inverse].clamp(min=0), predicted].double())
        weight = self.avg[cls.clamp(min=0)] / sizes
        counted = cls >= 0  # instances of classes not evaluated (caravan, trailer) are left out
        self.weighted[0].index_add_(0, cls[counted], (hits * weight)[counted])
        self.weighted[1].index_add_(0, cls[counted], ((sizes - hits) * weight)[counted])
        in_category = category >= 0
        self.category_weighted[0].index_add_(0, category[in_category], (cat_hits * weight)[in_category])
        self.category_weighted[1].index_add_(0, category[in_category], ((sizes - cat_hits) * weight)[in_category])

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.weighted)
            dist.all_reduce(self.category_weighted)

    def compute(self, matrix: np.ndarray) -> dict:
        """iIoU per instance class and category, and their means, from the K x K(+void) confusion matrix."""
        matrix = np.asarray(matrix, dtype=np.float64)
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
        return {"classes": per_class, "categories": per_category,
                "iIoU": nanmean(np.array(list(per_class.values()), dtype=np.float64)),
                "iIoU_category": nanmean(np.array(list(per_category.values()), dtype=np.float64))}


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")
