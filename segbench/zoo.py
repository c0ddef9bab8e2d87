"""The model zoo: one YAML card per trained model (``zoo/*.yaml``), evaluated and verified on demand.

A card says what the model is (``model``: ARCH-BACKBONE), what it was trained and evaluated on (``suite``,
``eval_overrides``, ``training``), where its weights are (a local path relative to the card, or a URL,
with their sha256), and what it scored (``results``), with the settings and hardware of that measurement.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from segbench.config import SuiteConfig, load_config, resource_dir
from segbench.errors import UserError, unknown

CARD_SCHEMA_VERSION = 1


@dataclass
class Weights:
    sha256: str
    path: str | None = None  # relative to the card's folder, or absolute
    url: str | None = None  # fetched into the cache only when the user asks


@dataclass
class Card:
    name: str
    model: str
    suite: str
    weights: Weights
    results: dict[str, Any]  # metrics, evaluation settings, convention, hardware of the reported figures
    eval_overrides: list[str] = field(default_factory=list)  # key=value that rebuild the evaluation data
    training: dict[str, Any] = field(default_factory=dict)  # the training config, for the record
    tolerance: float = 1e-6  # allowed absolute difference of each reported metric when verified
    description: str = ""
    schema_version: int = CARD_SCHEMA_VERSION
    source: Path | None = None  # the card's file (not stored)

    def to_yaml(self) -> str:
        data = asdict(self)
        data.pop("source")
        return yaml.safe_dump(data, sort_keys=False)


def zoo_dir() -> Path:
    return resource_dir("zoo")


def read_card(path: Path) -> Card:
    """Parse and check one card file."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"model card '{path}' cannot be read: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"model card '{path}' must hold a mapping")
    known = {f.name for f in fields(Card)} - {"source"}
    for key in data:
        if key not in known:
            raise unknown("card key", key, known)
    missing = [k for k in ("name", "model", "suite", "weights", "results") if k not in data]
    if missing:
        raise UserError(f"model card '{path}' lacks {', '.join(missing)}")
    weights = data.pop("weights")
    if not isinstance(weights, dict) or "sha256" not in weights or not (weights.get("path") or weights.get("url")):
        raise UserError(f"model card '{path}': weights need sha256 and a path or url")
    return Card(weights=Weights(**weights), source=path, **data)


def cards(folder: Path | None = None) -> dict[str, Card]:
    """All cards of the zoo, by name."""
    found = {}
    for path in sorted((folder or zoo_dir()).glob("*.yaml")):
        card = read_card(path)
        found[card.name] = card
    return found


def get_card(name: str, folder: Path | None = None) -> Card:
    available = cards(folder)
    if name not in available:
        raise unknown("zoo model", name, available)
    return available[name]


def weights_path(card: Card, download: bool = False) -> Path:
    """The local weights of ``card``; a URL is fetched only with ``download``."""
    from segbench.checkpoints import download as fetch

    if card.weights.path:
        path = Path(card.weights.path)
        return path if path.is_absolute() else card.source.parent / path
    if not download:
        raise UserError(f"zoo model '{card.name}' has remote weights ({card.weights.url}); "
                        f"pass download=true to fetch them into the cache")
    return fetch(card.weights.url, card.weights.sha256)


def eval_config(card: Card, overrides: list[str], download: bool = False) -> SuiteConfig:
    """The suite config that evaluates ``card``'s checkpoint without training, then the user's overrides."""
    from segbench.checkpoints import sha256_file

    path = weights_path(card, download)
    if not path.is_file():
        raise UserError(f"zoo model '{card.name}': weights file '{path}' does not exist")
    actual = sha256_file(path)
    if actual != card.weights.sha256:
        raise UserError(f"checksum mismatch for '{path}': expected sha256 {card.weights.sha256}, got {actual}; "
                        f"refusing to load")
    base = [f"suite={card.suite}", f"models=[{card.model}]", "train.enabled=false",
            f"weights.{card.model}={path}", *card.eval_overrides]
    return load_config(base + list(overrides))


def compare(card: Card, record: dict) -> list[str]:
    """The reported metrics of ``card`` that ``record`` does not reproduce within the tolerance."""
    problems = []
    for metric, reported in card.results.get("metrics", {}).items():
        measured = record["metrics"].get(metric)
        if measured is None or reported is None:
            if measured != reported:
                problems.append(f"{metric}: card {reported}, measured {measured}")
        elif not math.isclose(measured, reported, rel_tol=0, abs_tol=card.tolerance):
            problems.append(f"{metric}: card {reported:.8f}, measured {measured:.8f} "
                            f"(difference {measured - reported:+.2e} > {card.tolerance:g})")
    return problems


def card_from_run(results_path: Path, model: str | None, name: str | None, zoo: Path) -> Path:
    """Write a card (and copy the weights) into ``zoo`` from a finished training run's results.json."""
    if results_path.is_dir():
        results_path = results_path / "results.json"
    try:
        results = json.loads(results_path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read run results '{results_path}': {exc}") from None
    records = results.get("models", [])
    if model is None and len(records) > 1:
        raise UserError(f"run '{results_path}' has {len(records)} models; name one with --model "
                        f"({', '.join(r['name'] for r in records)})")
    record = next((r for r in records if model in (None, r["name"])), None)
    if record is None:
        raise unknown("model", model, [r["name"] for r in records])
    if "checkpoint" not in record:
        raise UserError(f"model '{record['name']}' of '{results_path}' has no checkpoint (was it trained?)")
    config = results["suite"]["config"]
    name = name or f"{record['name']}_{results['suite']['name']}"
    weights_dir = zoo / "weights"
    weights_dir.mkdir(parents=True, exist_ok=True)
    source = results_path.parent / record["checkpoint"]["path"] / "model.safetensors"
    shutil.copyfile(source, weights_dir / f"{name}.safetensors")
    env = results["environment"]
    card = Card(
        name=name,
        model=record["name"],
        suite=results["suite"]["name"],
        weights=Weights(sha256=record["checkpoint"]["sha256"], path=f"weights/{name}.safetensors"),
        results={
            "metrics": record["metrics"],
            "evaluation": {k: record["evaluation"][k] for k in ("mode", "split", "images")},
            "convention": results["convention"],
            "hardware": {"device": env["device"], "device_name": env["device_name"], "torch":
                         env["packages"].get("torch"), "segbench": env["segbench"]},
            "suite_hash": results["suite"]["config_hash"],
        },
        eval_overrides=[f"data.{k}={json.dumps(v)}" for k, v in config["data"].items()],
        training=config["train"],
        description=f"{record['name']} trained by segbench on suite {results['suite']['name']}",
    )
    path = zoo / f"{name}.yaml"
    path.write_text(card.to_yaml())
    return path
