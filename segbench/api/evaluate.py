"""``segbench.evaluate(model, ...)``: an ``nn.Module`` held in memory, evaluated through the suite's own pipeline
(the code ``segbench eval`` runs on a checkpoint), its results returned in memory.

Safe to call from a program: every argument and the model itself are checked before anything is created (a
UserError otherwise); nothing is written and no MLflow store is opened unless asked (``output_dir=``,
``tracking=``); the model is held only for the call, in the call's own context (two threads, or twenty names,
never meet; nothing keeps the module alive afterwards); its train/eval mode and device are restored; a
``sys.exit`` in the model's code is reported as a UserError, and Ctrl-C stays a KeyboardInterrupt."""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segbench.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from torch import nn

    from segbench.api.results import Results
    from segbench.models.normalisation import Normalisation

NAME = re.compile(r"[A-Za-z0-9_.+-]{1,64}")  # a model name that is also a safe file and MLflow run name
OWN_KEYS = ("models=", "models.", "train.enabled=")  # what evaluate decides itself
CHECK_SIZE = 64  # side of the trial image of the model check


def evaluate(model: nn.Module, suite: str | Path = "synthetic", classes: Sequence[str] | None = None,
             normalisation: Normalisation | dict | None = None, overrides: Sequence[str] = (), name: str = "model",
             output_dir: str | Path | None = None, tracking: bool | str = False) -> Results:
    """Evaluate ``model`` on ``suite``'s validation split with the suite's evaluation mode, metrics and passport,
    as ``segbench eval`` evaluates a checkpoint; return the typed results.

    ``model`` maps N x 3 x H x W float32 images, normalised as ``normalisation`` says (a ``Normalisation``, or a
    dict with ``mean``, ``std`` and optionally ``input_range`` [LOW, HIGH] or ``input_scale``; default ImageNet's,
    as segbench's data), to N x K x H x W logits (a tensor, or a dict or object with ``out`` or ``logits``).
    ``classes`` names its K outputs, matched to the suite's classes by name as for published models; without it
    the outputs are taken to be the suite's classes, in order. ``name``: the model is recorded as
    ``memory:NAME``. ``overrides``: ``key=value`` settings as on the command line (``bench.enabled=true`` times
    it too). ``output_dir``: also write results.json and the per-class CSV there, as the CLI does;
    ``tracking``: log to MLflow (True: the default store; a string: that tracking URI).
    """
    import torch

    from segbench.api.results import typed
    from segbench.models.sources.memory import Held, holding
    from segbench.pipeline.runner import run_suite
    from segbench.pipeline.validation import load_config

    if not isinstance(model, torch.nn.Module):
        raise UserError(f"evaluate: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(f"evaluate: name={name!r}: expected a short name of letters, digits and _ . + - "
                        "(at most 64)")
    items = overrides_of(suite, overrides)
    if any(item.startswith(OWN_KEYS) for item in items):
        raise UserError("evaluate: the model is the one passed in and is not trained; remove models= and "
                        "train.enabled= from the overrides")
    folder = output_dir is not None or any(item.startswith("output_dir=") for item in items)
    items += _output_and_tracking(output_dir, tracking, items)
    if not folder and any(item.startswith("eval.save_predictions=true") for item in items):
        raise UserError("evaluate: eval.save_predictions=true writes PNGs: name the folder with output_dir=")
    norm = normalisation_of(normalisation)
    names = _classes(classes)
    device = _device(model)
    if not any(item.startswith("device=") for item in items):
        items.append(f"device={device}")
    with _restored(model):
        outputs = check_model(model, device, len(names) if names is not None else None)
        held = Held(model, names, outputs, norm)
        with holding(name, held) as spec, exits_reported("evaluate: the model's code", "during the evaluation"):
            del held
            cfg = load_config([*items, "train.enabled=false", f"models=[{spec}]",
                               *([] if any(i.startswith("bench.enabled=") for i in items) else
                                 ["bench.enabled=false"])])
            results, _ = run_suite(cfg, folder=folder)
    return typed(results)


@contextmanager
def exits_reported(who: str, when: str) -> Iterator[None]:
    """A ``sys.exit`` in user code (a model, a plugin) as a UserError that says so: a program calling the API is
    never ended by it, nor told that all went well."""
    try:
        yield
    except SystemExit as exc:
        raise UserError(f"{who} called sys.exit({exc.code!r}) {when}") from None


def overrides_of(suite: Any, overrides: Any) -> list[str]:
    """``suite=`` and the ``key=value`` overrides, checked for type."""
    if not isinstance(suite, (str, Path)):
        raise UserError(f"suite: expected a suite name or a suite file path, got {type(suite).__name__}")
    if isinstance(overrides, (str, bytes)) or not isinstance(overrides, Sequence):
        raise UserError(f"overrides: expected a list of key=value strings, got {overrides!r}"[:200])
    bad = [item for item in overrides if not isinstance(item, str) or "=" not in item]
    if bad:
        raise UserError(f"overrides: expected key=value strings, got {bad[0]!r}"[:200])
    items = list(overrides)
    return ([f"suite={suite}"] if not any(i.startswith("suite=") for i in items) else []) + items


