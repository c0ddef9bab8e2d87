"""``segbench zoo list|verify|add``: the model zoo's cards."""

from __future__ import annotations

from pathlib import Path

import typer


def _percent(metrics: dict | None, name: str) -> str:
    value = (metrics or {}).get(name)
    return f"{100 * value:.1f}" if value is not None else "-"


def zoo_list() -> None:
    """List the zoo's model cards: the authors' claimed mIoU and segbench's verified one, side by side."""
    from segbench.zoo.cards import scan

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


def zoo_verify(
    name: str | None = typer.Argument(None, help="a card name; all cards if omitted"),
    download: bool = typer.Option(False, help="fetch remote or published weights into the cache"),
) -> None:
    """Re-evaluate zoo models where their weights and data are here and compare with their cards; exit 1 on a
    mismatch ("not verified here" is not a failure), 2 on a bad card."""
    from segbench.pipeline.runner import run as run_suite
    from segbench.zoo.cards import get_card, scan
    from segbench.zoo.verify import verify

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


def zoo_add(
    run: Path = typer.Argument(..., help="a finished training run: its output folder or results.json"),
    model: str | None = typer.Option(None, help="the model of the run, if it has several"),
    name: str | None = typer.Option(None, help="the card's name (default MODEL_SUITE)"),
    zoo_dir: Path | None = typer.Option(None, help="where to write the card (default: $SEGBENCH_ZOO; in a clone of "
                                                   "segbench, its zoo/)"),
) -> None:
    """Write a model card (and copy its weights) from a finished training run."""
    from segbench.zoo.cards import writable_zoo_dir
    from segbench.zoo.verify import card_from_run

    path = card_from_run(run, model, name, zoo_dir or writable_zoo_dir())
    typer.echo(f"card: {path}")
