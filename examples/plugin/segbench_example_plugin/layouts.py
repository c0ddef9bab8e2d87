"""A data-set layout, registered as ``suffix_pairs``: ``root/{split}/NAME.jpg`` (or .png) beside
``root/{split}/NAME_mask.png`` (class indices), classes from ``data.classes``."""

from pathlib import Path

import segbench
from segbench.data.base import DatasetInfo, LabelMap
from segbench.data.checks import IMAGE_SUFFIXES, check_layout
from segbench.data.pairs import make_dataset, pair_by_stem, voc_colormap

MASK_SUFFIX = "_mask"


@segbench.register_dataset("suffix_pairs")
class SuffixPairs:
    """Images beside their masks: root/{split}/NAME.jpg and root/{split}/NAME_mask.png."""

    DESCRIPTION = "images beside their masks: root/{split}/NAME.jpg and NAME_mask.png (example plugin)"

    @staticmethod
    def check(cfg, splits):
        if not cfg.classes:
            raise segbench.UserError("suffix_pairs: data.classes is not set; name the classes")
        check_layout("suffix_pairs", Path(cfg.root) if cfg.root else None, "SUFFIX_PAIRS_ROOT",
                     "expected root/{split}/NAME.jpg and NAME_mask.png", lambda root: [root / s for s in splits])

    @staticmethod
    def info(cfg):
        classes = tuple(cfg.classes or ())
        return DatasetInfo("suffix_pairs", classes, voc_colormap(len(classes)), cfg.ignore_index)

    @staticmethod
    def build(cfg, split, seed):
        SuffixPairs.check(cfg, (split,))
        folder = Path(cfg.root) / split
        labels = LabelMap.identity("suffix_pairs", len(cfg.classes), cfg.ignore_index)
        files = sorted(p for p in folder.iterdir() if p.is_file())
        images = {p.stem: p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith(MASK_SUFFIX)}
        masks = {p.stem[: -len(MASK_SUFFIX)]: (p, labels) for p in files if p.stem.endswith(MASK_SUFFIX)}
        samples, orphans = pair_by_stem(images, masks, lambda key: f"{folder / key}{MASK_SUFFIX}.png")
        return make_dataset("suffix_pairs", cfg, split, samples, orphans, folder, labels, tuple(cfg.classes))
