"""The ``segbench`` command line. Heavy imports (torch, timm, mlflow) wait until a command needs them."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from segbench import __version__
from segbench.errors import UserError

app = typer.Typer(
    help="Benchmark and compare semantic segmentation models.",
    add_completion=False,
    no_args_is_help=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
)

RUN_HELP = "key=value overrides, e.g. suite=synthetic train.iters=50 models=[unet-r18,pspnet-r18]"
BENCH_HELP = "key=value overrides, e.g. models=[unet-r18] bench.batch_sizes=[1,4] bench.input_size=[512,1024]"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segbench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an internal error "
                                                      "(or set SEGBENCH_DEBUG=1)."),
) -> None:
    """Benchmark and compare semantic segmentation models. Run with no command: the embedded default suite."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(run, overrides=[])


def _finish(command: Callable[[Any], Path | None], cfg: Any) -> None:
    """Run ``command(cfg)`` and print where its results are (rank 0 of a torchrun job writes them)."""
    path = command(cfg)
    if path is not None:
        typer.echo(f"results: {path}")


@app.command()
def run(overrides: list[str] | None = typer.Argument(None, help=RUN_HELP)) -> None:
    """Train, evaluate and time every model of a suite; write results.json and log to MLflow."""
    from segbench.validation import load_config

    cfg = load_config(overrides or [])
    from segbench.runner import run as run_suite

    _finish(run_suite, cfg)


@app.command()
def bench(overrides: list[str] | None = typer.Argument(None, help=BENCH_HELP)) -> None:
    """Time the forward pass of every model of a suite (random weights, no data set needed)."""
    from segbench.validation import load_config

    cfg = load_config(overrides or [])
    from segbench.runner import bench as bench_suite

    _finish(bench_suite, cfg)


@app.command()
def score(overrides: list[str] | None = typer.Argument(
        None, help="pred_dir=DIR [label_space=auto|train|dataset] plus suite=NAME and key=value overrides")) -> None:
    """Score a folder of prediction PNGs made by any tool against a suite's ground truth (no model)."""
    from segbench.validation import load_config

    rest, options = _pop_options(overrides or [], ("pred_dir", "label_space"))
    if "pred_dir" not in options:
        raise UserError("score needs pred_dir=DIR, a folder of prediction PNGs (one per validation image)")
    cfg = load_config(["train.enabled=false", *rest])  # scoring needs only the validation split
    from segbench.score import score_predictions

    typer.echo(f"results: {score_predictions(cfg, Path(options['pred_dir']), options.get('label_space', 'auto'))}")


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


@app.command()
def report(
    sources: list[str] | None = typer.Argument(None, help="results.json files or folders; none: every run in the "
                                                          "MLflow store"),
    out: Path | None = typer.Option(None, help="output folder (default: reports/)"),
    tracking_uri: str | None = typer.Option(None, help="MLflow store to read (default: MLFLOW_TRACKING_URI, else "
                                                       "sqlite:///mlflow.db); with sources, read as well"),
) -> None:
    """Build leaderboards per suite (Markdown, CSV, self-contained HTML) from results.json files or MLflow."""
    from segbench.report import build_report

    written = build_report(list(sources or []), out, tracking_uri, use_mlflow=not sources)
    for path in written:
        typer.echo(f"wrote {path}")


@app.command()
def gate(
    run: str = typer.Argument(..., help="a results.json (or its folder), an MLflow run id, or 'latest'"),
    baseline: str = typer.Argument(..., help="the baseline: a results.json or an MLflow run id"),
    max_drop: list[str] | None = typer.Option(None, help="METRIC=POINTS allowed drop in percentage points "
                                                         "(default mIoU=0.5); repeatable"),
    max_speed_drop: float | None = typer.Option(None, help="allowed drop of images/s in percent (default 20; "
                                                           "100: speed not gated)"),
    reference_model: str | None = typer.Option(None, help="compare speed as a ratio to this model of the same run"),
    require_significant: bool = typer.Option(False, help="a drop must also be beyond noise (bootstrap, repeats)"),
    max_backend_diff: list[str] | None = typer.Option(None, help="METRIC=POINTS: every deployment backend of the "
                                                                 "run's eval.backends must score within POINTS of "
                                                                 "eager (e.g. mIoU=0.1); repeatable"),
    out: Path | None = typer.Option(None, help="write gate.md and gate.json here"),
    tracking_uri: str | None = typer.Option(None, help="MLflow store for run ids and 'latest'"),
) -> None:
    """Compare a run with a baseline model by model; exit 0 on pass, 1 on a regression, 2 on bad input."""
    from segbench import gate as gating
    from segbench.gate_render import text, write_summary

    speed = gating.MAX_SPEED_DROP_PERCENT if max_speed_drop is None else max_speed_drop
    result = gating.gate(run, baseline, max_drop_points=gating.parse_max_drops(max_drop) if max_drop else None,
                         max_speed_drop_percent=speed, reference_model=reference_model,
                         require_significant=require_significant, tracking_uri=tracking_uri,
                         max_backend_diff_points=gating.parse_max_drops(max_backend_diff, {}) if max_backend_diff
                         else None)
    if out is not None:
        write_summary(result, out)
    typer.echo(text(result))
    raise typer.Exit(result.exit_code)


