"""timm's published backbone weights (``backbone_weights.NAME=timm``): found in the Hugging Face cache, fetched into
it only when that spelling asks for them and the network is allowed, with the normalisation they were trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segbench.errors import UserError
from segbench.models.normalisation import Normalisation

TIMM = "timm"  # the value of backbone_weights.NAME that asks for timm's published weights
FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub repositories hold, in order of preference


@dataclass(frozen=True)
class PublishedBackbone:
    """timm's published weights of one backbone: where they are and what input they expect."""

    backbone: str
    hub_id: str  # e.g. timm/resnet18.a1_in1k (the backbone's default pretrained tag)
    file: Path
    normalisation: Normalisation


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def published_backbone(backbone: str) -> PublishedBackbone:
    """timm's published weights for ``backbone`` from the Hugging Face cache, downloaded into it first unless the
    hub is offline (``HF_HUB_OFFLINE=1``), in which case a missing file is a UserError saying how to fetch it."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(backbone)
    if cfg is None or not cfg.hf_hub_id:
        raise UserError(f"backbone_weights.{backbone}={TIMM}: timm publishes no weights for '{backbone}' on the "
                        "Hugging Face hub; name a local weights file instead")
    hub_id = cfg.hf_hub_id
    normalisation = Normalisation(tuple(cfg.mean), tuple(cfg.std), 1.0, f"timm pretrained_cfg of {hub_id}")
    for name in FILES:
        cached = try_to_load_from_cache(hub_id, name)
        if isinstance(cached, str):
            return PublishedBackbone(backbone, hub_id, Path(cached), normalisation)
    if _offline():
        raise UserError(f"backbone_weights.{backbone}={TIMM}: timm's weights {hub_id} are not in the Hugging Face "
                        f"cache ({constants.HF_HUB_CACHE}) and the hub is offline; fetch them on a machine with "
                        f"network (python -c \"import timm; timm.create_model('{backbone}', pretrained=True)\") and "
                        "copy its cache folder here, or name a local weights file")
    try:
        path = hf_hub_download(hub_id, FILES[0])
    except Exception as exc:  # no network, no such file: huggingface_hub raises several kinds
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"backbone_weights.{backbone}={TIMM}: cannot fetch {hub_id} ({first})") from None
    return PublishedBackbone(backbone, hub_id, Path(path), normalisation)
