"""``segbench.run``, ``segbench.bench`` and ``segbench.evaluate``: what the CLI does, from Python, returning the
typed results (``segbench.results.schema.Results``, with ``.leaderboard()``) and writing the same results.json and
MLflow runs. A user's mistake raises ``segbench.UserError`` with the CLI's one-line message; never SystemExit."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segbench.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from segbench.results.schema import Results

def _overrides(suite: str | Path, overrides: Sequence[str]) -> list[str]:
    if isinstance(overrides, str):
        raise UserError(f"overrides: expected a list of key=value strings, got the string {overrides!r}")
    items = [str(item) for item in overrides]
    return ([f"suite={suite}"] if not any(i.startswith("suite=") for i in items) else []) + items


def _results(path: Path | None) -> Results | None:
    from segbench.results.schema import read_results

    return read_results(path) if path is not None else None


def run(suite: str | Path = "synthetic", overrides: Sequence[str] = ()) -> Results | None:
    """Train, evaluate and time every model of ``suite`` as ``segbench run`` does; return its results (None on the
    other ranks of a torchrun job, which write nothing)."""
    from segbench.pipeline.runner import run as run_suite
    from segbench.pipeline.validation import load_config

    return _results(run_suite(load_config(_overrides(suite, overrides))))


def bench(suite: str | Path = "synthetic", overrides: Sequence[str] = ()) -> Results | None:
    """Time every model of ``suite`` as ``segbench bench`` does; return its results."""
    from segbench.pipeline.runner import bench as bench_suite
    from segbench.pipeline.validation import load_config

    return _results(bench_suite(load_config(_overrides(suite, overrides))))


def evaluate(model: nn.Module, suite: str | Path = "synthetic", classes: Sequence[str] | None = None,
             normalisation: Any = None, overrides: Sequence[str] = (), name: str = "model") -> Results | None:
    """Evaluate an ``nn.Module`` held in memory on ``suite``'s validation split, with the suite's evaluation mode,
    metrics and passport, as ``segbench eval`` evaluates a checkpoint (no file needed).

    ``model`` maps N x 3 x H x W images, normalised as ``normalisation`` says (a ``Normalisation``, or a dict with
    ``mean``, ``std`` and optionally ``input_scale``; default ImageNet's, as segbench's data), to N x K x H x W
    logits (a tensor, or a dict or object with ``out`` or ``logits``). ``classes`` names its K outputs, matched to
    the suite's classes by name as for published models; without it the outputs are taken to be the suite's
    classes, in order, when K equals their number. The model is recorded as ``memory:NAME``.
    """
    import torch

    from segbench.models.sources.memory import Held, hold
    from segbench.pipeline.runner import run as run_suite
    from segbench.pipeline.validation import load_config

    if not isinstance(model, torch.nn.Module):
        raise UserError(f"evaluate: expected a torch.nn.Module, got {type(model).__name__}")
    if not name or any(c in name for c in " :/\\[],="):
        raise UserError(f"evaluate: name={name!r}: expected a short name without spaces or any of : / \\ [ ] , =")
    norm = _normalisation(normalisation)
    items = _overrides(suite, overrides)
    if any(item.startswith(("models=", "models.")) for item in items):
        raise UserError("evaluate: the model is the one passed in; remove models= from the overrides")
    classes = tuple(str(c) for c in classes) if classes is not None else None
    spec = hold(name, Held(model, classes, len(classes) if classes is not None else _outputs(model, norm), norm))
    cfg = load_config([*items, "train.enabled=false", f"models=[{spec}]",
                       *([] if any(i.startswith("bench.enabled=") for i in items) else ["bench.enabled=false"])])
    return _results(run_suite(cfg))


def _normalisation(value: Any) -> Any:
    from segbench.models.normalisation import IMAGENET, Normalisation

    if value is None:
        return IMAGENET
    if isinstance(value, Normalisation):
        return value
    if isinstance(value, dict):
        unknown = set(value) - {"mean", "std", "input_scale"}
        if unknown or not {"mean", "std"} <= set(value):
            raise UserError(f"evaluate: normalisation={value!r}: expected a dict with mean, std (three numbers "
                            "each) and optionally input_scale")
        mean, std = tuple(float(v) for v in value["mean"]), tuple(float(v) for v in value["std"])
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise UserError(f"evaluate: normalisation={value!r}: expected three means and three positive stds")
        return Normalisation(mean, std, float(value.get("input_scale", 1.0)), "given to segbench.evaluate")
    raise UserError(f"evaluate: normalisation: expected a Normalisation or a dict, got {type(value).__name__}")


def _outputs(model: nn.Module, normalisation: Any) -> int:
    """The number of output channels of ``model`` (one small forward pass on its own device)."""
    import torch

    from segbench.models.sources.memory import logits_of

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    try:
        with torch.no_grad():
            out = logits_of(model.eval()(torch.zeros(1, 3, 64, 64, device=device)))
    except Exception as exc:
        raise UserError(f"evaluate: the model's forward pass on a 1x3x64x64 batch raised {type(exc).__name__}: "
                        f"{(str(exc).splitlines() or [''])[0]}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        raise UserError("evaluate: the model must return N x K x H x W logits (or a dict with 'out' or 'logits')")
    return int(out.shape[1])