baseline_app = typer.Typer(help="Baselines for segbench gate.", no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")


@baseline_app.command("update")
def baseline_update(
    run: str = typer.Argument(..., help="a results.json (or its folder), an MLflow run id, or 'latest'"),
    baseline: Path = typer.Argument(..., help="the baseline file to write, e.g. baselines/synthetic.json"),
    tracking_uri: str | None = typer.Option(None, help="MLflow store for run ids and 'latest'"),
) -> None:
    """Make a run's results the new baseline (compact JSON, to commit)."""
    from segbench.baseline import update_baseline

    typer.echo(f"baseline: {update_baseline(run, baseline, tracking_uri)}")


@app.command("eval")
def eval_(overrides: list[str] | None = typer.Argument(
        None, help="zoo=NAME, or suite=NAME models=[SOURCE:NAME,...]; download=true fetches published weights; "
                   "plus key=value overrides")) -> None:
    """Evaluate a zoo card's model, or a suite's models, without training (results.json and MLflow as for run)."""
    from segbench.validation import load_config

    rest, options = _pop_options(overrides or [], ("zoo", "download"))
    zoo_name, download = options.get("zoo"), options.get("download", "false").lower() in ("1", "true", "yes")
    if zoo_name is not None:
        from segbench.cards import get_card
        from segbench.zoo import eval_config

        cfg = eval_config(get_card(zoo_name), rest, download)
    else:
        if not any(item.startswith("models=") for item in rest):
            raise UserError("eval needs zoo=NAME (see segbench zoo list) or models=[...] (for example "
                            "models=[torchvision:deeplabv3_resnet50] suite=voc)")
        if download:
            _fetch_models(rest)
        cfg = load_config(["train.enabled=false", *rest])
    from segbench.runner import run as run_suite

    _finish(run_suite, cfg)


def _fetch_models(overrides: list[str]) -> None:
    """Download the published weights of the external models named in ``models=[...]`` (the user asked)."""
    from omegaconf import OmegaConf

    from segbench.models import fetch_model

    names = OmegaConf.to_container(OmegaConf.from_dotlist([o for o in overrides if o.startswith("models=")]))
    for name in names.get("models") or []:
        where = fetch_model(str(name))
        if where:
            typer.echo(f"{name}: weights in {where}", err=True)


zoo_app = typer.Typer(help="The model zoo: cards in zoo/*.yaml (or $SEGBENCH_ZOO).", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


def _percent(metrics: dict | None, name: str) -> str:
    value = (metrics or {}).get(name)
    return f"{100 * value:.1f}" if value is not None else "-"


@zoo_app.command("list")
def zoo_list() -> None:
    """List the zoo's model cards: the authors' claimed mIoU and segbench's verified one, side by side."""
    from segbench.cards import scan

    zoo = scan()
    typer.echo(f"{'card':<44} {'model':<40} {'suite':<10} {'claimed mIoU':<26} verified mIoU (hardware)")
    for name, card in zoo.cards.items():
        claimed = "-"
        if card.claimed is not None:
            protocol = "suite's protocol" if card.claimed.reproducible else "another protocol"
            claimed = f"{_percent(card.claimed.metrics, 'mIoU')} ({protocol})"
        verified = "-"
        if card.verified:
            hardware = (card.verified.get("hardware") or {}).get("device_name", "")
            verified = f"{_percent(card.verified.get('metrics'), 'mIoU')} ({hardware})" if hardware else \
                _percent(card.verified.get("metrics"), "mIoU")
        typer.echo(f"{name:<44} {card.model:<40} {card.suite:<10} {claimed:<26} {verified}")
    for problem in zoo.problems.values():
        typer.echo(f"segbench: skipped a bad card: {problem}", err=True)


@zoo_app.command("verify")
def zoo_verify(
    name: str | None = typer.Argument(None, help="a card name; all cards if omitted"),
    download: bool = typer.Option(False, help="fetch remote or published weights into the cache"),
) -> None:
    """Re-evaluate zoo models where their weights and data are here and compare with their cards; exit 1 on a
    mismatch ("not verified here" is not a failure), 2 on a bad card."""
    from segbench.cards import get_card, scan
    from segbench.runner import run as run_suite
    from segbench.zoo import verify

    zoo = scan()
    chosen = [get_card(name)] if name else list(zoo.cards.values())
    failed = 0
    for card in chosen:
        verdict = verify(card, run_suite, download)
        failed += verdict.failed
        typer.echo(f"{card.name}: {verdict.status}" + "".join(f"\n  {line}" for line in verdict.details))
    if not name and zoo.problems:
        for problem in zoo.problems.values():
            typer.echo(f"segbench: error: {problem}", err=True)
        raise typer.Exit(2)
    if failed:
        raise typer.Exit(1)


@zoo_app.command("add")
def zoo_add(
    run: Path = typer.Argument(..., help="a finished training run: its output folder or results.json"),
    model: str | None = typer.Option(None, help="the model of the run, if it has several"),
    name: str | None = typer.Option(None, help="the card's name (default MODEL_SUITE)"),
    zoo_dir: Path | None = typer.Option(None, help="where to write the card (default: segbench's zoo/)"),
) -> None:
    """Write a model card (and copy its weights) from a finished training run."""
    from segbench.cards import zoo_dir as default_zoo
    from segbench.zoo import card_from_run

    path = card_from_run(run, model, name, zoo_dir or default_zoo())
    typer.echo(f"card: {path}")


@app.command("list")
def list_(
    kind: str = typer.Argument(..., help="models, backbones, datasets, losses, metrics or suites"),
    pattern: str = typer.Argument("*", help="for backbones: a timm name pattern such as 'resnet*'"),
) -> None:
    """List what a registry holds."""
    from segbench.errors import closest

    if kind not in LISTINGS:
        hints = closest(kind, LISTINGS)
        hint = f"; did you mean '{hints[0]}'?" if hints else ""
        raise UserError(f"cannot list '{kind}'{hint} (expected one of {', '.join(LISTINGS)})")
    rows = LISTINGS[kind](pattern)
    width = max([28] + [len(name) + 1 for name, _ in rows if kind == "models"])
    for name, description in rows:
        typer.echo(f"{name:<{width}} {description}".rstrip())


def _suites(pattern: str) -> list[tuple[str, str]]:
    import yaml

    from segbench.config import available_suites

    return [(name, (yaml.safe_load(path.read_text()) or {}).get("description", ""))
            for name, path in available_suites().items()]


def _models(pattern: str) -> list[tuple[str, str]]:
    from segbench.models import list_models

    return list_models()


def _backbones(pattern: str) -> list[tuple[str, str]]:
    from segbench.models import BACKBONE_ALIASES, list_backbones

    aliases = {v: k for k, v in BACKBONE_ALIASES.items()}
    names = list_backbones(pattern)
    if not names:
        raise UserError(f"no timm backbone matches '{pattern}' (a name part such as 'lite', or a pattern such as "
                        "'resnet*')")
    return [(name, f"alias {aliases[name]}" if name in aliases else "") for name in names]


def _datasets(pattern: str) -> list[tuple[str, str]]:
    from segbench.datasets import DATASETS

    return [(name, entry.description) for name, entry in DATASETS.items()]


def _losses(pattern: str) -> list[tuple[str, str]]:
    from segbench.losses import LOSSES

    return [(name, entry.description) for name, entry in LOSSES.items()]


def _metrics(pattern: str) -> list[tuple[str, str]]:
    from segbench.metrics import REGISTRY

    return [(name, entry.describe()) for name, entry in REGISTRY.items()]


LISTINGS: dict[str, Callable[[str], list[tuple[str, str]]]] = {
    "models": _models, "backbones": _backbones, "datasets": _datasets, "losses": _losses, "metrics": _metrics,
    "suites": _suites,
}


INTERNAL_ERROR = 3  # a bug in segbench, not the user's input: 1 stays "regression", 2 "bad input"


def entry() -> None:
    """Console-script entry point: exit 0 on success, 1 for a regression or a verification mismatch, 2 for bad
    input (one line, no traceback), 3 for an internal error (its traceback only with --debug or SEGBENCH_DEBUG=1),
    128 + N for signal N (Ctrl-C, SIGTERM, SIGHUP), after open MLflow runs were marked KILLED."""
    from segbench.interrupts import signals_interrupt

    debug = "--debug" in sys.argv[1:2] or os.environ.get("SEGBENCH_DEBUG", "") not in ("", "0")
    with signals_interrupt() as caught:
        try:
            code = app(standalone_mode=False)  # typer returns 130 for an interrupt
        except UserError as exc:
            typer.echo(f"segbench: error: {exc}", err=True)
            sys.exit(2)
        except typer.Exit as exc:
            code = exc.exit_code
        except typer.TyperException as exc:  # usage errors: unknown command or option, missing argument
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            typer.echo(f"segbench: error: {message} (see segbench --help)", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            code = 130
        except Exception as exc:
            if debug:
                raise
            first = (str(exc).splitlines() or [""])[0][:300]
            typer.echo(f"segbench: internal error: {type(exc).__name__}: {first} (a bug in segbench, not in your "
                       "input; rerun with --debug or SEGBENCH_DEBUG=1 for the traceback, and please report it)",
                       err=True)
            sys.exit(INTERNAL_ERROR)
    if code == 130 or caught.signum is not None:
        signum = caught.signum or signal.SIGINT
        typer.echo(f"segbench: interrupted ({signal.Signals(signum).name}); open MLflow runs were marked KILLED, "
                   "an output folder keeps its .partial suffix and no results were written", err=True)
        sys.exit(128 + signum)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    entry()
