"""The dataset registry: each entry builds a split of a data set from the suite's ``data`` section.

Every data set yields ``(image, mask)`` pairs: a float32 CxHxW tensor normalised with the ImageNet
mean and standard deviation, and an int64 HxW tensor of class indices with ``ignore_index`` for
pixels that do not count.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from segbench.core.registry import Registry
from segbench.data.base import IMAGENET_MEAN, IMAGENET_STD, DatasetEntry, DatasetInfo
from segbench.errors import UserError

if TYPE_CHECKING:

    import torch
    from torch.utils.data import DataLoader, Dataset, Sampler

    from segbench.config.schema import DataConfig

__all__ = ["DATASETS", "IMAGENET_MEAN", "IMAGENET_STD", "DatasetEntry", "DatasetInfo", "build_dataset",
           "check_available", "check_batchable", "dataset_info", "make_loader"]

DATASETS: Registry[DatasetEntry] = Registry("dataset")


def build_dataset(cfg: "DataConfig", split: str, seed: int = 0) -> "Dataset":
    """The split named ``split`` (e.g. cfg.train_split, cfg.val_split) of the data set named by ``cfg.name``;
    ``cfg.train_split`` gets the training transforms; a UserError for a split without samples."""
    dataset = DATASETS.get(cfg.name).build(cfg, split, seed)
    if len(dataset) == 0:
        raise UserError(f"data.name={cfg.name}: the {split} split has no samples (expected at least one image and its "
                        "mask)")
    return dataset


def dataset_info(cfg: "DataConfig") -> DatasetInfo:
    return DATASETS.get(cfg.name).info(cfg)


def check_available(cfg: "DataConfig", splits: Sequence[str] | None = None) -> None:
    """Raise a UserError at config time if the data set named by ``cfg`` cannot be read: unknown name, bad
    transform settings, no data root, or a root without the expected layout for ``splits`` (default: the
    training and validation splits)."""
    entry = DATASETS.get(cfg.name)
    _check_transform_settings(cfg)
    if entry.check is not None:
        entry.check(cfg, tuple(splits) if splits is not None else (cfg.train_split, cfg.val_split))


def _check_transform_settings(cfg: "DataConfig") -> None:
    """Raise a UserError for transform settings that cannot work (wrong lengths, non-positive sizes)."""
    for key, value in (("crop_size", cfg.crop_size), ("base_size", cfg.base_size)):
        if value is not None and (len(value) != 2 or min(value) <= 0):
            order = "[height, width]" if key == "crop_size" else "[width, height]"
            raise UserError(f"data.{key}: expected {order} of positive integers, got {list(value)}")
    low_high = list(cfg.scale_range)
    if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
        raise UserError(f"data.scale_range: expected [low, high] with 0 < low <= high, got {low_high}")


def _start_worker(worker_id: int) -> None:
    """A loader worker's start: Python's and NumPy's generators seeded from the seed torch gave it, and its
    resource-sharer thread kept quiet about hand-overs that the command abandoned.

    A worker hands each batch's tensors to the command through multiprocessing's resource-sharer thread, a file
    descriptor per tensor over a socket. A signal interrupts the command wherever it is, also in the middle of
    such a hand-over; the command then closes the socket, and the worker's thread, which catches everything and
    passes it to ``sys.excepthook``, would print a traceback (EOFError, ConnectionResetError, BrokenPipeError)
    while the command stops as asked. The receiving side raises its own error in every other case, so nothing is
    lost by not printing the sender's copy. The hook is set here, in the worker, because the command's own hook is
    not what a worker inherits: typer sets its own when the command starts, before any worker is forked."""
    import numpy as np
    import torch

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    from segbench.core.interrupts import quiet_abandoned_transfers

    sys.excepthook = quiet_abandoned_transfers(sys.excepthook)


def check_batchable(dataset: "Dataset", batch_size: int) -> None:
    """Raise a UserError if ``dataset``'s images differ in size, so batches of ``batch_size`` cannot be stacked."""
    if batch_size > 1 and not getattr(dataset, "uniform_size", True):
        sizes = sorted({f"{w}x{h}" for h, w in dataset.sizes})
        raise UserError(f"{dataset.name} {dataset.split}: images differ in size ({', '.join(sizes[:2])}, ...), so "
                        f"batches of {batch_size} cannot be stacked; evaluate with eval.batch_size=1 "
                        "(training needs data.crop_size)")


def make_loader(dataset: "Dataset", batch_size: int, shuffle: bool, num_workers: int,
                device: "torch.device | str", seed: int, sampler: "Sampler | None" = None) -> "DataLoader":
    """A DataLoader for ``dataset``: shuffled loaders (training) drop the last incomplete batch; workers stay
    alive between epochs and are seeded from ``seed``; pinned memory on CUDA (copy with non_blocking=True).
    A ``sampler`` (a rank's share under torchrun) takes the place of shuffling."""
    import torch
    from torch.utils.data import DataLoader

    check_batchable(dataset, batch_size)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      drop_last=shuffle and len(dataset) >= batch_size, num_workers=num_workers,
                      pin_memory=torch.device(device).type == "cuda", persistent_workers=num_workers > 0,
                      worker_init_fn=_start_worker if num_workers > 0 else None,
                      generator=torch.Generator().manual_seed(seed))


def _register_builtin() -> None:
    import segbench.data.layouts.acdc as acdc
    import segbench.data.layouts.ade20k as ade20k
    import segbench.data.layouts.cityscapes as cityscapes
    import segbench.data.layouts.folder as folder
    import segbench.data.layouts.synthetic as synthetic
    import segbench.data.layouts.voc as voc

    DATASETS.register("synthetic", DatasetEntry("synthetic", synthetic.build, synthetic.info, synthetic.DESCRIPTION,
                                                image_size=synthetic.image_size))
    for module, name in ((cityscapes, "cityscapes"), (ade20k, "ade20k"), (voc, "voc"), (folder, "folder"),
                         (acdc, "acdc")):
        DATASETS.register(name, DatasetEntry(name, module.build, module.info, module.DESCRIPTION, module.check,
                                             getattr(module, "METRICS", ()), getattr(module, "group_of", None)))


_register_builtin()
