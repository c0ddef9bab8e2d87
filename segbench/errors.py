"""The one exception type for a user's mistake: the CLI prints it on one line and exits 2."""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterable
from typing import Any


class UserError(Exception):
    """Bad input from the user (config, names, paths, data). Printed without a traceback."""


def _plain(name: str) -> str:
    """A name as it is spoken: lower case, '+' as 'plus', no punctuation (``DeepLabV3+`` -> ``deeplabv3plus``)."""
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("+", "plus"))


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` names from ``choices`` that look like ``name``; a name that differs only in case,
    punctuation or '+' for 'plus' comes first."""
    choices = list(choices)
    same = [c for c in choices if _plain(c) == _plain(name)]
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    if not hits:
        hits = [c for c in lowered if name.lower() in c or c in name.lower()][:n]
    return (same + [lowered[h] for h in hits if lowered[h] not in same])[:n]


LISTINGS = {kind: f"segbench list {kind}s" for kind in ("model", "backbone", "dataset", "loss", "metric", "suite")}
LISTINGS.update({"loss": "segbench list losses", "zoo model": "segbench zoo list"})


def unknown(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """Build the error for an unknown ``kind`` called ``name``, suggesting the closest choices and the command
    that lists them (or, for short fixed sets such as optimizers, the choices themselves)."""
    choices = list(choices)
    hints = closest(name, choices)
    hint = f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
    where = f"see `{LISTINGS[kind]}`" if kind in LISTINGS else f"expected one of {', '.join(sorted(choices))}"
    return UserError(f"unknown {kind} '{name}'{hint} ({where})")


def warn(message: str) -> None:
    """Tell the user about something that will not stop the command but changes what its numbers mean."""
    print(f"segbench: warning: {message}", file=sys.stderr)


class NotLogged(Exception):
    """A command finished and wrote its results, but the tracking store failed on the way: ``path`` holds them
    (the CLI exits 4; ``segbench log`` sends them later)."""

    def __init__(self, path: Any, problem: str) -> None:
        super().__init__(problem)
        self.path = path
