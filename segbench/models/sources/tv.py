"""torchvision's segmentation models, ``torchvision:NAME`` (fcn_resnet50, deeplabv3_resnet50, ...).

Built with ``weights=None, weights_backbone=None`` (torchvision never reaches for the network), then
loaded from a local state dict (the suite's ``weights.torchvision:NAME=FILE``) or from torchvision's
published weights in torch's own cache (``$TORCH_HOME/hub/checkpoints``), which ``download=true``
fills. The ``out`` head is evaluated, ``aux`` is ignored (kept when the state dict has it, so the
checkpoint loads exactly). Published weights carry their categories (``weights.meta["categories"]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segbench.errors import UserError, closest
from segbench.models.normalisation import Normalisation
from segbench.models.sources.base import Resolved, Source, compare, load_state, own_shapes, read_state

NAME = "torchvision"


def builders() -> list[str]:
    """The builders of ``torchvision.models.segmentation``."""
    from torchvision.models import list_models, segmentation

    return sorted(list_models(module=segmentation))


def published_weights(name: str) -> Any:
    """The weights enum member torchvision publishes for ``name`` (its DEFAULT)."""
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT


def cached_file(name: str) -> Path:
    """Where torch's hub cache keeps the published weights of ``name``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(published_weights(name).url).name


def check(name: str) -> None:
    """Raise a UserError unless ``name`` is a torchvision segmentation builder."""
    if name not in builders():
        hints = closest(name, builders())
        hint = f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
        raise UserError(f"unknown torchvision model '{name}'{hint} (see `segbench list models`)")


def _num_outputs(name: str, state: dict, origin: str) -> int:
    key = "classifier.high_classifier.weight" if name.startswith("lraspp") else "classifier.4.weight"
    if key not in state:
        raise UserError(f"'{origin}' is not a state dict of torchvision's {name} (it has no '{key}')")
    return int(state[key].shape[0])


def _out(output: dict) -> Any:
    return output["out"]


def resolve(name: str, weights: str | None) -> Resolved:
    """Locate the weights of ``torchvision:NAME`` (local file, else torch's cache) and read their classes."""
    from segbench.models.checkpoints import sha256_file, weights_file

    check(name)
    published = published_weights(name)
    if weights is not None:
        path = weights_file(Path(weights))
        classes = None
        normalisation = Normalisation(origin="ImageNet (torchvision's convention; a local state dict)")
        record = {"kind": "local", "path": str(path), "sha256": sha256_file(path)}
    else:
        path = cached_file(name)
        if not path.is_file():
            raise UserError(f"torchvision:{name}: its published weights {published} are not in torch's cache "
                            f"({path}); pass download=true to fetch them, or download {published.url} on a machine "
                            f"with internet into {path.parent} here, or name a local state dict with "
                            f"weights.torchvision:{name}=FILE")
        classes = tuple(published.meta["categories"])
        preset = published.transforms()
        normalisation = Normalisation(tuple(preset.mean), tuple(preset.std), 1.0, f"torchvision {published} transforms")
        record = {"kind": "published", "weights": str(published), "url": published.url, "path": str(path)}
    state = read_state(path)
    num_outputs = _num_outputs(name, state, str(path))
    has_aux = any(k.startswith("aux_classifier.") for k in state)

    def network() -> Any:
        from torchvision.models import get_model_builder

        extra = {"aux_loss": True} if has_aux else {}
        return get_model_builder(name)(weights=None, weights_backbone=None, num_classes=num_outputs, **extra)

    def build(accepted: bool = False) -> tuple[Any, Any]:
        net = network()
        load_state(net, state, str(path), f"torchvision's {name}", accepted)
        return net, _out

    def verify() -> list[str]:
        import torch

        with torch.device("meta"):
            net = network()
        return compare(own_shapes(net), {k: tuple(v.shape) for k, v in state.items()}, f"'{path}'",
                       f"torchvision:{name}")

    return Resolved(NAME, name, classes, num_outputs, normalisation, record, build, verify)


def fetch(name: str) -> str:
    """Download the published weights of ``name`` into torch's cache (checked against the hash in their name)."""
    import torch

    check(name)
    path = cached_file(name)
    if not path.is_file():
        url = published_weights(name).url
        match = torch.hub.HASH_REGEX.search(path.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None)
        except Exception as exc:
            raise UserError(f"cannot download {url}: {exc}".splitlines()[0]) from None
    return str(path)


def names() -> list[tuple[str, str]]:
    out = []
    for name in builders():
        weights = published_weights(name)
        metrics = next(iter(weights.meta.get("_metrics", {}).values()), {})
        claim = f", claimed mIoU {metrics['miou']}" if "miou" in metrics else ""
        out.append((f"{NAME}:{name}", f"[torchvision] weights {weights} ({len(weights.meta['categories'])} "
                                      f"classes{claim})"))
    return out


SOURCE = Source(NAME, "torchvision.models.segmentation builders", check, resolve, fetch, names)
