"""transformers' semantic-segmentation models, ``hf:FOLDER`` or ``hf:OWNER/NAME`` (SegFormer, UperNet, DPT, BEiT,
MobileViT, ...): any ``save_pretrained`` folder that ``AutoModelForSemanticSegmentation`` loads, or a hub id
already in the Hugging Face cache (``download=true`` fetches it). The universal-segmentation families
(Mask2Former, MaskFormer, OneFormer, EoMT: ``AutoModelForUniversalSegmentation``) come the same way, their semantic
scores made in ``universal``.

The logits are upsampled bilinearly (align_corners=False) to the image size, as
``post_process_semantic_segmentation`` does. Normalisation comes from the folder's
``preprocessor_config.json`` (image_mean, image_std, rescale_factor), or the image processor inside its
``processor_config.json``, else ImageNet's; classes from the config's ``id2label``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import segbench.models.sources.hub as hub
from segbench.errors import UserError
from segbench.models.checkpoints import tensor_shapes
from segbench.models.normalisation import Normalisation, from_image_processor
from segbench.models.sources.base import Resolved, Source, compare, load_state, own_shapes, read_state, state_shapes
from segbench.models.sources.hub import labels_of, read_json

NAME = "hf"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
PREPROCESSOR = "preprocessor_config.json"
PROCESSOR = "processor_config.json"  # a whole processor (OneFormer's: image processor and tokenizer)


# the universal-segmentation families, as universal.FAMILIES (named here too: this module imports no torch)
UNIVERSAL = ("mask2former", "maskformer", "oneformer", "eomt", "eomt_dinov3")


def _segmentation_types() -> dict[str, str]:
    """transformers' model types that AutoModelForSemanticSegmentation builds, and the universal-segmentation
    families segbench reads semantic scores from; a UserError without transformers."""
    try:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES,
            MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES,
        )
    except ImportError:
        raise UserError("hf: models need the transformers package: pip install 'segbench[hf]'") from None
    universal = {k: v for k, v in MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES.items() if k in UNIVERSAL}
    return dict(MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES) | universal


def _auto(model_type: str) -> Any:
    """The transformers Auto class that builds ``model_type``."""
    import transformers

    universal = model_type in UNIVERSAL
    return transformers.AutoModelForUniversalSegmentation if universal else \
        transformers.AutoModelForSemanticSegmentation


def _config(folder: Path, name: str) -> dict:
    """The folder's config.json, checked to be a transformers semantic-segmentation model with weights."""
    types = _segmentation_types()
    path = folder / "config.json"
    if not path.is_file():
        raise UserError(f"hf:{name}: '{folder}' is not a transformers save_pretrained folder (it has no config.json)")
    config = read_json(path, f"hf:{name}")
    if "_model_class" in config:
        raise UserError(f"hf:{name}: '{folder}' is a segmentation-models-pytorch folder; name it smp:{name}")
    model_type = config.get("model_type")
    if model_type not in types:
        raise UserError(f"hf:{name}: model type '{model_type}' is not one of transformers' semantic-segmentation "
                        f"or universal-segmentation models segbench reads ({', '.join(sorted(types))})")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise UserError(f"hf:{name}: '{folder}' holds no weights ({', '.join(WEIGHT_FILES[:2])})")
    if "id2label" in config:
        labels_of(config["id2label"], f"hf:{name}")
    return config


def quiet_progress() -> None:
    """transformers' and huggingface_hub's progress bars obey segbench's terminal rule: none unless stderr is a
    terminal."""
    if sys.stderr.isatty():
        return
    import huggingface_hub.utils
    import transformers.utils.logging

    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


