"""The one exception type for a user's mistake: the CLI prints it on one line and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user (config, names, paths, data). Printed without a traceback."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` names from ``choices`` that look like ``name``."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    if not hits:
        hits = [c for c in lowered if name.lower() in c or c in name.lower()][:n]
    return [lowered[h] for h in hits]


def unknown(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """Build the error for an unknown ``kind`` called ``name``, suggesting the closest choices."""
    hints = closest(name, choices)
    hint = f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
    return UserError(f"unknown {kind} '{name}'{hint} (see `segbench list {kind}s`)")
