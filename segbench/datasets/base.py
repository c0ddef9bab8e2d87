"""What every data set shares: the ImageNet normalisation its images get and the description of its labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from segbench.config import DataConfig

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
