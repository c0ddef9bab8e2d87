"""Whether a suite can evaluate and time an exported file as the file allows, checked at config time.

- Height and width the file fixes: every image the evaluation feeds must have them. ``eval.mode=slide`` with
  ``eval.window`` equal to them always fits (every window is cut at that size; smaller images are padded to it);
  ``whole`` and ``resize`` fit only where the sizes they feed are known to be those (the synthetic data set, whose
  images are ``data.image_size`` square). Otherwise: a refusal naming the shape and the fix.
- A fixed (or bounded) batch axis: evaluation adapts (``FileNetwork`` feeds chunks of that size, zero-padded), so
  ``eval.batch_size`` is free; timing does not (a batch of 8 timed as 8 runs of 1 would be mislabelled), so
  ``bench.batch_sizes`` must fit, and ``bench.input_size`` must be the fixed size.
- Backends: an ``onnx:`` file already runs on ONNX Runtime; its ``eager`` row is the file itself, and the other
  backends (re-exporting what was exported, compiling a call into ONNX Runtime) do not apply: refused. A TorchScript
  or torch.export file is a torch module: every backend applies (one that cannot export it is recorded as skipped).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segbench.errors import UserError

if TYPE_CHECKING:
    from segbench.config.schema import SuiteConfig

SYNTHETIC = "synthetic"  # the data set whose image size the config states (data.image_size, square)


def _fed_sizes(cfg: "SuiteConfig") -> set[tuple[int, int]] | None:
    """The (height, width) of every input the evaluation hands the model, or None where they depend on the data
    set's images (not known before they are read)."""
    from segbench.data.base import keep_ratio_size

    mode = cfg.eval
    if mode.mode == "slide" and mode.window:
        return {(int(mode.window[0]), int(mode.window[1]))}
    if cfg.data.name != SYNTHETIC:
        return None
    side = cfg.data.image_size
    sizes = set()
    for scale in mode.scales:
        if mode.mode == "resize" and mode.resize:
            sizes.add(keep_ratio_size(side, side, (mode.resize[0] * scale, mode.resize[1] * scale)))
        else:
            sizes.add((max(1, int(side * scale + 0.5)),) * 2)
    return sizes


def _fits(size: tuple[int, int], fixed: tuple[int | None, int | None]) -> bool:
    return all(f is None or f == s for s, f in zip(size, fixed))


def _shape(fixed: tuple[int | None, int | None]) -> str:
    return " x ".join("?" if d is None else str(d) for d in fixed)


def check_fit(model: str, source: str, input_shape: tuple[int | None, ...] | None, max_batch: int | None,
              cfg: "SuiteConfig") -> None:
    """Raise a UserError (one line: the file's shape, what the suite would feed, the fix) unless the suite's
    evaluation and timing can feed ``model`` what its file fixes, on backends that apply to it."""
    if source == "onnx":
        for key, names, used in (("eval.backends", cfg.eval.backends, True),
                                 ("bench.backends", cfg.bench.backends, cfg.bench.enabled)):
            other = [b for b in names if b != "eager"]
            if used and other:
                raise UserError(f"{key}: model '{model}' runs its ONNX file on ONNX Runtime already (its eager row "
                                f"is the file itself); backend {', '.join(other)} does not apply to it: set "
                                f"{key}=[eager], or evaluate it in a suite of its own")
        if cfg.bench.enabled and cfg.bench.precision != "fp32":
            raise UserError(f"bench.precision: model '{model}' runs its ONNX file at the precision it was exported "
                            f"with, not under {cfg.bench.precision} autocast: set bench.precision=fp32")
    if input_shape is None:
        return
    batch, _, height, width = input_shape
    fixed = (height, width)
    window = [height or width, width or height]
    fix = f"eval.mode=slide eval.window={_list(window)} eval.stride={_list(window)}"
    if fixed != (None, None):
        sizes = _fed_sizes(cfg)
        if sizes is None:
            raise UserError(f"{model}: the file fixes its input to {_shape(fixed)} (height x width), but "
                            f"eval.mode={cfg.eval.mode} feeds the data set's own image sizes: set {fix}")
        wrong = sorted(s for s in sizes if not _fits(s, fixed))
        if wrong:
            fed = ", ".join(f"{h} x {w}" for h, w in wrong)
            raise UserError(f"{model}: the file fixes its input to {_shape(fixed)} (height x width), but "
                            f"eval.mode={cfg.eval.mode} would feed it {fed}: set {fix}")
    if not cfg.bench.enabled:
        return
    limit = batch or max_batch
    wrong_batches = [b for b in cfg.bench.batch_sizes if (b != batch if batch else limit is not None and b > limit)]
    if wrong_batches:
        takes = f"exactly {batch}" if batch else f"at most {limit}"
        wanted = [batch] if batch else sorted({min(b, limit) for b in cfg.bench.batch_sizes})
        raise UserError(f"bench.batch_sizes: the file of model '{model}' takes batches of {takes} images, not "
                        f"{wrong_batches[0]}: set bench.batch_sizes={_list(wanted)}")
    if fixed != (None, None):
        timed = cfg.bench.input_size or ((cfg.data.image_size,) * 2 if cfg.data.name == SYNTHETIC else None)
        if timed is None or not _fits((int(timed[0]), int(timed[1])), fixed):
            given = f"bench.input_size={_list(timed)}" if cfg.bench.input_size else (
                f"{timed[0]} x {timed[1]}" if timed else "the data set's image size")
            raise UserError(f"bench.input_size: the file of model '{model}' fixes its input to {_shape(fixed)}, not "
                            f"{given}: set bench.input_size={_list(window)}")


def _list(values: object) -> str:
    """``[64,64]``: a list as an override writes it."""
    return "[" + ",".join(str(v) for v in values) + "]"  # type: ignore[attr-defined]
