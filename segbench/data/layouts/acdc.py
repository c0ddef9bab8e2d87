"""ACDC, the Adverse Conditions Dataset with Correspondences (Sakaridis et al., ICCV 2021): fog, night, rain and snow
in Cityscapes' label format, scored on the 19 Cityscapes train classes.

``rgb_anon/{condition}/{split}/{sequence}/{name}_rgb_anon.png`` with
``gt/{condition}/{split}/{sequence}/{name}_gt_labelIds.png`` (Cityscapes label ids, mapped to train ids with the
Cityscapes table; a ``{name}_gt_labelTrainIds.png`` beside it is used instead when present). A split is ``val``
(all four conditions) or ``CONDITION/SPLIT`` for one condition, e.g. ``data.val_split=fog/val``; each sample's id
starts with its condition (``fog/val/GOPR0475/GOPR0475_frame_000041``), so results can be broken down by it.
The ``{split}_ref`` folders (the same places in good weather) are not read.
"""

from __future__ import annotations

from pathlib import Path

from segbench.config.schema import DataConfig
from segbench.data.base import DatasetInfo
from segbench.data.checks import check_layout
from segbench.data.layouts.cityscapes import CATEGORIES, CLASSES, PALETTE, label_ids, train_ids
from segbench.data.pairs import SegmentationFiles, make_dataset, pair_by_stem
from segbench.errors import UserError

DESCRIPTION = "ACDC adverse conditions (fog, night, rain, snow), Cityscapes' 19 train classes (data.root or ACDC_ROOT)"
ENV = "ACDC_ROOT"
CONDITIONS = ("fog", "night", "rain", "snow")
SOURCE = "https://acdc.vision.ee.ethz.ch/ (rgb_anon_trainvaltest.zip and gt_trainval.zip, unzipped into one folder)"
LAYOUT = ("rgb_anon/{fog,night,rain,snow}/{split}/SEQUENCE/NAME_rgb_anon.png and "
          "gt/{condition}/{split}/SEQUENCE/NAME_gt_labelIds.png")
IMAGE_SUFFIX = "_rgb_anon.png"
LABEL_IDS_SUFFIX = "_gt_labelIds.png"
TRAIN_IDS_SUFFIX = "_gt_labelTrainIds.png"


def _root(cfg: DataConfig) -> Path:
    return Path(cfg.root).expanduser()


def parse_split(split: str) -> tuple[tuple[str, ...], str]:
    """(conditions, split folder) of ``val`` (every condition) or ``fog/val`` (one); a UserError otherwise."""
    condition, _, folder = split.rpartition("/")
    if not folder or (condition and condition not in CONDITIONS):
        raise UserError(f"acdc: split '{split}': expected SPLIT (all conditions) or CONDITION/SPLIT with a condition "
                        f"of {', '.join(CONDITIONS)}, e.g. val or fog/val")
    return ((condition,) if condition else CONDITIONS), folder


def condition_of(sample_id: str) -> str:
    """The condition (fog, night, rain, snow) of an ACDC sample id."""
    return sample_id.split("/", 1)[0]


group_of = condition_of  # the data set's entry: samples are scored per condition too


def _folders(root: Path, split: str) -> list[Path]:
    conditions, folder = parse_split(split)
    return [root / kind / c / folder for c in conditions for kind in ("rgb_anon", "gt")]


def check(cfg: DataConfig, splits: tuple[str, ...]) -> None:
    """Raise a UserError, on one line, if the data root or the folders of ``splits`` are missing."""
    for split in splits:
        parse_split(split)
    check_layout("acdc", _root(cfg) if cfg.root else None, ENV,
                 f"expected {LAYOUT} under it; get the data set from {SOURCE}",
                 lambda root: [path for s in splits for path in _folders(root, s)])


def info(cfg: DataConfig) -> DatasetInfo:
    return DatasetInfo("acdc", CLASSES, PALETTE, cfg.ignore_index, CATEGORIES)


def _by_key(folder: Path, suffix: str, prefix: str) -> dict[str, Path]:
    """``prefix/SEQUENCE/NAME`` -> file, for the files ``folder/SEQUENCE/NAME{suffix}``."""
    return {f"{prefix}/{p.parent.name}/{p.name[: -len(suffix)]}": p for p in sorted(folder.glob(f"*/*{suffix}"))}


def build(cfg: DataConfig, split: str, seed: int) -> SegmentationFiles:
    check(cfg, (split,))
    root = _root(cfg)
    conditions, folder = parse_split(split)
    ids, trains = label_ids(cfg.ignore_index), train_ids(cfg.ignore_index)
    images, masks = {}, {}
    for condition in conditions:
        prefix = f"{condition}/{folder}"
        images |= _by_key(root / "rgb_anon" / condition / folder, IMAGE_SUFFIX, prefix)
        gt = root / "gt" / condition / folder
        masks |= {key: (path, ids) for key, path in _by_key(gt, LABEL_IDS_SUFFIX, prefix).items()}
        masks |= {key: (path, trains) for key, path in _by_key(gt, TRAIN_IDS_SUFFIX, prefix).items()}
    samples, orphans = pair_by_stem(images, masks, lambda key: str(root / "gt" / (key + LABEL_IDS_SUFFIX)))
    where = root / "rgb_anon" / (conditions[0] if len(conditions) == 1 else "{" + ",".join(conditions) + "}") / folder
    return make_dataset("acdc", cfg, split, samples, orphans, where, ids, CLASSES)
