"""Saving predictions to look at and to submit (eval.save_predictions).

Label PNGs go to ``{folder}/labels/{id}.png`` in the data set's own encoding: each class becomes the
smallest raw mask value that means it (Cityscapes label ids, as its server takes them; VOC indices in a
palette PNG; folder masks in raw values, i.e. after the inverse of ``data.label_map``; the synthetic set's
class indices). ``segbench score`` reads such a folder back with ``label_space=dataset``. The first few
images also get a colour overlay, ``{folder}/overlays/{id}.png``: the image blended with the predicted
classes' colours beside the ground truth's, under a caption (the model, the image id, which half is which)
and above a legend naming the colours of the classes shown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from segbench.data.base import sample_ids
from segbench.data.registry import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo

ALPHA = 0.5  # weight of the class colour in an overlay
MIN_WIDTH = 360  # an overlay is at least this wide, so that its caption and legend fit beside small images
PAD, SWATCH = 4, 10  # pixels around caption and legend text; side of a legend's colour square


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
                 label_map: dict[int, int] | None = None, first: int = 0, title: str | None = None) -> None:
        """``first``: the index in ``dataset`` of the first sample this writer sees (a rank's shard); ``title``:
        the model's name in the overlays' caption (default: the folder's name)."""
        self.folder, self.info, self.overlays, self.first = Path(folder), info, overlays, first
        self.title = title or self.folder.name
        self.ids = sample_ids(dataset)
        self.to_raw = class_to_raw(dataset, info.num_classes, label_map)
        self.palette = info.palette_masks
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
        body = Image.fromarray(np.concatenate(halves, axis=1).astype(np.uint8))
        shown = np.union1d(np.unique(label), np.unique(target[~ignored]))
        path = self.folder / "overlays" / f"{self.ids[index].replace('/', '_')}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        labelled(body, [f"{self.title} · {self.ids[index]}", ("prediction", "ground truth")],
                 [(self.info.classes[c], self.info.palette[c]) for c in shown if c < self.info.num_classes]).save(path)
        return path

    def record(self, out_dir: Path) -> dict:
        """Where the predictions are, relative to the output folder."""
        return {"labels": str((self.folder / "labels").relative_to(out_dir)), "images": self.written,
                "encoding": getattr(getattr(self.targets, "encoding", None), "name", "class indices"),
                "overlays": [str(p.relative_to(out_dir)) for p in self.overlay_paths]}


def labelled(body, caption: list, legend: list[tuple[str, tuple[int, int, int]]]):
    """``body`` (two halves side by side) on a white canvas: caption lines above (a pair of texts names the
    halves), the legend's colour squares and class names below, wrapped to the width."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = int(measure.textbbox((0, 0), "Ag", font=font)[3]) + PAD
    width = max(body.width, MIN_WIDTH)
    places, x, y = [], PAD, 0  # legend entries: (x, y) of each square
    for name, _ in legend:
        entry = SWATCH + PAD + int(measure.textlength(name, font=font)) + 3 * PAD
        if x + entry > width and x > PAD:
            x, y = PAD, y + line
        places.append((x, y))
        x += entry
    top = PAD + line * len(caption)
    canvas = Image.new("RGB", (width, top + body.height + PAD + y + line), "white")
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(caption):
        halves = text if isinstance(text, tuple) else (text,)
        for j, part in enumerate(halves):
            draw.text((PAD + j * body.width // 2, PAD // 2 + i * line), part, fill="black", font=font)
    canvas.paste(body, (0, top))
    below = top + body.height + PAD
    for (name, colour), (x, y) in zip(legend, places):
        draw.rectangle([x, below + y, x + SWATCH, below + y + SWATCH], fill=tuple(colour), outline="black")
        draw.text((x + SWATCH + PAD, below + y), name, fill="black", font=font)
    return canvas
