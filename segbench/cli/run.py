"""The commands that run a suite: ``run``, ``bench``, ``eval`` (no training) and ``score`` (prediction files)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from segbench.errors import UserError

RUN_HELP = "key=value overrides, e.g. suite=synthetic train.iters=50 models=[unet-r18,pspnet-r18]"
BENCH_HELP = "key=value overrides, e.g. models=[unet-r18] bench.batch_sizes=[1,4] bench.input_size=[512,1024]"


NOT_LOGGED = 4  # finished, results written, but the tracking store failed on the way


def _finish(command: Callable[..., Path | None], *args: Any) -> None:
    """Run ``command(*args)`` and print where its results are (rank 0 of a torchrun job writes them); exit 4 with
    one line saying what MLflow misses when the tracking store failed on the way."""
    from segbench.errors import NotLogged

    try:
        path = command(*args)
    except NotLogged as exc:
        typer.echo(f"results: {exc.path}")
        typer.echo(f"segbench: not logged: {exc}", err=True)
        raise typer.Exit(NOT_LOGGED) from None
    if path is not None:
        typer.echo(f"results: {path}")


def run(overrides: list[str] | None = typer.Argument(None, help=RUN_HELP)) -> None:
    """Train, evaluate and time every model of a suite; write results.json and log to MLflow."""
    from segbench.pipeline.validation import load_config

    cfg = load_config(overrides or [])
    from segbench.pipeline.runner import run as run_suite

    _finish(run_suite, cfg)


def bench(overrides: list[str] | None = typer.Argument(None, help=BENCH_HELP)) -> None:
    """Time the forward pass of every model of a suite (random weights, no data set needed)."""
    from segbench.pipeline.validation import load_config

    cfg = load_config(overrides or [])
    from segbench.pipeline.runner import bench as bench_suite

    _finish(bench_suite, cfg)


def score(overrides: list[str] | None = typer.Argument(
        None, help="pred_dir=DIR [label_space=auto|train|dataset] plus suite=NAME and key=value overrides")) -> None:
    """Score a folder of prediction PNGs made by any tool against a suite's ground truth (no model)."""
    from segbench.pipeline.validation import load_config, validate_scoring

    rest, options = _pop_options(overrides or [], ("pred_dir", "label_space"))
    if "pred_dir" not in options:
        raise UserError("score needs pred_dir=DIR, a folder of prediction PNGs (one per validation image)")
    # scoring needs only the validation split, and none of the suite's models
    cfg = load_config(["train.enabled=false", *rest], check=validate_scoring)
    from segbench.metrics.scored import keep_freed_memory
    from segbench.pipeline.score import score_predictions

    keep_freed_memory()  # a process setting: the command's own process only, never a notebook that imports segbench
    _finish(score_predictions, cfg, Path(options["pred_dir"]), options.get("label_space", "auto"))


def _pop_options(overrides: list[str], names: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Split ``name=value`` items for a command's own options off the config overrides."""
    rest, options = [], {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key in names:
            options[key] = value
        else:
            rest.append(item)
    return rest, options


def eval_(overrides: list[str] | None = typer.Argument(
        None, help="zoo=NAME, or suite=NAME models=[SOURCE:NAME,...]; download=true fetches published weights; "
                   "plus key=value overrides")) -> None:
    """Evaluate a zoo card's model, or a suite's models, without training (results.json and MLflow as for run)."""
    from segbench.pipeline.validation import load_config

    rest, options = _pop_options(overrides or [], ("zoo", "download"))
    zoo_name, download = options.get("zoo"), options.get("download", "false").lower() in ("1", "true", "yes")
    if zoo_name is not None:
        from segbench.zoo.cards import get_card
        from segbench.zoo.verify import eval_config

        cfg = eval_config(get_card(zoo_name), rest, download)
    else:
        if not any(item.startswith("models=") for item in rest):
            raise UserError("eval needs zoo=NAME (see segbench zoo list) or models=[...] (for example "
                            "models=[torchvision:deeplabv3_resnet50] suite=voc)")
        if download:
            _fetch_models(rest)
        cfg = load_config(["train.enabled=false", *rest])
    from segbench.pipeline.runner import run as run_suite

    _finish(run_suite, cfg)


def _fetch_models(overrides: list[str]) -> None:
    """Download the published weights of the external models named in ``models=[...]`` (the user asked)."""
    from omegaconf import OmegaConf

    from segbench.models.registry import fetch_model

    names = OmegaConf.to_container(OmegaConf.from_dotlist([o for o in overrides if o.startswith("models=")]))
    for name in names.get("models") or []:
        where = fetch_model(str(name))
        if where:
            typer.echo(f"{name}: weights in {where}", err=True)
