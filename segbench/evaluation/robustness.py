"""Evaluation under corruption (``eval.corruptions``, ``eval.severities``) and per adverse condition (ACDC).

Each model is evaluated on the clean split (the ordinary evaluation) and then on every corruption x severity: the
split wrapped in a ``CorruptedView``, so that images are corrupted in the loader's worker processes and read from the
corruption cache when another model (or an earlier run) computed them already. Each corrupted view is scored with
everything the clean evaluation reports (the confusion-matrix metrics and, with ``eval.passport``, the passport's
headline numbers); the model record's ``robustness`` holds them with mPC, rPC, their bootstrap intervals, the means
per corruption and per severity, and what producing the corrupted views cost. mPC and rPC also go to ``metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler, Subset

from segbench.config.schema import SuiteConfig
from segbench.config.typed import plain
from segbench.core.distributed import World, gather, shard
from segbench.data.base import DatasetInfo, sample_ids
from segbench.data.corruptions import (
    CorruptedView,
    CorruptionCache,
    CorruptionMeter,
    check_setup,
    check_severity,
    package_version,
    resolve,
)
from segbench.data.registry import DATASETS
from segbench.errors import UserError
from segbench.evaluation.loop import evaluate, score_split
from segbench.metrics.passport import Passport
from segbench.metrics.robustness import (
    Condition,
    bootstrap_robustness,
    by_group,
    mean_pc,
    per_corruption,
    per_severity,
    relative_pc,
)
from segbench.results.robustness import CorruptionCost, Robustness
from segbench.results.schema import ModelRecord

CORRUPTIBLE = ("raw_image", "with_image", "sample_id")  # what a data set needs for corrupted views


def conditions(cfg: SuiteConfig) -> list[tuple[str, int]]:
    """Every (corruption, severity) the suite asks for, corruptions in ``eval.corruptions``' order; [] for none."""
    names = resolve(cfg.eval.corruptions or [])
    return [(name, check_severity(severity)) for name in names for severity in cfg.eval.severities]


def check_corruptions(cfg: SuiteConfig, dataset: Dataset) -> None:
    """Raise a UserError, before any work, when the corruption settings cannot run on ``dataset``."""
    if not cfg.eval.corruptions:
        return
    if not cfg.eval.severities:
        raise UserError("eval.severities: expected at least one severity from 1 to 5, e.g. [1,2,3,4,5]")
    for severity in cfg.eval.severities:
        check_severity(severity)
    conditions(cfg)  # unknown names, with suggestions
    package_version()  # the package is installed
    missing = [name for name in CORRUPTIBLE if not hasattr(dataset, name)]
    if missing:
        raise UserError(f"eval.corruptions: the {getattr(dataset, 'name', '?')} data set cannot hand over its raw "
                        f"images (no {', '.join(missing)}), so it cannot be corrupted")
    check_setup(dataset)  # images of at least 32 x 32, a cache that can work


class ViewBatches(Sampler):
    """Batches of indices into the concatenation of parts of ``lengths``, in order, none crossing two parts."""

    def __init__(self, lengths: list[int], batch_size: int) -> None:
        self.lengths, self.batch_size = lengths, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        offset = 0
        for length in self.lengths:
            for start in range(0, length, self.batch_size):
                yield list(range(offset + start, offset + min(start + self.batch_size, length)))
            offset += length

    def __len__(self) -> int:
        return sum(-(-length // self.batch_size) for length in self.lengths)


class Take:
    """The next ``count`` batches of a shared iterator, as a loader for ``evaluate`` (with a length for its bar)."""

    def __init__(self, batches: Iterator, count: int) -> None:
        self.batches, self.count = batches, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator:
        return islice(self.batches, self.count)


def evaluate_corruptions(model: torch.nn.Module, val_set: Dataset, info: DatasetInfo, cfg: SuiteConfig,
                         world: World, device: torch.device, clean: ModelRecord, desc: str,
                         progress: bool) -> Robustness:
    """The ``robustness`` record of ``model``: each corrupted view of ``val_set`` evaluated as the clean split was
    (each rank on its contiguous shard); ``clean`` is the clean evaluation's record (metrics, per_image,
    evaluation seconds). One loader serves every view in turn, so its workers start once and corrupt the next
    view's first images while the model runs on the last ones of the current view."""
    pairs = conditions(cfg)
    store, meter = CorruptionCache(), CorruptionMeter()
    views = [CorruptedView(val_set, name, severity, store, meter) for name, severity in pairs]
    passports = [Passport.build(cfg.eval, cfg.data, info, view, device) for view in views]
    parts = [passport.dataset(view) if passport else view for view, passport in zip(views, passports)]
    if world.distributed:
        parts = [Subset(part, shard(len(part), world)) for part in parts]
    batch_size = cfg.eval.batch_size
    loader = DataLoader(ConcatDataset(parts), batch_sampler=ViewBatches([len(p) for p in parts], batch_size),
                        num_workers=cfg.data.num_workers, pin_memory=torch.device(device).type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed))
    batches = iter(loader)
    scored: list[Condition] = []
    rows = []
    seconds = 0.0
    for k, ((name, severity), view, passport, part) in enumerate(zip(pairs, views, passports, parts), 1):
        result = evaluate(model, Take(batches, -(-len(part) // batch_size)), info.num_classes, info.ignore_index,
                          device, cfg.eval, desc=f"{desc} {name} s{severity} [{k}/{len(pairs)}]", progress=progress,
                          passport=passport)
        split = score_split(result, view)
        metrics = split.metrics
        scored.append(Condition(name, severity, metrics, split.intersection, split.union))
        wall = max(gather(result.seconds))
        seconds += wall
        rows.append({"corruption": name, "severity": severity, "metrics": metrics, "seconds": wall})
    mpc = mean_pc(scored)
    rpc = relative_pc(mpc, clean.metrics["mIoU"])
    intervals = bootstrap_robustness((np.asarray(clean.per_image.intersection), np.asarray(clean.per_image.union)),
                                     scored, seed=cfg.seed)
    corrupting = sum(gather(meter.seconds))
    total = seconds + clean.evaluation.seconds
    return Robustness(
        corruptions=list(dict.fromkeys(name for name, _ in pairs)),
        severities=[int(s) for s in cfg.eval.severities],
        package=package_version(),
        mPC=mpc,
        rPC=rpc,
        intervals=intervals,
        per_corruption=per_corruption(scored),
        per_severity={str(s): v for s, v in per_severity(scored).items()},
        conditions=plain(rows, nan_as_null=False),
        cost=CorruptionCost(corrupted_images_computed=sum(gather(meter.computed)),
                            corrupted_images_from_cache=sum(gather(meter.hits)), corruption_seconds=corrupting,
                            evaluation_seconds=total,
                            corruption_share=corrupting / total if total > 0 else float("nan")))


def adverse_conditions(dataset: Dataset, intersection: np.ndarray, union: np.ndarray) -> dict | None:
    """Per group of a data set whose entry groups its samples (ACDC: fog, night, rain, snow, from each sample id's
    prefix), mIoU, mDice and images; None for other data sets."""
    name = getattr(dataset, "name", "")
    group_of = DATASETS.get(name).group_of if name in DATASETS else None
    if group_of is None or len(intersection) != len(dataset):
        return None
    return by_group(intersection, union, sample_ids(dataset), group_of)
