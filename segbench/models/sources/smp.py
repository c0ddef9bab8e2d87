"""segmentation-models-pytorch models saved with ``save_pretrained``, ``smp:FOLDER`` or ``smp:OWNER/NAME`` (a hub
id already in the Hugging Face cache; ``download=true`` fetches it).

The model is rebuilt from its ``config.json`` with ``encoder_weights=None`` (smp would otherwise fetch
the encoder's ImageNet weights first) and its ``model.safetensors`` loaded over it. Classes: the
config's ``class_names`` or ``id2label`` when present (smp itself stores only their number).
Normalisation: a ``preprocessor_config.json`` when present, else the mean and std of the encoder's
pretrained weights named in the config, else ImageNet's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import segbench.models.sources.hub as hub
from segbench.errors import UserError, closest
from segbench.models.normalisation import Normalisation, from_image_processor
from segbench.models.sources.base import Resolved, Source, compare, load_state, own_shapes, read_state, state_shapes
from segbench.models.sources.hub import labels_of, read_json

NAME = "smp"
WEIGHTS = "model.safetensors"


def _config(folder: Path, name: str) -> dict:
    """The folder's config.json, checked to be an smp save_pretrained folder with weights."""
    path = folder / "config.json"
    if not path.is_file():
        raise UserError(f"smp:{name}: '{folder}' is not a segmentation-models-pytorch save_pretrained folder "
                        "(it has no config.json)")
    config = read_json(path, f"smp:{name}")
    if "_model_class" not in config:
        hint = f"; it is a transformers folder: name it hf:{name}" if "model_type" in config else ""
        raise UserError(f"smp:{name}: '{path}' names no smp model class (_model_class){hint}")
    import segmentation_models_pytorch as smp

    if not isinstance(getattr(smp, str(config["_model_class"]), None), type):
        raise UserError(f"smp:{name}: '{config['_model_class']}' is not an architecture of "
                        f"segmentation-models-pytorch {smp.__version__}")
    _check_encoder(config.get("encoder_name", "resnet34"), name)
    if not (folder / WEIGHTS).is_file():
        raise UserError(f"smp:{name}: '{folder}' holds no {WEIGHTS}")
    return config


def _check_encoder(encoder: Any, name: str) -> None:
    """A UserError unless ``encoder`` is one of smp's encoders or ``tu-`` and a timm model."""
    import segmentation_models_pytorch as smp

    if isinstance(encoder, str) and encoder.startswith("tu-"):
        import timm

        if timm.is_model(encoder[3:]):
            return
        hints = closest(encoder[3:], timm.list_models())
        hint = f"; did you mean 'tu-{hints[0]}'?" if hints else ""
        raise UserError(f"smp:{name}: encoder_name '{encoder}' names no timm model{hint}")
    known = sorted(smp.encoders.encoders)
    if encoder not in known:
        hints = closest(str(encoder), known)
        hint = f"; did you mean '{hints[0]}'?" if hints else ""
        raise UserError(f"smp:{name}: encoder_name '{encoder}' is not an encoder of segmentation-models-pytorch "
                        f"{smp.__version__}{hint} (or tu-TIMM_MODEL)")


def check(name: str) -> None:
    """Raise a UserError unless ``name`` is a usable smp folder or cached hub id."""
    _config(hub.locate(NAME, name), name)


def _class_names(config: dict, name: str) -> tuple[str, ...] | None:
    if isinstance(config.get("class_names"), list):
        return tuple(str(c) for c in config["class_names"])
    if isinstance(config.get("id2label"), dict):
        return labels_of(config["id2label"], f"smp:{name}")
    return None


def _normalisation(folder: Path, config: dict, name: str) -> Normalisation:
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        return from_image_processor(read_json(processor, f"smp:{name}"), f"preprocessor_config.json of {name}")
    encoder, weights = config.get("encoder_name", ""), config.get("encoder_weights")
    if weights:
        if encoder.startswith("tu-"):
            import timm

            pretrained = timm.get_pretrained_cfg(encoder[3:])
            if pretrained is not None and pretrained.mean:
                return Normalisation(tuple(pretrained.mean), tuple(pretrained.std), 1.0,
                                     f"timm pretrained_cfg of {encoder[3:]}")
        else:
            import segmentation_models_pytorch as smp

            settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {}).get(weights)
            if settings and "mean" in settings:
                scale = 255.0 if max(settings.get("input_range", [0, 1])) > 1 else 1.0
                return Normalisation(tuple(settings["mean"]), tuple(settings["std"]), scale,
                                     f"smp encoder {encoder} ({weights}) settings")
    return Normalisation(origin=f"ImageNet (smp's convention; {name} names no preprocessing)")


def _logits(output: Any) -> Any:
    return output[0] if isinstance(output, (tuple, list)) else output  # aux_params adds a classification head


def resolve(name: str, weights: str | None) -> Resolved:
    """Read the classes and normalisation of ``smp:NAME`` from its folder."""
    folder = hub.locate(NAME, name)
    config = _config(folder, name)
    classes = _class_names(config, name)
    num_outputs = int(config.get("classes", len(classes or ()) or 1))
    record = {"kind": "folder" if Path(name).expanduser().is_dir() else "hub", "path": str(folder),
              "model_class": config["_model_class"], "encoder": config.get("encoder_name")}
    if weights is not None:
        record["fine_tuned"] = weights

    file = weights if weights is not None else str(folder / WEIGHTS)

    def network() -> Any:
        import segmentation_models_pytorch as smp

        kwargs = {k: v for k, v in config.items()
                  if not k.startswith("_") and k not in ("class_names", "id2label", "label2id")}
        try:
            return getattr(smp, config["_model_class"])(**(kwargs | {"encoder_weights": None}))
        except Exception as exc:  # smp raises several kinds for arguments its architecture does not take
            raise UserError(f"smp:{name}: segmentation-models-pytorch cannot build {config['_model_class']} from "
                            f"'{folder / 'config.json'}': {exc}".splitlines()[0]) from None

    def build(accepted: bool = False) -> tuple[Any, Any]:
        net = network()
        load_state(net, read_state(file), file, f"smp:{name}", accepted)
        return net, _logits

    def verify() -> list[str]:
        import torch

        with torch.device("meta"):
            net = network()
        return compare(own_shapes(net), state_shapes(file), f"'{file}'", f"smp:{name}")

    normalisation = _normalisation(folder, config, name)
    return Resolved(NAME, name, classes, num_outputs, normalisation, record, build, verify,
                    size_divisor=32)  # smp's encoders need sides divisible by 32


def fetch(name: str) -> str:
    """Download hub model ``name`` into the Hugging Face cache."""
    return hub.fetch(NAME, name)


def names() -> list[tuple[str, str]]:
    return [("smp:FOLDER_OR_HUB_ID", "[smp] a segmentation-models-pytorch save_pretrained folder or cached hub id")]


SOURCE = Source(NAME, "segmentation-models-pytorch save_pretrained folders", check, resolve, fetch, names)
