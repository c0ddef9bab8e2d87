"""Saving predictions to look at and to submit (eval.save_predictions).

Label PNGs go to ``{folder}/labels/{id}.png`` in the data set's own encoding: each class becomes the
smallest raw mask value that means it (Cityscapes label ids, as its server takes them; VOC indices in a
palette PNG; folder masks in raw values, i.e. after the inverse of ``data.label_map``; the synthetic set's
class indices). ``segbench score`` reads such a folder back with ``label_space=dataset``. The first few
images also get a colour overlay, ``{folder}/overlays/{id}.png``: the image blended with the predicted
classes' colours beside the ground truth's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from segbench.data.base import sample_ids
from segbench.data.registry import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo

ALPHA = 0.5  # weight of the class colour in an overlay
PALETTE_DATASETS = ("voc",)  # data sets whose masks are palette PNGs


def class_to_raw(dataset: Dataset, num_classes: int, label_map: dict[int, int] | None = None) -> np.ndarray:
    """Class index -> the raw mask value that encodes it: the smallest one ``label_map`` maps to it, else the
    smallest one the data set's encoding maps to it (identity for data sets without files)."""
    encoding = getattr(dataset, "encoding", None)
    out = np.arange(num_classes, dtype=np.int64)
    for cls in range(num_classes):
        raw = np.flatnonzero(encoding.defined & (encoding.table == cls)) if encoding is not None else []
        mapped = sorted(r for r, c in (label_map or {}).items() if c == cls)
        if mapped or len(raw):
            out[cls] = mapped[0] if mapped else raw[0]
    return out


def colourise(labels: np.ndarray, palette: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """HxW class indices as HxWx3 colours (labels outside the palette black)."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = palette
    return table[np.clip(labels, 0, 255)]


class PredictionWriter:
    """Writes each evaluated batch's predictions as label PNGs, and overlays of the first ``overlays`` images."""

    def __init__(self, folder: Path, dataset: Dataset, info: DatasetInfo, overlays: int = 4,
                 label_map: dict[int, int] | None = None, first: int = 0) -> None:
        """``first``: the index in ``dataset`` of the first sample this writer sees (a rank's shard)."""
        self.folder, self.info, self.overlays, self.first = Path(folder), info, overlays, first
        self.ids = sample_ids(dataset)
        self.to_raw = class_to_raw(dataset, info.num_classes, label_map)
        self.palette = info.name in PALETTE_DATASETS
        self.targets = dataset  # the ground truth shown beside the prediction in an overlay
        self.overlay_paths: list[Path] = []
        self.written = 0

    def write(self, start: int, images: torch.Tensor, pred: torch.Tensor) -> None:
        """Save the predictions of samples ``start``, ``start + 1``, ... (images ImageNet-normalised)."""
        from PIL import Image

        labels = pred.cpu().numpy()
        for offset, label in enumerate(labels):
            index = self.first + start + offset
            path = self.folder / "labels" / f"{self.ids[index]}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            png = Image.fromarray(self.to_raw[label].astype(np.uint8))
            if self.palette:
                from segbench.data.pairs import voc_colormap

                png.putpalette([v for c in voc_colormap(256) for v in c])
            png.save(path)
            self.written += 1
            if index < self.overlays:
                self.overlay_paths.append(self._overlay(index, images[offset], label))

    def _overlay(self, index: int, image: torch.Tensor, label: np.ndarray) -> Path:
        from PIL import Image

        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        rgb = ((image.cpu().float() * std + mean).clamp(0, 1) * 255).permute(1, 2, 0).numpy()
        target = self.targets[index][1].numpy()
        halves = [(1 - ALPHA) * rgb + ALPHA * colourise(labels, self.info.palette) for labels in (label, target)]
        ignored = target >= self.info.num_classes
        halves[1][ignored] = rgb[ignored]
        path = self.folder / "overlays" / f"{self.ids[index].replace('/', '_')}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(halves, axis=1).astype(np.uint8)).save(path)
        return path

    def record(self, out_dir: Path) -> dict:
        """Where the predictions are, relative to the output folder."""
        return {"labels": str((self.folder / "labels").relative_to(out_dir)), "images": self.written,
                "encoding": getattr(getattr(self.targets, "encoding", None), "name", "class indices"),
                "overlays": [str(p.relative_to(out_dir)) for p in self.overlay_paths]}
