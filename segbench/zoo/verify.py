"""The model zoo: one YAML card per model (``zoo/*.yaml``, or ``$SEGBENCH_ZOO``), evaluated and verified on demand.

A card says what the model is (``model``: ARCH-BACKBONE, or SOURCE:NAME for a published model), what it
is evaluated on (``suite``, ``eval_overrides``), where its weights are (a local path relative to the
card or a URL, with their sha256; or ``published: true`` for the source's own published weights, in
its library's cache), and two kinds of numbers kept apart:

- ``claimed``: the authors' figures with their source, data set and protocol, and whether segbench
  can run that very protocol (``reproducible``);
- ``verified``: segbench's own measurement, with its settings and hardware (``results`` in cards of
  schema version 1, which stay readable).

The cards' schema and reading are in ``segbench.zoo.cards``.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segbench.config.schema import SuiteConfig
from segbench.config.typed import plain
from segbench.core.names import safe_name
from segbench.errors import UserError, unknown
from segbench.pipeline.validation import load_config
from segbench.results.schema import read_results
from segbench.zoo.cards import Card, Weights


def weights_path(card: Card, download: bool = False) -> Path | None:
    """The local weights file of ``card`` (None for published weights, which the model's source finds in its
    library's cache); a URL is fetched only with ``download``."""
    from segbench.models.checkpoints import download as fetch

    if card.weights.published:
        return None
    if card.weights.path:
        path = Path(card.weights.path)
        return path if path.is_absolute() else card.source.parent / path
    if not download:
        raise UserError(f"zoo model '{card.name}' has remote weights ({card.weights.url}); "
                        f"fetch them into the cache with segbench eval zoo={card.name} download=true, "
                        f"or segbench zoo verify {card.name} --download")
    return fetch(card.weights.url, card.weights.sha256)


def eval_config(card: Card, overrides: list[str], download: bool = False) -> SuiteConfig:
    """The suite config that evaluates ``card``'s checkpoint without training, then the user's overrides."""
    from segbench.models.checkpoints import sha256_file
    from segbench.models.registry import fetch_model

    base = [f"suite={card.suite}", f"models=[{card.model}]", "train.enabled=false"]
    path = weights_path(card, download)
    if path is None:
        if download:
            fetch_model(card.model)
    else:
        if not path.is_file():
            raise UserError(f"zoo model '{card.name}': weights file '{path}' does not exist")
        actual = sha256_file(path)
        if actual != card.weights.sha256:
            raise UserError(f"checksum mismatch for '{path}': expected sha256 {card.weights.sha256}, got {actual}; "
                            f"refusing to load")
        base.append(f"weights.{card.model}={path}")
    return load_config(base + list(card.eval_overrides) + list(overrides))


def _data_config(card: Card) -> Any:
    """The data section the card's evaluation would use (suite file plus the card's data overrides)."""
    from omegaconf import OmegaConf

    from segbench.config.schema import DataConfig, parse_overrides, resolve_suite

    suite, values = parse_overrides([f"suite={card.suite}", *[o for o in card.eval_overrides
                                                              if o.startswith("data.")]])
    try:
        file_values = OmegaConf.to_container(OmegaConf.load(resolve_suite(suite))) or {}
        merged = OmegaConf.merge(OmegaConf.structured(DataConfig), file_values.get("data") or {},
                                 values.get("data") or {})
        return OmegaConf.to_object(merged)
    except Exception as exc:
        raise UserError(f"zoo model '{card.name}': its suite's data settings are invalid: {exc}".splitlines()[0]) \
            from None


def unavailable(card: Card, download: bool = False) -> str | None:
    """Why ``card`` cannot be evaluated on this machine (its weights or its data are not here), or None."""
    from segbench.data.registry import check_available
    from segbench.models.registry import parse_spec
    from segbench.models.sources import SOURCES

    if card.weights.published and not download:
        try:
            spec = parse_spec(card.model, check=True)
            if spec.external:
                SOURCES.get(spec.source).resolve(spec.arch, None)
        except UserError as exc:
            return f"its weights are not here ({exc})"
    elif card.weights.url and not card.weights.path and not download:
        return f"its weights are remote ({card.weights.url}; --download fetches them)"
    elif card.weights.path and not weights_path(card).is_file():
        return f"its weights file '{weights_path(card)}' is not here"
    data = _data_config(card)
    try:
        check_available(data, (data.val_split,))
    except UserError as exc:
        return f"its data are not here ({exc})"
    return None


def compared_metrics(card: Card) -> tuple[str, dict[str, float | None], float] | None:
    """What a re-evaluation is compared with: segbench's verified figures, else the claimed ones when segbench
    runs the authors' protocol; None when neither (claimed figures of a protocol segbench cannot run)."""
    if card.verified and card.verified.get("metrics"):
        return "verified", card.verified["metrics"], card.tolerance
    if card.claimed is not None and card.claimed.reproducible:
        return "claimed", card.claimed.metrics, card.claimed.tolerance
    return None


def compare(card: Card, measured_metrics: dict[str, float | None]) -> list[str]:
    """The metrics of ``card`` (see ``compared_metrics``) that ``measured_metrics`` (a model record's metrics) do
    not reproduce within the tolerance."""
    reference = compared_metrics(card)
    if reference is None:
        return []
    kind, metrics, tolerance = reference
    problems = []
    for metric, reported in metrics.items():
        measured = measured_metrics.get(metric)
        if measured is None or reported is None:
            if measured != reported:
                problems.append(f"{metric}: {kind} {reported}, measured {measured}")
        elif not math.isclose(measured, reported, rel_tol=0, abs_tol=tolerance):
            problems.append(f"{metric}: {kind} {reported:.8f}, measured {measured:.8f} "
                            f"(difference {measured - reported:+.2e} > {tolerance:g})")
    return problems


@dataclass
class Verdict:
    """The outcome of verifying one card."""

    status: str  # "ok", "MISMATCH", "not verified here", "measured"
    details: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status == "MISMATCH"


def verify(card: Card, run: Any, download: bool = False) -> Verdict:
    """Re-evaluate ``card`` with ``run`` (a config -> results.json path function) where its weights and data are
    here, and compare; say "not verified here" where they are not."""
    import tempfile

    reason = unavailable(card, download)
    if reason is not None:
        return Verdict("not verified here", [reason])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = eval_config(card, [f"output_dir={tmp}/out", "tracking.enabled=false", "bench.enabled=false",
                                 "progress=false"], download)
        metrics = read_results(run(cfg)).models[0].metrics
    if compared_metrics(card) is None:
        measured = ", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items() if v is not None)
        why = card.claimed.note or f"the claimed figures are for {card.claimed.dataset}"
        return Verdict("measured", [f"on suite {card.suite}: {measured}", f"not comparable with the claim: {why}"])
    problems = compare(card, metrics)
    return Verdict("MISMATCH" if problems else "ok", problems)


def card_from_run(results_path: Path, model: str | None, name: str | None, zoo: Path) -> Path:
    """Write a card (and copy the weights) into ``zoo`` from a finished training run's results.json."""
    results = read_results(results_path)
    results_path = results_path / "results.json" if results_path.is_dir() else results_path
    records = results.models
    if model is None and len(records) > 1:
        raise UserError(f"run '{results_path}' has {len(records)} models; name one with --model "
                        f"({', '.join(r.name for r in records)})")
    record = next((r for r in records if model in (None, r.name)), None)
    if record is None:
        raise unknown("model", model, [r.name for r in records])
    if record.checkpoint is None or record.evaluation is None:
        raise UserError(f"model '{record.name}' of '{results_path}' has no checkpoint (was it trained?)")
    config, env = results.suite.config, results.environment
    name = name or safe_name(f"{record.name}_{results.suite.name}")
    file_name = safe_name(name)  # the card keeps its name; its files cannot land outside the zoo
    weights_dir = zoo / "weights"
    weights_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(results_path.parent / record.checkpoint.path / "model.safetensors",
                    weights_dir / f"{file_name}.safetensors")
    card = Card(
        name=name,
        model=record.name,
        suite=results.suite.name,
        weights=Weights(sha256=record.checkpoint.sha256, path=f"weights/{file_name}.safetensors"),
        verified={
            "metrics": record.metrics,
            "evaluation": {"mode": record.evaluation.mode, "split": record.evaluation.split,
                           "images": record.evaluation.images},
            "convention": {k: v for k, v in plain(results.convention).items() if v is not None},
            "hardware": {"device": env.device, "device_name": env.device_name, "torch": env.packages.get("torch"),
                         "segbench": env.segbench},
            "suite_hash": results.suite.config_hash,
        },
        eval_overrides=[f"data.{k}={json.dumps(v)}" for k, v in config["data"].items()],
        training=config["train"],
        description=f"{record.name} trained by segbench on suite {results.suite.name}",
    )
    path = zoo / f"{file_name}.yaml"
    path.write_text(card.to_yaml())
    return path
