"""The one mechanism that checks structured input (suites, results.json, zoo cards): pydantic types declared on the
fields, and their errors turned into one line that names the field (a dotted path) and what was expected there.

Constrained types carry an ``Expect`` marker: the words an error shows for them ("a positive integer"). A relation
between fields (``train.min_lr <= train.lr``) is a validator that raises ``Relation``.
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import is_typeddict

from segbench.errors import closest


class Expect:
    """``Annotated`` metadata: the words an error message uses for what the type accepts."""

    def __init__(self, text: str) -> None:
        self.text = text


class Relation(ValueError):
    """A value that breaks a relation with another field; ``key`` is relative to the record that checks it."""

    def __init__(self, key: str, expected: str, value: Any) -> None:
        self.key, self.expected, self.value = key, expected, value
        super().__init__(f"{key}: expected {expected}, got {describe(value)}")


# ---------------------------------------------------------------- constrained types, declared once

def _limits(bounds: dict[str, Any]) -> str:
    """Upper and lower bounds in words: 'up to 1', 'from 1 to 8'."""
    words = {"gt": "above", "ge": "from", "lt": "below", "le": "up to"}
    return " ".join(f"{words[k]} {v:g}" if isinstance(v, float) else f"{words[k]} {v:,}" for k, v in bounds.items())


def finite(**bounds: Any) -> Any:
    """A finite float within ``bounds`` (gt, ge, lt, le), with its words for errors."""
    sign = {"gt": "positive ", "ge": "non-negative "}.get(next((k for k in bounds if bounds[k] == 0), ""), "")
    rest = {k: v for k, v in bounds.items() if not (sign and v == 0 and k in ("gt", "ge"))}
    text = f"a {sign or 'finite '}number" + (f" {_limits(rest)}" if rest else "")
    return Annotated[float, Field(allow_inf_nan=False, **bounds), Expect(text)]


def integer(**bounds: Any) -> Any:
    """An integer within ``bounds`` (gt, ge, lt, le), with its words for errors."""
    sign = {"gt": "positive ", "ge": "non-negative "}.get(next((k for k in bounds if bounds[k] == 0), ""), "")
    rest = {k: v for k, v in bounds.items() if not (sign and v == 0 and k in ("gt", "ge"))}
    text = f"a {sign}integer" if sign else "an integer"
    return Annotated[int, Field(**bounds), Expect(text + (f" {_limits(rest)}" if rest else ""))]


FiniteFloat = finite()
PositiveFloat = finite(gt=0)
NonNegativeFloat = finite(ge=0)
Fraction = finite(ge=0, le=1)
PositiveInt = integer(gt=0)
NonNegativeInt = integer(ge=0)


def pair(item: Any, words: str) -> Any:
    """A list of exactly two ``item`` values, e.g. [height, width]."""
    return Annotated[list[item], Field(min_length=2, max_length=2), Expect(words)]


class Record(BaseModel):
    """A typed JSON record (results.json, model cards): strict types (no "1" for 1, no "no" for false), keys it does
    not declare kept as they are (``model_extra``), a field stored under another JSON key by ``Field(alias=...)``.
    An assignment is checked as the constructor checks (a dict becomes its record type, a wrong type is refused)."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True, validate_assignment=True)


# ---------------------------------------------------------------- errors as one line

_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}


def describe(value: Any) -> str:
    """A value as an error message shows it (ABSENT: a missing key)."""
    if value is ABSENT:
        return "nothing (missing)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, (int, float)):
        text = repr(value)
        return f"the number {text if len(text) <= 40 else text[:20] + '...'}"
    return "a list" if isinstance(value, (list, tuple)) else "an object"


ABSENT = object()


