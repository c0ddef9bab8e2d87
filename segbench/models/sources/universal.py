"""transformers' universal-segmentation models (Mask2Former, MaskFormer, OneFormer, EoMT on DINOv2 or DINOv3) as
``hf:`` sources: their semantic scores, seen as the logits every other model gives.

A universal model answers with queries: ``class_queries_logits`` (N x Q x K+1, the last class is "no object") and
``masks_queries_logits`` (N x Q x h x w, at a quarter of the input for Mask2Former, MaskFormer and OneFormer). The
semantic score of class k at a pixel is the MaskFormer paper's semantic inference: the softmax over the K+1 classes
without the null class, times the sigmoid of the query's mask logits, summed over the queries. The mask logits are
upsampled bilinearly (align_corners=False) to the padded input size *before* the sigmoid, as Mask2Former's own code
does (transformers' ``post_process_semantic_segmentation`` takes the sigmoid at 384 x 384 for Mask2Former, at the
masks' own size for MaskFormer and OneFormer, and resizes the padded map); the evaluator then crops the padding
away, so the masks reach the label's size in one step.

The scores are not probabilities: they sum to at most Q per pixel. The module returns their log: its argmax is the
scores' argmax, and its softmax is the scores divided by their sum per pixel (the share of each class in the
queries' vote), which is what the calibration error and the multi-scale average of softmax see.

OneFormer needs its task input: "the task is semantic", tokenized by the tokenizer saved with its processor, read
when the model is resolved. EoMT takes a fixed square input: the image is resized so that its short side is the
model's ``image_size``, split along its long side into overlapping square crops (EoMT's own split), the scores of
each crop computed at the crop's size, averaged where crops overlap, and resized to the input size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segbench.errors import UserError

FAMILIES = {"mask2former": "Mask2Former", "maskformer": "MaskFormer", "oneformer": "OneFormer", "eomt": "EoMT",
            "eomt_dinov3": "EoMT (DINOv3)"}
TASK = "the task is semantic"  # OneFormer's task input for semantic segmentation, as its processor words it
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))  # a fast or a slow CLIP tokenizer
QUERIES_AT_ONCE = 25  # masks upsampled to the input size together
SIZE_DIVISOR = 32  # what Mask2Former's, MaskFormer's and OneFormer's image processors pad to
SCORES = ("softmax over the K+1 classes without the null class x sigmoid of the mask logits upsampled bilinearly "
          "(before the sigmoid) to {where}, summed over the queries; returned as log scores (their softmax: the "
          "scores divided by their sum per pixel)")
PADDED = "the padded input size, padding cropped"
CROPS = ("the crop's size (the image resized to a short side of {side}, split into overlapping {side}x{side} crops "
         "whose scores are averaged where they overlap and resized to the input size)")


def semantic_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x K x H x W semantic scores at ``size`` of N x Q x K+1 class logits and N x Q x h x w mask logits."""
    classes = class_logits.softmax(dim=-1)[..., :-1]
    scores = None
    # a few queries at a time: Q masks at a Cityscapes image's size would take Q x 8 MB at once
    for part, masks in zip(classes.split(QUERIES_AT_ONCE, dim=1), mask_logits.split(QUERIES_AT_ONCE, dim=1)):
        if tuple(masks.shape[-2:]) != tuple(size):
            masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        term = torch.einsum("bqc,bqhw->bchw", part, masks.sigmoid())
        scores = term if scores is None else scores + term
    return scores


def crop_starts(length: int, crop: int) -> list[int]:
    """Where EoMT's overlapping crops of side ``crop`` start along a side of ``length`` (EoMT's own split)."""
    count = math.ceil(length / crop)
    overlap = (count * crop - length) / (count - 1) if count > 1 else 0
    return [int(i * (crop - overlap)) for i in range(count)]


