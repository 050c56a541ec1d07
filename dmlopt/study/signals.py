"""Ctrl-C and SIGTERM: stop the worker cleanly, with a non-zero exit and its trial marked.

Lightning intercepts both while it trains (Ctrl-C ends in ``exit(1)``, SIGTERM in an exit
status of 0), so dmlopt installs handlers of its own that raise :class:`Stopped`, an exception
Lightning passes through after tearing its trainer down. The trial loop marks the running trial
FAIL and the command exits 128 + the signal number (130, 143). A second signal while that is
under way exits at once.

An exception raised by a signal handler can land in a finaliser, where Python prints and
drops it; so the signal also stays *pending* until :class:`Stopped` is caught, and
:func:`check` (called between trials, folds and epochs) raises it again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType


class Stopped(BaseException):  # like KeyboardInterrupt: not an error
    """Raised in the main thread by SIGINT or SIGTERM; not an ``Exception``, so no ``except
    Exception`` on the way (Optuna's, Lightning's, ours) swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


_pending: list[int] = []  # the signal received, until its Stopped has been caught
_received: list[int] = []


def check() -> None:
    """Raise :class:`Stopped` again if a signal's first raise was swallowed."""
    if _pending:
        raise Stopped(_pending[0])


def caught(stop: Stopped) -> None:
    """Mark ``stop`` as delivered: :func:`check` stops raising it."""
    _pending.clear()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM raise :class:`Stopped` (the second one exits)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if _received:
            sys.stderr.write(f"\nerror: {signal.Signals(signum).name} again: exiting now\n")
            os._exit(128 + signum)
        _received.append(signum)
        _pending.append(signum)
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