def _folder_shapes(folder: Path, name: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the tensors of a save_pretrained folder (one file, or the shards its index names)."""
    for file in WEIGHT_FILES[:2]:
        if (folder / file).is_file():
            return tensor_shapes(folder / file)
    index_file = next(folder / f for f in WEIGHT_FILES[2:] if (folder / f).is_file())
    index = read_json(index_file, f"hf:{name}")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise UserError(f"hf:{name}: '{index_file}' has no weight_map")
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in sorted(set(map(str, weight_map.values()))):
        path = folder / shard
        if Path(shard).is_absolute() or ".." in Path(shard).parts or not path.is_file():
            raise UserError(f"hf:{name}: '{index_file}' names a shard '{shard}' that is not a file of the folder")
        shapes |= tensor_shapes(path)
    return shapes


def _renamer(net: Any, own: dict[str, tuple[int, ...]]) -> Any:
    """checkpoint key -> (the model's key, whether transformers converts the tensor on load), with transformers' own
    renaming rules where it has them (transformers 5 loads legacy names, e.g. SegFormer's ``encoder.block``), and
    its base-model prefix added or removed as ``from_pretrained`` does."""
    prefix = net.base_model_prefix

    def with_prefix(key: str) -> str:
        if key.startswith(prefix + ".") and key[len(prefix) + 1:] in own:
            return key[len(prefix) + 1:]
        return f"{prefix}.{key}" if key not in own and f"{prefix}.{key}" in own else key

    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

        mapping = get_model_conversion_mapping(net)
    except Exception:  # an older transformers: checkpoints carry the modules' names
        return lambda key: (with_prefix(key), False)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]

    def rename(key: str) -> tuple[str, bool]:
        renamed, pattern = rename_source_key(key, renamings, converters, prefix, own)
        if renamed not in own and with_prefix(key) in own:
            return with_prefix(key), False
        return renamed, pattern is not None

    return rename


def _verify(folder: Path, weights: str | None, name: str) -> list[str]:
    """The tensors of the model that its weights leave uninitialised (transformers would initialise them at
    random), found on the meta device; a UserError for tensors of another shape."""
    import torch
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        with torch.device("meta"):
            net = _auto(config.model_type).from_config(config)
    except Exception as exc:
        raise UserError(f"hf:{name}: transformers cannot build the model of '{folder}': {exc}".splitlines()[0]) \
            from None
    own = own_shapes(net)
    if weights is not None:  # segbench's own save of the fine-tuned network: its module names
        given = state_shapes(weights)
        if config.model_type in UNIVERSAL:  # saved from universal.Semantic, which holds the network as `model`
            given = {k.removeprefix("model."): v for k, v in given.items()}
    else:
        given, rename = {}, _renamer(net, own)
        for key, shape in _folder_shapes(folder, name).items():
            renamed, converted = rename(key)
            # a tensor that transformers converts (fuses, splits) on load takes the shape of its target
            given[renamed] = own.get(renamed, shape) if converted else shape
    origin = f"'{weights}'" if weights is not None else f"of '{folder}'"
    missing = compare(own, given, origin, f"hf:{name}", strict=weights is not None)
    ignored = [re.compile(p) for p in (getattr(net, "_keys_to_ignore_on_load_missing", None) or ())]
    tied = getattr(net, "_tied_weights_keys", None) or ()
    return [k for k in missing if k not in tied and not any(p.search(k) for p in ignored)]


def check(name: str) -> None:
    """Raise a UserError unless ``name`` is a usable transformers folder or cached hub id."""
    _segmentation_types()
    _config(hub.locate(NAME, name), name)


def _logits(output: Any) -> Any:
    return output.logits


def _normalisation(folder: Path, name: str) -> Normalisation:
    """The input normalisation of the folder's image processor, else ImageNet's."""
    if (folder / PREPROCESSOR).is_file():
        return from_image_processor(read_json(folder / PREPROCESSOR, f"hf:{name}"), f"{PREPROCESSOR} of {name}")
    # transformers 5 saves a whole processor's image processor inside processor_config.json
    nested = read_json(folder / PROCESSOR, f"hf:{name}").get("image_processor") \
        if (folder / PROCESSOR).is_file() else None
    if isinstance(nested, dict):
        return from_image_processor(nested, f"{PROCESSOR} of {name}")
    return Normalisation(origin=f"ImageNet (no {PREPROCESSOR} in {name})")


def resolve(name: str, weights: str | None) -> Resolved:
    """Read the classes and normalisation of ``hf:NAME`` from its folder."""
    _segmentation_types()
    folder = hub.locate(NAME, name)
    config = _config(folder, name)
    labels = labels_of(config.get("id2label") or {}, f"hf:{name}")
    generic = all(re.fullmatch(r"LABEL_\d+", label) for label in labels)
    try:
        num_outputs = len(labels) or int(config.get("num_labels", 2))
    except (TypeError, ValueError):
        raise UserError(f"hf:{name}: num_labels must be an integer, got {config.get('num_labels')!r}") from None
    normalisation = _normalisation(folder, name)
    record = {"kind": "folder" if Path(name).expanduser().is_dir() else "hub", "path": str(folder),
              "model_type": config["model_type"]}
    if weights is not None:
        record["fine_tuned"] = weights
    universal = None
    if config["model_type"] in UNIVERSAL:
        from segbench.models.sources.universal import Universal

        universal = Universal(folder, config, f"hf:{name}")  # OneFormer's task input is read (or refused) here
        record |= universal.record

    def build(accepted: bool = False) -> tuple[Any, Any]:
        quiet_progress()
        try:
            net = _auto(config["model_type"]).from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:
            raise UserError(f"hf:{name}: transformers cannot load '{folder}': {exc}".splitlines()[0]) from None
        net, logits = universal.wrap(net) if universal is not None else (net, _logits)
        if weights is not None:
            load_state(net, read_state(weights), weights, f"hf:{name}", accepted)
        return net, logits

    classes = None if generic else labels
    return Resolved(NAME, name, classes, num_outputs, normalisation, record, build,
                    lambda: _verify(folder, weights, name),
                    size_divisor=universal.size_divisor if universal is not None else 1)


def fetch(name: str) -> str:
    """Download hub model ``name`` into the Hugging Face cache."""
    _segmentation_types()
    return hub.fetch(NAME, name)


def names() -> list[tuple[str, str]]:
    return [("hf:FOLDER_OR_HUB_ID", "[transformers] AutoModelForSemanticSegmentation: SegFormer, UperNet, DPT, "
                                    "BEiT, MobileViT, ...; AutoModelForUniversalSegmentation: Mask2Former, "
                                    "MaskFormer, OneFormer, EoMT (a save_pretrained folder or a cached hub id)")]


SOURCE = Source(NAME, "transformers AutoModelForSemanticSegmentation and AutoModelForUniversalSegmentation", check,
                resolve, fetch, names)
