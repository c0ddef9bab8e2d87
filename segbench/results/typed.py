"""JSON data checked against dataclass type hints: ``build`` makes typed objects, ``plain`` turns them back.

Hints understood: str, int, float (an int is accepted), bool, Any, ``X | None``, list[X], dict[str, X] and
dataclasses. A field stored under another JSON key names it in ``metadata={"json": KEY}``; keys a dataclass
does not list are kept in its ``extra_fields`` dict. Errors (``Invalid``) name the path of the offending value.
"""

from __future__ import annotations

import math
import types
from dataclasses import MISSING, field, fields, is_dataclass
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np


def json_field(key: str) -> Any:
    """A dataclass field stored under another JSON key (``class`` is a Python keyword)."""
    return field(metadata={"json": key})


def extra_fields() -> Any:
    """The ``extra_fields`` dict every schema dataclass ends with: keys it does not list, kept as they are."""
    return field(default_factory=dict, repr=False)


class Invalid(Exception):
    """A value that does not fit its type hint; the message names where it is."""

    def __init__(self, where: str, expected: str, value: Any) -> None:
        self.where = where
        super().__init__(f"{where}: expected {expected}, got {describe(value)}")


ABSENT = object()
_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}


def describe(value: Any) -> str:
    """A JSON value as an error message shows it (ABSENT: a missing key)."""
    if value is ABSENT:
        return "nothing (missing)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return "a list" if isinstance(value, list) else "an object"


def _expected(hint: Any) -> str:
    """A type hint as the error message's 'expected ...'."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_expected(arg) for arg in get_args(hint))
    if origin is list:
        return "a list"
    if origin is dict or is_dataclass(hint):
        return "an object"
    return _NAMES.get(hint, "any value")


def json_key(f: Any) -> str:
    return f.metadata.get("json", f.name)


def _scalar(value: Any, hint: type) -> bool:
    """True when ``value`` is a ``hint`` (numpy scalars included, as in-memory data holds them)."""
    if isinstance(value, (bool, np.bool_)):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float, np.integer, np.floating))
    if hint is int:
        return isinstance(value, (int, np.integer))
    return isinstance(value, hint)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against ``hint`` (dataclasses built); an Invalid names ``where`` when it does not fit."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1 and value is not None:  # Optional[X]: a nested field's own message, if one is wrong
            try:
                return _convert(value, options[0], where)
            except Invalid as exc:
                if exc.where != where:
                    raise
                raise Invalid(where, _expected(hint), value) from None
        for arg in options:
            try:
                return _convert(value, arg, where)
            except Invalid:
                pass
        raise Invalid(where, _expected(hint), value)
    if is_dataclass(hint):
        if not isinstance(value, dict):
            raise Invalid(where, "an object", value)
        return build(hint, value, where)
    if origin is list:
        if isinstance(value, tuple):  # in-memory data (a dataclass's asdict) may hold tuples
            value = list(value)
        if not isinstance(value, list):
            raise Invalid(where, _expected(hint), value)
        if get_origin(args[0]) is list and _integer_matrix(value):  # fast path for per-image data
            return value
        return [_convert(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise Invalid(where, "an object", value)
        return {key: _convert(item, args[1], f"{where}.{key}") for key, item in value.items()}
    if not _scalar(value, hint):
        raise Invalid(where, _expected(hint), value)
    return value


def _integer_matrix(value: list) -> bool:
    """True for a rectangular list of lists of integers (checked by numpy, not item by item)."""
    try:
        array = np.array(value)
    except ValueError:  # ragged
        return False
    return array.ndim == 2 and array.dtype.kind in "iu"


@cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a schema dataclass (resolving them compiles text: once per class)."""
    return get_type_hints(cls)


def build(cls: type, data: dict, where: str = "") -> Any:
    """An instance of dataclass ``cls`` from ``data``; an Invalid names the first field that does not fit."""
    hints = _hints(cls)
    known, kwargs = set(), {}
    for f in fields(cls):
        if f.name == "extra_fields":
            continue
        key = json_key(f)
        known.add(key)
        path = f"{where}.{key}" if where else key
        if key in data:
            kwargs[f.name] = _convert(data[key], hints[f.name], path)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise Invalid(path, _expected(hints[f.name]), ABSENT)
    return cls(**kwargs, extra_fields={k: v for k, v in data.items() if k not in known})


def plain(value: Any) -> Any:
    """A schema object (or any JSON-like value) as plain JSON data; non-finite floats become null."""
    if is_dataclass(value) and not isinstance(value, type):
        out = {json_key(f): plain(getattr(value, f.name)) for f in fields(value) if f.name != "extra_fields"}
        return out | plain(value.extra_fields)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