def _output_and_tracking(output_dir: Any, tracking: Any, items: list[str]) -> list[str]:
    """The overrides that write a folder and log to MLflow only where asked."""
    added = []
    if output_dir is not None:
        if not isinstance(output_dir, (str, Path)) or not str(output_dir):
            raise UserError(f"evaluate: output_dir: expected a folder path, got {output_dir!r}")
        added.append(f"output_dir={output_dir}")
    if isinstance(tracking, bool):
        if not tracking and not any(i.startswith("tracking.") for i in items):
            added.append("tracking.enabled=false")
        elif tracking:
            added.append("tracking.enabled=true")
    elif isinstance(tracking, str) and tracking:
        added += ["tracking.enabled=true", f"tracking.uri={tracking}"]
    else:
        raise UserError(f"evaluate: tracking: expected True, False or a tracking URI, got {tracking!r}")
    return added


def normalisation_of(value: Any) -> Normalisation:
    """The normalisation the model expects, through the checker suite files use (finite means, positive stds,
    an input range LOW < HIGH)."""
    from segbench.models.normalisation import IMAGENET, Normalisation, checked

    where = "evaluate: normalisation"
    if value is None:
        return IMAGENET
    if isinstance(value, Normalisation):
        return checked(value.mean, value.std, value.input_range, value.origin, where)
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a Normalisation or a dict with mean and std, got {type(value).__name__}")
    unknown = sorted(map(str, set(value) - {"mean", "std", "input_range", "input_scale"}))
    if unknown or not {"mean", "std"} <= set(value) or {"input_range", "input_scale"} <= set(value):
        raise UserError(f"{where}: expected the keys mean, std and optionally input_range (or input_scale), got "
                        f"{', '.join(map(str, value)) or 'none'}")
    scale = value.get("input_scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise UserError(f"{where}: input_scale must be a number, got {scale!r}")
    return checked(value["mean"], value["std"], value.get("input_range", (0.0, scale)),
                   "given to segbench.evaluate", where)


def _classes(classes: Any) -> tuple[str, ...] | None:
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or \
            not all(isinstance(c, str) and c for c in classes):
        raise UserError(f"evaluate: classes: expected a list of class names, got {classes!r}"[:200])
    if len(set(classes)) != len(classes) or not classes:
        raise UserError("evaluate: classes: expected distinct class names, one per output channel")
    return tuple(classes)


def _device(model: nn.Module) -> str:
    """The device the model lives on (cpu for a model without tensors); a UserError on meta or several."""
    devices = {t.device for t in (*model.parameters(), *model.buffers())}
    if any(d.type == "meta" for d in devices):
        raise UserError("evaluate: the model lives on the meta device (it has no weights); load them first, e.g. "
                        "model.to_empty(device='cpu') then model.load_state_dict(...)")
    if len(devices) > 1:
        raise UserError(f"evaluate: the model's tensors are on several devices ({', '.join(sorted(map(str, devices)))}"
                        "); move it to one with model.to(device)")
    return str(devices.pop()) if devices else "cpu"


@contextmanager
def _restored(model: nn.Module) -> Iterator[None]:
    """Give the model back as it came: every submodule's train/eval mode, and its device."""
    modes = [(module, module.training) for module in model.modules()]
    tensor = next(model.parameters(), None)
    device = tensor.device if tensor is not None else None
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        if device is not None and next(model.parameters()).device != device:
            model.to(device)


def check_model(model: nn.Module, device: str, num_classes: int | None) -> int:
    """Prove the model does what evaluation needs, on one 1 x 3 x 64 x 64 batch: float32 weights, a forward that
    does not raise, N x K x H x W floating-point logits (K = ``num_classes`` when the classes are named); return
    K."""
    import torch

    from segbench.models.sources.memory import logits_of

    dtypes = {t.dtype for t in model.parameters() if t.is_floating_point()}
    if dtypes - {torch.float32}:
        found = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        raise UserError(f"evaluate: the model's weights are {found}; segbench feeds float32 images: convert it with "
                        "model.float() (half precision is timed with bench.precision=fp16)")
    try:
        with torch.no_grad():
            out = logits_of(model.eval()(torch.zeros(1, 3, CHECK_SIZE, CHECK_SIZE, device=device)))
    except (Exception, SystemExit) as exc:
        raise UserError(f"evaluate: the model's forward pass on a 1x3x{CHECK_SIZE}x{CHECK_SIZE} batch raised "
                        f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}") from None
    if not isinstance(out, torch.Tensor):
        raise UserError(f"evaluate: the model returned a {type(out).__name__}; expected N x K x H x W logits (a "
                        "tensor, or a dict with 'out' or 'logits')")
    if out.dim() != 4 or out.shape[0] != 1:
        raise UserError(f"evaluate: the model returned a tensor of shape {tuple(out.shape)} for a 1x3x{CHECK_SIZE}x"
                        f"{CHECK_SIZE} batch; expected N x K x H x W logits")
    if not out.is_floating_point() or out.dtype != torch.float32:
        raise UserError(f"evaluate: the model returned {str(out.dtype).removeprefix('torch.')} logits; expected "
                        "float32")
    if num_classes is not None and out.shape[1] != num_classes:
        raise UserError(f"evaluate: the model outputs {out.shape[1]} channels, but classes names {num_classes}; "
                        "expected one output channel per class")
    return int(out.shape[1])
