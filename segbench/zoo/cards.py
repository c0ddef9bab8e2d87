"""Model cards: the typed schema of ``zoo/*.yaml`` (or ``$SEGBENCH_ZOO``), declared once (pydantic) and published as
``schemas/card.schema.json``; each file read and checked field by field.

A malformed card is one line naming its file and field; it does not stop the other cards from working.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema
from typing_extensions import TypedDict

from segbench.config.schema import resource_dir
from segbench.config.typed import Expect, NonNegativeFloat, Relation, describe, error_line, errors, hint_at
from segbench.errors import UserError, closest, unknown

CARD_SCHEMA_VERSION = 2
ZOO_ENV = "SEGBENCH_ZOO"
# A card refuses keys it does not declare; its numbers and flags are strict ("0.5" is not a number, "yes" not true).
CARD = ConfigDict(extra="forbid")
Name = Annotated[str, Field(min_length=1), Expect("a non-empty string")]
Number = Annotated[float, Strict(), Expect("a number")]
Flag = Annotated[bool, Strict(), Expect("true or false")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$"), Expect("the 64 hex digits of the file's sha256")]


@dataclass(config=CARD)
class Weights:
    sha256: Sha256 | None = None
    path: str | None = None  # relative to the card's folder, or absolute
    url: str | None = None  # fetched into the cache only when the user asks
    published: Flag = False  # the model source's own published weights (torchvision's, the Hugging Face hub's)

    @model_validator(mode="after")
    def _one_source(self) -> Weights:
        sources = [k for k in ("path", "url") if getattr(self, k)] + (["published"] if self.published else [])
        if len(sources) != 1:
            raise Relation("", "exactly one of path, url or published: true", sources or "none")
        if not self.published and self.sha256 is None:
            raise Relation("sha256", "the 64 hex digits of the file's sha256", None)
        return self


@dataclass(config=CARD)
class Claimed:
    """The authors' figures, as they published them (metrics as fractions, like segbench's)."""

    metrics: dict[str, Number]
    source: str  # where the figures are published
    dataset: str  # what they were measured on
    protocol: str  # how: resize, crop, normalisation, ...
    reproducible: Flag = False  # True when the card's suite and eval_overrides run this very protocol
    tolerance: NonNegativeFloat = 0.005  # allowed absolute difference per metric when reproduced
    note: str = ""


class Verified(TypedDict, total=False):
    """segbench's own measurement of the card's weights (a mapping, as results.json's parts are)."""

    __pydantic_config__ = CARD  # type: ignore[misc]
    metrics: dict[str, Annotated[float | None, Strict(), Expect("a number")]]  # fractions; null: not defined
    evaluation: dict[str, Any]  # mode, split, images
    convention: dict[str, Any]  # the metric convention of results.json
    hardware: dict[str, Any]  # device, device_name, torch, segbench
    suite_hash: str | None  # the suite's config hash when measured


@dataclass(config=CARD)
class Card:
    name: Name
    model: Name
    suite: Name
    weights: Weights
    verified: Verified | None = None  # segbench's measurement: metrics, evaluation, convention, hardware
    claimed: Claimed | None = None
    eval_overrides: list[str] = field(default_factory=list)  # key=value that rebuild the evaluation data
    training: dict[str, Any] = field(default_factory=dict)  # the training config, for the record
    tolerance: NonNegativeFloat = 1e-6  # allowed absolute difference of each verified metric when verified again
    description: str = ""
    schema_version: Literal[1, 2] = CARD_SCHEMA_VERSION
    source: SkipJsonSchema[Path | None] = field(default=None, repr=False)  # the card's file (not stored)

    @model_validator(mode="after")
    def _has_results(self) -> Card:
        if self.verified is None and self.claimed is None:
            raise Relation("", "claimed nor verified results", None)
        return self

    @property
    def results(self) -> dict[str, Any]:
        """segbench's verified results (``results`` in schema version 1); empty when none yet."""
        return self.verified or {}

    def to_yaml(self) -> str:
        data = asdict(self)
        data.pop("source")
        return yaml.safe_dump(data, sort_keys=False)


CARD_TYPE = TypeAdapter(Card)


def zoo_dir() -> Path:
    """The zoo's folder: ``$SEGBENCH_ZOO`` when set, else the ``zoo/`` shipped with segbench."""
    if not os.environ.get(ZOO_ENV):
        return resource_dir("zoo")
    folder = Path(os.environ[ZOO_ENV])
    if not folder.is_dir():
        raise UserError(f"{ZOO_ENV}={folder}: no such folder; expected the folder of the zoo's *.yaml cards")
    return folder


def writable_zoo_dir() -> Path:
    """Where ``zoo add`` writes a card: ``$SEGBENCH_ZOO``, or the clone's ``zoo/``; never into an installed package,
    whose files an upgrade replaces."""
    folder = zoo_dir()
    if not os.environ.get(ZOO_ENV) and folder.parent.name == "_resources":
        raise UserError(f"zoo add: segbench's own zoo ({folder}) is inside the installed package, which an upgrade "
                        f"replaces; set {ZOO_ENV}=FOLDER (your zoo, read by zoo list and eval zoo=) or pass --zoo-dir")
    return folder


class _CardError(UserError):
    pass


def _problem(path: Path, exc: ValidationError, version: int) -> str:
    """The first error of a card in one line naming its file and field (``results`` for version 1's verified)."""
    first = sorted(errors(exc), key=lambda e: e["type"] != "unexpected_keyword_argument")[0]
    loc = tuple(part for part in first["loc"] if part != "[key]")
    shown = ("results", *loc[1:]) if version == 1 and loc[:1] == ("verified",) else loc
    key = ".".join(str(part) for part in shown)
    if first["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        section = hint_at(Card, loc[:-1]) if len(loc) > 1 else Card
        allowed = [f.name for f in dataclasses.fields(section) if f.name != "source"] \
            if dataclasses.is_dataclass(section) else []
        hints = closest(str(loc[-1]), allowed)
        what = "card key" if len(loc) == 1 else f"key of '{'.'.join(map(str, shown[:-1]))}'"
        return (f"model card '{path}': unknown {what} '{key}'" + (f"; did you mean '{hints[0]}'?" if hints else "")
                + (f" (expected {', '.join(allowed)})" if allowed else ""))
    if first["type"] == "missing":
        return f"model card '{path}': field '{key}' is missing"
    relation = (first.get("ctx") or {}).get("error")
    if isinstance(relation, Relation):
        target = ".".join(part for part in (key, relation.key) if part)
        if not target:
            return f"model card '{path}' has neither {relation.expected}"
        if not relation.key:
            return f"model card '{path}': field '{target}' needs {relation.expected} (got {relation.value})"
        return f"model card '{path}': field '{target}' must be {relation.expected}, got {relation.value!r}"
    line = error_line(first, Card)
    what = line.split(": expected ", 1)[-1].rsplit(", got ", 1)[0].replace("an object", "a mapping")
    what = what.removesuffix(" or null")  # where null is allowed, the card says so by leaving the field out
    return f"model card '{path}': field '{key}' must be {what}, got {first['input']!r}" if ": expected " in line \
        else f"model card '{path}': field '{key}' {line.split(': ', 1)[-1]}"


def read_card(path: Path) -> Card:
    """Parse and check one card file; any problem is one UserError naming the file and the field."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise _CardError(f"model card '{path}' cannot be read: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise _CardError(f"model card '{path}' must hold a mapping")
    version = data.get("schema_version", 1)
    if isinstance(version, bool) or version not in (1, CARD_SCHEMA_VERSION):
        raise _CardError(f"model card '{path}': field 'schema_version' must be 1 or {CARD_SCHEMA_VERSION}, got "
                         f"{describe(version)}")
    if version == 1:
        if "results" not in data:
            raise _CardError(f"model card '{path}': field 'results' is missing")
        data = {k: v for k, v in data.items() if k != "results"} | {"verified": data["results"]}
    try:
        return CARD_TYPE.validate_python(data | {"schema_version": version, "source": path})
    except ValidationError as exc:
        raise _CardError(_problem(path, exc, version)) from None


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