class Semantic(nn.Module):
    """A universal-segmentation network seen as a semantic one: images in, N x K x H x W log scores out, at the
    input's size."""

    def __init__(self, model: nn.Module, task: torch.Tensor | None = None, crop: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.crop = crop  # EoMT: the side of its square input
        self.register_buffer("task", task, persistent=False)  # OneFormer: the task input's token ids (1 x T)

    def _scores(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        extra = (self.task.expand(images.shape[0], -1),) if self.task is not None else ()
        out = self.model(images, *extra)
        return semantic_scores(out.class_queries_logits, out.masks_queries_logits, size)

    def _cropped(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        crop, tall = self.crop, height > width
        short, long = (width, height) if tall else (height, width)
        long = long if short == crop else int(crop * long / short)
        size = (long, crop) if tall else (crop, long)
        resized = images if size == (height, width) else F.interpolate(images, size=size, mode="bilinear",
                                                                       align_corners=False)
        starts = crop_starts(long, crop)
        crops = [resized[..., s:s + crop, :] if tall else resized[..., s:s + crop] for s in starts]
        scores = self._scores(torch.cat(crops), (crop, crop)).split(n)
        total = scores[0].new_zeros(n, scores[0].shape[1], *size)
        count = scores[0].new_zeros(1, 1, *size)
        for start, part in zip(starts, scores):
            region = (..., slice(start, start + crop), slice(None)) if tall else (..., slice(start, start + crop))
            total[region] += part
            count[region] += 1
        merged = total / count
        if size != (height, width):
            merged = F.interpolate(merged, size=(height, width), mode="bilinear", align_corners=False)
        return merged

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = self._cropped(images) if self.crop else self._scores(images, tuple(images.shape[-2:]))
        return scores.clamp_min(torch.finfo(scores.dtype).tiny).log()


def _scores(output: torch.Tensor) -> torch.Tensor:
    return output


def task_tokens(folder: Path, config: dict, model: str) -> torch.Tensor:
    """OneFormer's task input ("the task is semantic") as token ids, by the tokenizer saved in ``folder``."""
    try:
        # transformers 5 makes an empty CLIP tokenizer for a folder without one: the files are looked for first
        if not any(all((folder / f).is_file() for f in files) for files in TOKENIZER_FILES):
            raise FileNotFoundError(f"no {' nor '.join(' + '.join(files) for files in TOKENIZER_FILES)}")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        length = int(config.get("task_seq_len", 77))
        tokens = tokenizer([TASK], padding="max_length", max_length=length, truncation=True)
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id != tokenizer.pad_token_id and \
                tokenizer.unk_token_id in tokens["input_ids"][0]:
            raise ValueError(f"its tokenizer does not know the words of '{TASK}'")
    except Exception as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{model}: a OneFormer needs its task input '{TASK}', tokenized by the tokenizer saved with "
                        f"its processor, and '{folder}' has no usable tokenizer ({reason}); save the "
                        "OneFormerProcessor into the folder (processor.save_pretrained)") from None
    return torch.tensor(tokens["input_ids"]) * torch.tensor(tokens["attention_mask"])


def _crop_size(config: dict, model: str) -> int:
    size = config.get("image_size", 640)
    sides = set(size) if isinstance(size, (list, tuple)) else {size}
    if len(sides) != 1 or not isinstance(next(iter(sides)), int):
        raise UserError(f"{model}: an EoMT's image_size must be one side of a square, got {size!r}")
    return sides.pop()


class Universal:
    """How a universal-segmentation folder becomes a semantic model: what its record says, what evaluation pads
    its images to, and the wrapping of the network (read at resolve time, so a refusal comes before any run)."""

    def __init__(self, folder: Path, config: dict, model: str) -> None:
        family = config["model_type"]
        self.task = task_tokens(folder, config, model) if family == "oneformer" else None
        self.crop = _crop_size(config, model) if family.startswith("eomt") else None
        self.size_divisor = 1 if self.crop else SIZE_DIVISOR
        where = CROPS.format(side=self.crop) if self.crop else PADDED
        self.record: dict[str, Any] = {"family": FAMILIES[family], "post_processing": SCORES.format(where=where)}
        if self.task is not None:
            self.record["task_input"] = TASK

    def wrap(self, net: nn.Module) -> tuple[nn.Module, Any]:
        """(the network answering log semantic scores, the function of its output that gives them)."""
        return Semantic(net, self.task, self.crop), _scores
