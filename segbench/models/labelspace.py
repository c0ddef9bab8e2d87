"""Label spaces: a model's classes matched to a suite's by name, and its output channels re-ordered to match.

Names match when they are equal after lower-casing and removing spaces, ``_`` and ``-``
(``__background__`` = ``background``, ``dining table`` = ``diningtable``). Every class of the model
must find a class of the suite and every class of the suite a class of the model, unless the suite's
``eval.class_map`` says otherwise: ``MODEL_CLASS: SUITE_CLASS`` renames a model class, ``NAME: null``
declares a class that is not shared (a model class whose channel is dropped, or a suite class the
model cannot predict: its logits are -inf, so it is never predicted). The mapping is exact: after
``ClassSelect``, channel i is suite class i.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from segbench.errors import UserError, closest

_SEPARATORS = re.compile(r"[\s_\-]+")
_SHOWN = 8  # names listed in an error before "(+N more)"


def canonical(name: str) -> str:
    """The spelling-independent key of a class name."""
    return _SEPARATORS.sub("", str(name)).lower()


@dataclass(frozen=True)
class LabelMapping:
    """How a model's output channels become a suite's classes."""

    suite_classes: tuple[str, ...]
    model_classes: tuple[str, ...]
    channels: tuple[int | None, ...]  # per suite class: the model channel that predicts it, or None (never)
    names_from: str = "model"  # "model", or "suite" when the checkpoint carries no class names

    @property
    def identity(self) -> bool:
        """True when channel i of the model already is suite class i (no re-ordering needed)."""
        return self.channels == tuple(range(len(self.model_classes)))

    @property
    def unpredictable(self) -> list[str]:
        return [name for name, channel in zip(self.suite_classes, self.channels) if channel is None]

    @property
    def dropped(self) -> list[str]:
        used = set(self.channels)
        return [name for j, name in enumerate(self.model_classes) if j not in used]

    def to_dict(self) -> dict:
        """The record kept with every result."""
        return {
            "names_from": self.names_from,
            "identity": self.identity,
            "model_classes": list(self.model_classes),
            "channels": list(self.channels),
            "renamed": {self.model_classes[c]: s for s, c in zip(self.suite_classes, self.channels)
                        if c is not None and self.model_classes[c] != s},
            "unpredictable": self.unpredictable,
            "dropped": self.dropped,
        }


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    return shown + (f" (+{len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def _keys(names: Sequence[str], what: str) -> dict[str, int]:
    """Canonical key -> index; two names with the same key cannot be told apart by name."""
    keys: dict[str, int] = {}
    for i, name in enumerate(names):
        key = canonical(name)
        if key in keys:
            raise UserError(f"{what} has two classes that differ only in spelling: '{names[keys[key]]}' and "
                            f"'{name}'; they cannot be matched by name")
        keys[key] = i
    return keys


def assume_suite_classes(num_outputs: int, suite_classes: Sequence[str], model: str) -> LabelMapping:
    """The mapping of a checkpoint without class names: the suite's classes, if the numbers of outputs agree."""
    if num_outputs != len(suite_classes):
        raise UserError(f"{model}: the checkpoint carries no class names and has {num_outputs} outputs, but the "
                        f"suite has {len(suite_classes)} classes ({_names(list(suite_classes))}); its classes "
                        "cannot be matched")
    suite = tuple(suite_classes)
    return LabelMapping(suite, suite, tuple(range(len(suite))), names_from="suite")


def match_classes(model_classes: Sequence[str], suite_classes: Sequence[str],
                  class_map: Mapping[str, str | None] | None, model: str) -> LabelMapping:
    """Match ``model_classes`` to ``suite_classes`` by name (see the module docstring); raise a UserError,
    listing the unmatched names, when they do not match."""
    class_map = class_map or {}
    _keys(model_classes, f"model {model}")  # refuses two model classes of one spelling
    suite_keys = _keys(suite_classes, "the suite")
    renames = {canonical(k): v for k, v in class_map.items() if v is not None}
    absent = {canonical(k) for k, v in class_map.items() if v is None}

    channels: list[int | None] = [None] * len(suite_classes)
    unmatched_model = []
    for j, name in enumerate(model_classes):
        key = canonical(name)
        if key in renames:
            target = canonical(renames[key])
            if target not in suite_keys:
                hints = closest(renames[key], suite_classes)
                hint = f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
                raise UserError(f"eval.class_map.{name}: '{renames[key]}' is not a class of the suite{hint}")
        elif key in absent:
            continue
        elif key in suite_keys:
            target = key
        else:
            unmatched_model.append(name)
            continue
        i = suite_keys[target]
        if channels[i] is not None:
            raise UserError(f"{model}: model classes '{model_classes[channels[i]]}' and '{name}' both map to suite "
                            f"class '{suite_classes[i]}'; map one of them elsewhere or to null in eval.class_map")
        channels[i] = j
    unmatched_suite = [name for i, name in enumerate(suite_classes)
                       if channels[i] is None and canonical(name) not in absent]
    if unmatched_model or unmatched_suite:
        parts = ([f"model classes not in the suite: {_names(unmatched_model)}"] if unmatched_model else [])
        parts += ([f"suite classes the model lacks: {_names(unmatched_suite)}"] if unmatched_suite else [])
        raise UserError(f"{model}: its classes do not match the suite's by name ({'; '.join(parts)}); map them "
                        "with eval.class_map.MODEL_CLASS=SUITE_CLASS, or declare a class that is not shared with "
                        "eval.class_map.NAME=null")
    if all(c is None for c in channels):
        raise UserError(f"{model}: after eval.class_map no class of the suite is predicted by the model")
    return LabelMapping(tuple(suite_classes), tuple(model_classes), tuple(channels))


def unused_class_map_keys(class_map: Mapping[str, str | None], suite_classes: Sequence[str],
                          model_classes: Sequence[Sequence[str]]) -> list[str]:
    """Keys of ``class_map`` that name no class of the suite nor of any of its models (likely typos)."""
    known = {canonical(n) for n in suite_classes} | {canonical(n) for names in model_classes for n in names}
    return [key for key in class_map if canonical(key) not in known]


class ClassSelect(nn.Module):
    """Logits of the model's classes in, logits of the suite's classes out (-inf for classes never predicted)."""

    def __init__(self, mapping: LabelMapping) -> None:
        super().__init__()
        present = [i for i, c in enumerate(mapping.channels) if c is not None]
        self.num_classes = len(mapping.channels)
        self.complete = len(present) == self.num_classes
        self.register_buffer("targets", torch.tensor(present, dtype=torch.long), persistent=False)
        self.register_buffer("sources", torch.tensor([mapping.channels[i] for i in present], dtype=torch.long),
                             persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        picked = logits.index_select(1, self.sources)
        if self.complete:  # every suite class has a channel: a re-ordering
            return picked
        shape = (logits.shape[0], self.num_classes, *logits.shape[2:])
        out = logits.new_full(shape, float("-inf"))
        out[:, self.targets] = picked
        return out

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, sources={self.sources.tolist()}"