def expected(hint: Any) -> str:
    """A type hint in words, as an error message's 'expected ...'."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        marks = [m for m in hint.__metadata__ if isinstance(m, Expect)]
        return marks[0].text if marks else expected(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(expected(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (list, tuple):
        return "a list"
    if origin is dict or _has_fields(hint):
        return "an object"
    return _NAMES.get(hint, "any value")


def _is_model(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, BaseModel)


def _has_fields(hint: Any) -> bool:
    """A record type: a pydantic model, a dataclass or a TypedDict."""
    return dataclasses.is_dataclass(hint) or _is_model(hint) or is_typeddict(hint)


def _strip(hint: Any) -> Any:
    """``hint`` without Annotated and None (the type that holds children)."""
    while True:
        origin = get_origin(hint)
        if origin is Annotated:
            hint = get_args(hint)[0]
        elif origin in (Union, types.UnionType):
            options = [a for a in get_args(hint) if a is not type(None)]
            if len(options) != 1:
                return hint
            hint = options[0]
        else:
            return hint


def field_hints(cls: Any) -> dict[str, Any]:
    """The fields of a pydantic dataclass or model by their JSON names, with their full type hints."""
    if is_typeddict(cls):
        return get_type_hints(cls, include_extras=True)
    if _is_model(cls):
        return {(f.alias or name): Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
                for name, f in cls.model_fields.items()}
    return {name: f.annotation if not f.metadata else Annotated[(f.annotation, *f.metadata)]
            for name, f in cls.__pydantic_fields__.items()}


def hint_at(root: Any, loc: tuple) -> Any:
    """The type hint declared at ``loc`` below ``root`` (None where the path leaves the declared types)."""
    hint = root
    for part in loc:
        base = _strip(hint)
        origin = get_origin(base)
        if isinstance(part, int) and origin in (list, tuple):
            hint = get_args(base)[0]
        elif origin is dict:
            hint = get_args(base)[1]
        elif isinstance(part, str) and _has_fields(base):
            hint = field_hints(base).get(part)
            if hint is None:
                return None
        else:
            return None
    return hint


def dotted(loc: tuple) -> str:
    """A pydantic error location as a path: ``models[0].per_class[1].class``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def errors(exc: ValidationError) -> list[dict]:
    """pydantic's errors, the ones at a dict key's own type ('[key]') last."""
    return sorted(exc.errors(), key=lambda e: "[key]" in e["loc"])


def error_line(error: dict, root: Any, prefix: tuple = ()) -> str:
    """One of pydantic's errors (``errors(exc)[0]``) in one line: ``path: expected WHAT, got VALUE``."""
    loc = tuple(part for part in error["loc"] if part != "[key]")
    context = error.get("ctx") or {}
    if isinstance(context.get("error"), Relation):
        relation = context["error"]
        return f"{dotted(prefix + loc + (relation.key,))}: expected {relation.expected}, got {describe(relation.value)}"
    if error["type"] == "missing":
        hint = hint_at(root, loc)
        return f"{dotted(prefix + loc)}: expected {expected(hint) if hint else 'a value'}, got nothing (missing)"
    hint = hint_at(root, loc)
    if hint is None or error["type"] in ("value_error", "assertion_error"):
        message = str(context.get("error", error["msg"]))
        return f"{dotted(prefix + loc)}: {message}"
    line = f"{dotted(prefix + loc)}: expected {expected(hint)}, got {describe(error['input'])}"
    options = get_args(_strip(hint)) if get_origin(_strip(hint)) is Literal else ()
    hints = closest(str(error["input"]), [str(o) for o in options]) if options else []
    return line + (f"; did you mean '{hints[0]}'?" if hints else "")


# ---------------------------------------------------------------- typed objects back as JSON data

def plain(value: Any, nan_as_null: bool = True) -> Any:
    """A typed record (or any JSON-like value, numpy's included) as plain JSON data: unknown keys kept last, tuples
    as lists, non-finite floats as null (unless ``nan_as_null`` is false)."""
    if isinstance(value, BaseModel):
        out = {(f.alias or name): plain(getattr(value, name), nan_as_null)
               for name, f in type(value).model_fields.items()}
        return out | plain(value.model_extra or {}, nan_as_null)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name), nan_as_null) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v, nan_as_null) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, nan_as_null) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist(), nan_as_null)
    if isinstance(value, np.generic):
        value = value.item()
    if nan_as_null and isinstance(value, float) and not math.isfinite(value):
        return None
    return value
