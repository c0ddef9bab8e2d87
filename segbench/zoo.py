"""The model zoo: one YAML card per model (``zoo/*.yaml``, or ``$SEGBENCH_ZOO``), evaluated and verified on demand.

A card says what the model is (``model``: ARCH-BACKBONE, or SOURCE:NAME for a published model), what it
is evaluated on (``suite``, ``eval_overrides``), where its weights are (a local path relative to the
card or a URL, with their sha256; or ``published: true`` for the source's own published weights, in
its library's cache), and two kinds of numbers kept apart:

- ``claimed``: the authors' figures with their source, data set and protocol, and whether segbench
  can run that very protocol (``reproducible``);
- ``verified``: segbench's own measurement, with its settings and hardware (``results`` in cards of
  schema version 1, which stay readable).

A malformed card is one line naming its file and field; it does not stop the other cards from working.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from segbench.config import SuiteConfig, load_config, resource_dir
from segbench.errors import UserError, closest, unknown

CARD_SCHEMA_VERSION = 2
ZOO_ENV = "SEGBENCH_ZOO"


@dataclass
class Weights:
    sha256: str | None = None
    path: str | None = None  # relative to the card's folder, or absolute
    url: str | None = None  # fetched into the cache only when the user asks
    published: bool = False  # the model source's own published weights (torchvision's, the Hugging Face hub's)


@dataclass
class Claimed:
    """The authors' figures, as they published them (metrics as fractions, like segbench's)."""

    metrics: dict[str, float]
    source: str  # where the figures are published
    dataset: str  # what they were measured on
    protocol: str  # how: resize, crop, normalisation, ...
    reproducible: bool = False  # True when the card's suite and eval_overrides run this very protocol
    tolerance: float = 0.005  # allowed absolute difference per metric when reproduced
    note: str = ""


@dataclass
class Card:
    name: str
    model: str
    suite: str
    weights: Weights
    verified: dict[str, Any] | None = None  # segbench's measurement: metrics, evaluation, convention, hardware
    claimed: Claimed | None = None
    eval_overrides: list[str] = field(default_factory=list)  # key=value that rebuild the evaluation data
    training: dict[str, Any] = field(default_factory=dict)  # the training config, for the record
    tolerance: float = 1e-6  # allowed absolute difference of each verified metric when verified again
    description: str = ""
    schema_version: int = CARD_SCHEMA_VERSION
    source: Path | None = None  # the card's file (not stored)

    @property
    def results(self) -> dict[str, Any]:
        """segbench's verified results (``results`` in schema version 1); empty when none yet."""
        return self.verified or {}

    def to_yaml(self) -> str:
        data = asdict(self)
        data.pop("source")
        return yaml.safe_dump(data, sort_keys=False)


def zoo_dir() -> Path:
    """The zoo's folder: ``$SEGBENCH_ZOO`` when set, else the ``zoo/`` shipped with segbench."""
    return Path(os.environ[ZOO_ENV]) if os.environ.get(ZOO_ENV) else resource_dir("zoo")


class _CardError(UserError):
    pass


