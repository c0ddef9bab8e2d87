"""Ctrl-C, SIGTERM, SIGHUP and SIGUSR1 alike: the first one interrupts the command, later ones wait for its clean-up.

Inside ``deferred()`` (training) the first signal is only noted: the loop checks ``pending()`` between iterations,
writes its state and then raises ``Interrupted`` itself, so the state it writes is never half an update."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)  # USR1: SLURM's --signal=USR1@SECONDS


class Interrupted(KeyboardInterrupt):
    """A signal asked the command to stop; clean-up code treats it like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class Caught:
    """The signal that interrupted the command, if one did."""

    signum: int | None = None


_deferring: list[Caught] = []  # the Caught of signals_interrupt while a deferred() block runs


@contextmanager
def deferred() -> Iterator[None]:
    """Within this block the first signal is noted, not raised: poll ``pending()`` at safe points."""
    _deferring.append(_current[-1] if _current else Caught())
    try:
        yield
    finally:
        caught = _deferring.pop()
    if caught.signum is not None:  # noted after the last safe point: raised now, once the block is done
        raise Interrupted(caught.signum)


def pending() -> int | None:
    """The signal noted inside ``deferred()`` and not raised yet, or None."""
    return _deferring[-1].signum if _deferring else None


_current: list[Caught] = []


@contextmanager
def signals_interrupt() -> Iterator[Caught]:
    """Turn SIGINT, SIGTERM and SIGHUP into ``Interrupted`` once; repeats are ignored so that clean-up (closing
    MLflow runs, stopping loader workers) is not itself interrupted. Yields what was caught."""
    caught = Caught()

    def handler(signum: int, frame: FrameType | None) -> None:
        if caught.signum is None:
            caught.signum = signum
            if not _deferring:
                raise Interrupted(signum)

    try:
        previous = {signum: signal.signal(signum, handler) for signum in HANDLED}
    except ValueError:  # not the main thread: leave signals to whoever owns them
        yield caught
        return
    hook, sys.excepthook = sys.excepthook, quiet_abandoned_transfers(sys.excepthook)
    _current.append(caught)
    try:
        yield caught
    finally:
        _current.pop()
        sys.excepthook = hook
        for signum, old in previous.items():
            signal.signal(signum, old)


Hook = Callable[[type[BaseException], BaseException, TracebackType | None], object]
SHARER = ("multiprocessing", "resource_sharer.py")


def quiet_abandoned_transfers(previous: Hook) -> Hook:
    """``previous``, silent for a broken connection in multiprocessing's resource sharer thread.

    Loader workers (forked, so they inherit this hook) hand each batch's tensors to the command through that
    thread, a file descriptor per tensor over a socket. A signal interrupts the command wherever it is, also in
    the middle of such a hand-over; the command then closes the socket, and the worker's thread, which catches
    everything and passes it to ``sys.excepthook``, would print a traceback (EOFError, ConnectionResetError,
    BrokenPipeError) while the command is stopping as asked. The receiving side raises its own error in every
    other case, so nothing is lost by not printing the sender's copy."""
    def hook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> object:
        if issubclass(kind, (EOFError, ConnectionError)) and trace is not None and \
                Path(trace.tb_frame.f_code.co_filename).parts[-2:] == SHARER:
            return None
        return previous(kind, error, trace)
    return hook
