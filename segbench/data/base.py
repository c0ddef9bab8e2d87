"""What every data set shares: the ImageNet normalisation its images get and the description of its labels."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segbench.errors import UserError

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from segbench.config.schema import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set's labels mean: class names, display colours and the ignored label."""

    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = 255
    categories: tuple[tuple[str, tuple[int, ...]], ...] = ()  # named groups of classes (Cityscapes' 7)
    palette_masks: bool = False  # masks are palette PNGs (Pascal VOC): predictions are written the same way

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    build: Callable[["DataConfig", str, int], "Dataset"]  # (data config, split, seed) -> Dataset
    info: Callable[["DataConfig"], DatasetInfo]
    description: str
    check: Callable[["DataConfig", tuple[str, ...]], None] | None = None  # (data config, splits): raise if unusable
    metrics: tuple[type, ...] = ()  # accumulators of the data set's own metrics (segbench.metrics.protocol)
    group_of: Callable[[str], str] | None = None  # sample id -> its group (ACDC: the adverse condition), scored apart
    image_size: Callable[["DataConfig"], tuple[int, int]] | None = None  # (height, width) of every image, if known


def keep_ratio_size(height: int, width: int, scale: tuple[float, float]) -> tuple[int, int]:
    """(height, width) after rescaling to fit ``scale`` keeping the ratio: long edge <= max(scale), short
    edge <= min(scale), whichever binds first (MMSegmentation's ``keep_ratio`` resize; it can enlarge)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def sample_ids(dataset: Dataset) -> list[str]:
    """Each sample's id (its path without suffix for on-disk data sets, its index otherwise)."""
    samples = getattr(dataset, "samples", None)
    return [s.id for s in samples] if samples is not None else [f"{i:06d}" for i in range(len(dataset))]


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
