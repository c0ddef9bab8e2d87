"""``segbench list KIND``: what a registry holds."""

from __future__ import annotations

from collections.abc import Callable

import typer

from segbench.errors import UserError

USER_CODE = "  (user code: it runs in segbench's process)"  # the mark of entries that execute a user's code


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
    from segbench.core.plugins import load_entry_points

    load_entry_points()  # installed plugins' models, data sets and metrics are listed with segbench's own
    rows = LISTINGS[kind](pattern)
    width = max([28] + [len(name) + 1 for name, _ in rows if kind == "models"])
    for name, description in rows:
        typer.echo(f"{name:<{width}} {description}".rstrip())


def _suites(pattern: str) -> list[tuple[str, str]]:
    import yaml

    from segbench.config.schema import available_suites

    return [(name, (yaml.safe_load(path.read_text()) or {}).get("description", ""))
            for name, path in available_suites().items()]


def _models(pattern: str) -> list[tuple[str, str]]:
    from segbench.models.registry import ARCHITECTURES, list_models

    code = {name for name, a in ARCHITECTURES.items() if a.origin is not None} | {"torchscript:PATH"}
    return [(name, description + (USER_CODE if name in code else "")) for name, description in list_models()]


def _backbones(pattern: str) -> list[tuple[str, str]]:
    from segbench.models.registry import BACKBONE_ALIASES, list_backbones

    aliases = {v: k for k, v in BACKBONE_ALIASES.items()}
    names = list_backbones(pattern)
    if not names:
        raise UserError(f"no timm backbone matches '{pattern}' (a name part such as 'lite', or a pattern such as "
                        "'resnet*')")
    return [(name, f"alias {aliases[name]}" if name in aliases else "") for name in names]


def _datasets(pattern: str) -> list[tuple[str, str]]:
    from segbench.data.registry import DATASETS

    return [(name, entry.description + ("" if entry.build.__module__.startswith("segbench.") else USER_CODE))
            for name, entry in DATASETS.items()]


def _losses(pattern: str) -> list[tuple[str, str]]:
    from segbench.train.losses import LOSSES

    return [(name, entry.description) for name, entry in LOSSES.items()]


def _metrics(pattern: str) -> list[tuple[str, str]]:
    from segbench.metrics.confusion import REGISTRY

    return [(name, entry.describe() + (USER_CODE if entry.origin else "")) for name, entry in REGISTRY.items()]


LISTINGS: dict[str, Callable[[str], list[tuple[str, str]]]] = {
    "models": _models, "backbones": _backbones, "datasets": _datasets, "losses": _losses, "metrics": _metrics,
    "suites": _suites,
}
