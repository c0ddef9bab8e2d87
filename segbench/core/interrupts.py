"""Ctrl-C, SIGTERM and SIGHUP alike: the first one interrupts the command, later ones wait for its clean-up."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal asked the command to stop; clean-up code treats it like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class Caught:
    """The signal that interrupted the command, if one did."""

    signum: int | None = None


@contextmanager
def signals_interrupt() -> Iterator[Caught]:
    """Turn SIGINT, SIGTERM and SIGHUP into ``Interrupted`` once; repeats are ignored so that clean-up (closing
    MLflow runs, stopping loader workers) is not itself interrupted. Yields what was caught."""
    caught = Caught()

    def handler(signum: int, frame: FrameType | None) -> None:
        if caught.signum is None:
            caught.signum = signum
            raise Interrupted(signum)

    try:
        previous = {signum: signal.signal(signum, handler) for signum in HANDLED}
    except ValueError:  # not the main thread: leave signals to whoever owns them
        yield caught
        return
    try:
        yield caught
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