def _fail(path: Path, key: str, problem: str) -> UserError:
    return _CardError(f"model card '{path}': field '{key}' {problem}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_keys(path: Path, data: dict, allowed: list[str], prefix: str = "") -> None:
    for key in data:
        if key not in allowed:
            hints = closest(str(key), allowed)
            hint = f"; did you mean '{hints[0]}'?" if hints else ""
            what = "card key" if not prefix else f"key of '{prefix.rstrip('.')}'"
            raise _CardError(f"model card '{path}': unknown {what} '{prefix}{key}'{hint} (expected "
                             f"{', '.join(allowed)})")


def _mapping(path: Path, key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise _fail(path, key, f"must be a mapping, got {value!r}")
    return value


def _metrics(path: Path, key: str, value: Any) -> dict[str, float | None]:
    for metric, number in _mapping(path, key, value).items():
        if number is not None and not _number(number):
            raise _fail(path, f"{key}.{metric}", f"must be a number, got {number!r}")
    return value


def _weights(path: Path, value: Any) -> Weights:
    value = _mapping(path, "weights", value)
    _check_keys(path, value, [f.name for f in fields(Weights)], "weights.")
    weights = Weights(**value)
    if weights.published is not True and weights.published is not False:
        raise _fail(path, "weights.published", f"must be true or false, got {weights.published!r}")
    sources = [k for k in ("path", "url") if getattr(weights, k)] + (["published"] if weights.published else [])
    if len(sources) != 1:
        raise _fail(path, "weights", f"needs exactly one of path, url or published: true (got {sources or 'none'})")
    if not weights.published:
        if not isinstance(weights.sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", weights.sha256):
            raise _fail(path, "weights.sha256", f"must be the 64 hex digits of the file's sha256, got "
                                                f"{weights.sha256!r}")
    for key in ("path", "url"):
        if getattr(weights, key) is not None and not isinstance(getattr(weights, key), str):
            raise _fail(path, f"weights.{key}", f"must be a string, got {getattr(weights, key)!r}")
    return weights


def _claimed(path: Path, value: Any) -> Claimed | None:
    if value is None:
        return None
    value = _mapping(path, "claimed", value)
    names = [f.name for f in fields(Claimed)]
    _check_keys(path, value, names, "claimed.")
    for key in ("metrics", "source", "dataset", "protocol"):
        if key not in value:
            raise _fail(path, f"claimed.{key}", "is missing")
    _metrics(path, "claimed.metrics", value["metrics"])
    for key in ("source", "dataset", "protocol", "note"):
        if key in value and not isinstance(value[key], str):
            raise _fail(path, f"claimed.{key}", f"must be a string, got {value[key]!r}")
    if not isinstance(value.get("reproducible", False), bool):
        raise _fail(path, "claimed.reproducible", f"must be true or false, got {value['reproducible']!r}")
    if not _number(value.get("tolerance", 0.0)) or value.get("tolerance", 0.0) < 0:
        raise _fail(path, "claimed.tolerance", f"must be a non-negative number, got {value['tolerance']!r}")
    return Claimed(**value)


def read_card(path: Path) -> Card:
    """Parse and check one card file; any problem is one UserError naming the file and the field."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise _CardError(f"model card '{path}' cannot be read: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise _CardError(f"model card '{path}' must hold a mapping")
    version = data.get("schema_version", 1)
    if version not in (1, CARD_SCHEMA_VERSION):
        raise _fail(path, "schema_version", f"must be 1 or {CARD_SCHEMA_VERSION}, got {version!r}")
    if version == 1 and "results" in data:
        data["verified"] = data.pop("results")
    known = [f.name for f in fields(Card) if f.name != "source"]
    _check_keys(path, data, known + (["results"] if version == 1 else []))
    required = ("name", "model", "suite", "weights") + (("verified",) if version == 1 else ())
    missing = [k if k != "verified" else "results" for k in required if k not in data]
    if missing:
        raise _CardError(f"model card '{path}' lacks {', '.join(missing)}")
    for key in ("name", "model", "suite", "description"):
        if key in data and (not isinstance(data[key], str) or (key != "description" and not data[key])):
            raise _fail(path, key, f"must be a non-empty string, got {data[key]!r}")
    verified = data.get("verified")
    if verified is not None:
        _mapping(path, "verified" if version > 1 else "results", verified)
        _metrics(path, f"{'verified' if version > 1 else 'results'}.metrics", verified.get("metrics", {}))
    claimed = _claimed(path, data.get("claimed"))
    if verified is None and claimed is None:
        raise _CardError(f"model card '{path}' has neither claimed nor verified results")
    if not isinstance(data.get("eval_overrides", []), list) or \
            not all(isinstance(o, str) for o in data.get("eval_overrides", [])):
        raise _fail(path, "eval_overrides", f"must be a list of key=value strings, got {data['eval_overrides']!r}")
    _mapping(path, "training", data.get("training", {}))
    if not _number(data.get("tolerance", 0.0)) or data.get("tolerance", 0.0) < 0:
        raise _fail(path, "tolerance", f"must be a non-negative number, got {data['tolerance']!r}")
    return Card(**(data | {"weights": _weights(path, data["weights"]), "claimed": claimed, "source": path}))


@dataclass
class Zoo:
    """The valid cards of a folder by name, and one line for each card that is not."""

    cards: dict[str, Card]
    problems: dict[str, str]  # card name (or file stem) -> the error


def scan(folder: Path | None = None) -> Zoo:
    """Read every card of ``folder``; a bad card, or two cards of one name, are set aside with their error."""
    found: dict[str, Card] = {}
    problems: dict[str, str] = {}
    for path in sorted((folder or zoo_dir()).glob("*.yaml")):
        try:
            card = read_card(path)
        except UserError as exc:
            problems[path.stem] = str(exc)
            continue
        if card.name in found or card.name in problems:
            other = found.pop(card.name, None)
            first = other.source if other else "another card"
            problems[card.name] = (f"two model cards are named '{card.name}': '{first}' and '{path}'; "
                                   "rename one of them")
            continue
        found[card.name] = card
    return Zoo(found, problems)


def cards(folder: Path | None = None) -> dict[str, Card]:
    """The valid cards of the zoo, by name."""
    return scan(folder).cards


def get_card(name: str, folder: Path | None = None) -> Card:
    """The card called ``name``; its own error if it is malformed, suggestions if there is none."""
    zoo = scan(folder)
    if name in zoo.cards:
        return zoo.cards[name]
    if name in zoo.problems:
        raise UserError(zoo.problems[name])
    raise unknown("zoo model", name, list(zoo.cards) + list(zoo.problems))


def weights_path(card: Card, download: bool = False) -> Path | None:
    """The local weights file of ``card`` (None for published weights, which the model's source finds in its
    library's cache); a URL is fetched only with ``download``."""
    from segbench.checkpoints import download as fetch

    if card.weights.published:
        return None
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
    from segbench.models import fetch_model

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

    from segbench.config import DataConfig, parse_overrides, resolve_suite

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
    from segbench.datasets import check_available
    from segbench.models import parse_spec
    from segbench.sources import SOURCES

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


def compare(card: Card, record: dict) -> list[str]:
    """The metrics of ``card`` (see ``compared_metrics``) that ``record`` does not reproduce within the tolerance."""
    reference = compared_metrics(card)
    if reference is None:
        return []
    kind, metrics, tolerance = reference
    problems = []
    for metric, reported in metrics.items():
        measured = record["metrics"].get(metric)
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
        record = json.loads(run(cfg).read_text())["models"][0]
    if compared_metrics(card) is None:
        measured = ", ".join(f"{k} {100 * v:.2f}" for k, v in record["metrics"].items() if v is not None)
        why = card.claimed.note or f"the claimed figures are for {card.claimed.dataset}"
        return Verdict("measured", [f"on suite {card.suite}: {measured}", f"not comparable with the claim: {why}"])
    problems = compare(card, record)
    return Verdict("MISMATCH" if problems else "ok", problems)


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
        verified={
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
