"""transformers' semantic-segmentation models, ``hf:FOLDER`` or ``hf:OWNER/NAME`` (SegFormer, UperNet, DPT, BEiT,
MobileViT, ...): any ``save_pretrained`` folder that ``AutoModelForSemanticSegmentation`` loads, or a hub id
already in the Hugging Face cache (``download=true`` fetches it).

The logits are upsampled bilinearly (align_corners=False) to the image size, as
``post_process_semantic_segmentation`` does. Normalisation comes from the folder's
``preprocessor_config.json`` (image_mean, image_std, rescale_factor), else ImageNet's; classes from
the config's ``id2label``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import segbench.models.sources.hub as hub
from segbench.errors import UserError
from segbench.models.normalisation import Normalisation, from_image_processor
from segbench.models.sources.base import Resolved, Source, load_state, read_state

NAME = "hf"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
PREPROCESSOR = "preprocessor_config.json"


def _segmentation_types() -> dict[str, str]:
    """transformers' model types that AutoModelForSemanticSegmentation builds; a UserError without transformers."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES
    except ImportError:
        raise UserError("hf: models need the transformers package: pip install 'segbench[hf]'") from None
    return dict(MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES)


def _config(folder: Path, name: str) -> dict:
    """The folder's config.json, checked to be a transformers semantic-segmentation model with weights."""
    types = _segmentation_types()
    path = folder / "config.json"
    if not path.is_file():
        raise UserError(f"hf:{name}: '{folder}' is not a transformers save_pretrained folder (it has no config.json)")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"hf:{name}: '{path}' is not valid JSON: {exc}") from None
    if "_model_class" in config:
        raise UserError(f"hf:{name}: '{folder}' is a segmentation-models-pytorch folder; name it smp:{name}")
    model_type = config.get("model_type")
    if model_type not in types:
        raise UserError(f"hf:{name}: model type '{model_type}' is not one of transformers' semantic-segmentation "
                        f"models ({', '.join(sorted(types))})")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise UserError(f"hf:{name}: '{folder}' holds no weights ({', '.join(WEIGHT_FILES[:2])})")
    return config


def check(name: str) -> None:
    """Raise a UserError unless ``name`` is a usable transformers folder or cached hub id."""
    _segmentation_types()
    _config(hub.locate(NAME, name), name)


def _logits(output: Any) -> Any:
    return output.logits


def resolve(name: str, weights: str | None) -> Resolved:
    """Read the classes and normalisation of ``hf:NAME`` from its folder."""
    _segmentation_types()
    folder = hub.locate(NAME, name)
    config = _config(folder, name)
    id2label = config.get("id2label") or {}
    labels = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    generic = all(re.fullmatch(r"LABEL_\d+", label) for label in labels)
    num_outputs = len(labels) or int(config.get("num_labels", 2))
    processor = folder / PREPROCESSOR
    if processor.is_file():
        normalisation = from_image_processor(json.loads(processor.read_text()), f"{PREPROCESSOR} of {name}")
    else:
        normalisation = Normalisation(origin=f"ImageNet (no {PREPROCESSOR} in {name})")
    record = {"kind": "folder" if Path(name).expanduser().is_dir() else "hub", "path": str(folder),
              "model_type": config["model_type"]}
    if weights is not None:
        record["fine_tuned"] = weights

    def build() -> tuple[Any, Any]:
        from transformers import AutoModelForSemanticSegmentation

        try:
            net = AutoModelForSemanticSegmentation.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:
            raise UserError(f"hf:{name}: transformers cannot load '{folder}': {exc}".splitlines()[0]) from None
        if weights is not None:
            load_state(net, read_state(weights), weights, f"hf:{name}")
        return net, _logits

    return Resolved(NAME, name, None if generic else labels, num_outputs, normalisation, record, build)


def fetch(name: str) -> str:
    """Download hub model ``name`` into the Hugging Face cache."""
    _segmentation_types()
    return hub.fetch(NAME, name)


def names() -> list[tuple[str, str]]:
    return [("hf:FOLDER_OR_HUB_ID", "[transformers] AutoModelForSemanticSegmentation: SegFormer, UperNet, DPT, "
                                    "BEiT, MobileViT, ... (a save_pretrained folder or a cached hub id)")]


SOURCE = Source(NAME, "transformers AutoModelForSemanticSegmentation", check, resolve, fetch, names)
