"""Model cards: the typed schema of ``zoo/*.yaml`` (or ``$SEGBENCH_ZOO``), each file read and checked field by field.

A malformed card is one line naming its file and field; it does not stop the other cards from working.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from segbench.config.schema import resource_dir
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
    if not os.environ.get(ZOO_ENV):
        return resource_dir("zoo")
    folder = Path(os.environ[ZOO_ENV])
    if not folder.is_dir():
        raise UserError(f"{ZOO_ENV}={folder}: no such folder; expected the folder of the zoo's *.yaml cards")
    return folder


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
