"""Interrupting a func body while it runs: its resolution canceled meanwhile, or its run past its timeout.

A :class:`BodyGuard` belongs to one thread and lets any other thread interrupt the body that thread runs through
:meth:`BodyGuard.call`, raising :class:`~sematic_k8s.errors.RunInterrupted` in it. Two kinds of thread use it:

- the resolving thread (the LocalResolver's ``max_parallelism=1``, the default; a driver's inline funcs), which sees
  no cancel until its body returns: the loop makes a guard for it, and the loop's heartbeat thread, having seen the
  cancel, calls :meth:`BodyGuard.interrupt`;
- a thread of the in-process executor's own (``max_parallelism > 1``, a func with a ``timeout``): each body there has a
  guard of its own, which the executor stops (:meth:`BodyGuard.stop`) when the run is canceled or past its timeout.

How it is raised:

- on the main thread, by a real SIGINT sent to that thread (``signal.pthread_kill``), which also ends a blocking call
  (``time.sleep``, a socket read, a lock's or a subprocess's wait). The guard's own SIGINT handler, installed for the
  resolution, tells it from a person's Ctrl-C: it raises ``RunInterrupted`` for its own signal and hands any other
  SIGINT to the handler that was there before (KeyboardInterrupt, as ever);
- on another thread (or when the SIGINT handler is not Python's: ``SIG_DFL``, or replaced by the body), with
  ``PyThreadState_SetAsyncExc``: raised at the thread's next bytecode, so a blocking C call (``time.sleep(600)``, a
  long C computation) ends first.

A body is interrupted at most once, and only while it runs (under the guard's lock). One that has not surfaced when
the body ends is withdrawn there (the pending exception cleared; a signal taken by the handler without effect), so it
never lands in the code after the body (the loop's bookkeeping, the executor's thread): the interrupt surfaces inside
:meth:`BodyGuard.call` or not at all. A body that catches ``BaseException`` and goes on is not interrupted again.
"""

from __future__ import annotations

import contextvars
import ctypes
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from sematic_k8s.errors import RunInterrupted

T = TypeVar("T")
DRAIN = 1.0  # seconds the guard waits, as it closes, for its own SIGINT still on its way to the handler

_current: contextvars.ContextVar[BodyGuard | None] = contextvars.ContextVar("sematic_k8s_body_guard", default=None)


def current() -> BodyGuard | None:
    """The guard of the resolution loop running on this thread, if any (bodies on other threads have none)."""
    guard = _current.get()
    return guard if guard is not None and guard.thread == threading.get_ident() else None


def _set_async_exc(thread: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in ``thread`` at its next bytecode; None withdraws one not yet raised."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(exc) if exc else None)


class BodyGuard:
    """Lets another thread interrupt the func body that the creating thread runs through :meth:`call`."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self._main = threading.current_thread() is threading.main_thread()
        self._lock = threading.RLock()  # reentrant: the SIGINT handler runs on this thread, maybe inside call's lock
        self._running: float | None = None  # monotonic time the body began; None: no body runs
        self._sent: str | None = None  # how the running body was interrupted: "signal", "async" or not yet
        self._owed = 0  # 1 while a SIGINT this guard sent has not reached its handler yet
        self._previous: Any = None  # the SIGINT handler before this guard's
        self._token: contextvars.Token | None = None
        self._closed = False
        self._stopped = False  # stop() was called: no body begins from now on

    # -- the loop's thread ------------------------------------------------------------------------------------

    def open(self) -> None:
        """Be the guard of this thread's bodies; on the main thread, take SIGINT first (handing on what is not ours)."""
        self._token = _current.set(self)
        if self._main:
            previous = signal.getsignal(signal.SIGINT)
            if callable(previous) or previous == signal.SIG_IGN:
                self._previous = previous
                signal.signal(signal.SIGINT, self._on_sigint)

    def close(self) -> None:
        """No more interrupts; the SIGINT handler as it was (once this guard's own signal, if on its way, came)."""
        with self._lock:
            self._closed = True
        if self._previous is not None:
            deadline = time.monotonic() + DRAIN
            while self._owed and time.monotonic() < deadline:
                time.sleep(0.01)  # the handler runs here, between sleeps, and takes it
            if signal.getsignal(signal.SIGINT) == self._on_sigint:  # unless the pipeline set its own meanwhile
                signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self._token is not None:
            _current.reset(self._token)
            self._token = None

    def call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """``fn(**kwargs)``, interruptible by :meth:`interrupt` while it runs: RunInterrupted is raised from here (also
        when it surfaces just as the body ends), never after."""
        try:
            with self._lock:
                if self._stopped:
                    raise RunInterrupted("stopped before it began")
                self._running, self._sent = time.monotonic(), None
            return fn(**kwargs)
        finally:
            landed: RunInterrupted | None = None
            while True:  # an interrupt on its way may surface in _end (at most once: it is delivered once)
                try:
                    self._end()
                    break
                except RunInterrupted as e:
                    landed = e
            if landed is not None:
                raise landed

    def _end(self) -> None:
        """The body ended: nothing more is delivered, and what was delivered and has not surfaced is withdrawn."""
        with self._lock:
            self._running = None
            if self._sent == "async":
                _set_async_exc(self.thread, None)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            if self._owed:
                self._owed -= 1
                if self._running is not None and self._sent == "signal":
                    raise RunInterrupted("the resolution was canceled")
                return  # sent for a body that ended before it came: nothing to do
        previous = self._previous
        if callable(previous):
            previous(signum, frame)

    # -- other threads ------------------------------------------------------------------------------------------

    def running_since(self) -> float | None:
        """When the body running now began (monotonic), or None."""
        return self._running

    def stop(self) -> bool:
        """For a guard of one body (an executor thread's): interrupt it if it runs, and let no body begin from now on
        (:meth:`call` raises RunInterrupted at once), so a stop just before the body begins is not lost. False when
        no body runs (not begun, or ended) or it was interrupted already."""
        with self._lock:
            self._stopped = True
            return self.interrupt()

    def interrupt(self) -> bool:
        """Interrupt the body running now, once; False when none runs (or it was interrupted already)."""
        with self._lock:
            if self._closed or self._running is None or self._sent is not None:
                return False
            if self._main and self._previous is not None and signal.getsignal(signal.SIGINT) == self._on_sigint:
                self._sent = "signal"
                if not self._owed:  # else the one on its way (sent for a body that ended since) raises it here
                    self._owed = 1  # (a second one sent now would merge with it: signals of one kind do not queue)
                    signal.pthread_kill(self.thread, signal.SIGINT)
            else:
                self._sent = "async"
                _set_async_exc(self.thread, RunInterrupted)
            return True
