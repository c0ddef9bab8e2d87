"""The dataset registry: each entry builds a split of a data set from the suite's ``data`` section.

Every data set yields ``(image, mask)`` pairs: a float32 CxHxW tensor normalised with the ImageNet
mean and standard deviation, and an int64 HxW tensor of class indices with ``ignore_index`` for
pixels that do not count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from segbench.registry import Registry

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

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    build: Callable[["DataConfig", str, int], "Dataset"]  # (data config, split, seed) -> Dataset
    info: Callable[["DataConfig"], DatasetInfo]
    description: str


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def build_dataset(cfg: "DataConfig", split: str, seed: int = 0) -> "Dataset":
    """The ``split`` ('train', 'val', ...) of the data set named by ``cfg.name``."""
    return DATASETS.get(cfg.name).build(cfg, split, seed)


def dataset_info(cfg: "DataConfig") -> DatasetInfo:
    return DATASETS.get(cfg.name).info(cfg)


def check_available(cfg: "DataConfig") -> None:
    """Raise a UserError at config time if the data set named by ``cfg`` cannot be read (e.g. no data root)."""
    DATASETS.get(cfg.name)


def _register_builtin() -> None:
    from segbench.datasets import synthetic

    DATASETS.register("synthetic", DatasetEntry("synthetic", synthetic.build, synthetic.info, synthetic.DESCRIPTION))


_register_builtin()
