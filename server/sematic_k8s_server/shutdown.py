"""A server asked to stop (SIGTERM: a rolling update, a node drain, ``helm upgrade``; Ctrl-C): what never ends by
itself ends at once, so that uvicorn's graceful shutdown waits only for the requests under way.

uvicorn sets its own SIGTERM and SIGINT handlers while it serves (and puts back the ones it found afterwards);
:func:`on_stop`, called as the app starts (in each ``--workers`` process), puts a handler before them that tells the
app first: live event streams end cleanly (their followers connect again, to another replica), rather than being
cut when the graceful shutdown's time is up.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop(stopping: Callable[[], None]) -> Callable[[], None]:
    """Call ``stopping()`` when a signal asks the server to stop, then the handler that was there (uvicorn's). A
    function that takes the handler off again. Does nothing off the main thread (no signal reaches one)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    before: dict[int, Any] = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def handler(sig: int, frame: FrameType | None) -> None:
        stopping()
        previous = before[sig]
        if callable(previous):
            previous(sig, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    for sig in SIGNALS:
        signal.signal(sig, handler)

    def off() -> None:
        for sig, previous in before.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)
    return off


def exit_on_sigterm() -> None:
    """SIGTERM makes the process exit 0 (it was asked to stop, and it did), rather than die of the signal (exit 143
    in Kubernetes' words, an error): before the server serves, at once; while it serves, uvicorn's handler shuts it
    down gracefully and then raises the signal again, which lands here."""
    def handler(sig: int, frame: FrameType | None) -> None:
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, handler)
