"""Riding out outages (DESIGN.md "Faults"): a call to the server or to storage that fails for a reason that
passes (a refused connection, a dropped one, 502/503/504, 429) is tried again with exponential backoff and
jitter, for a window of time ($SEMATIC_K8S_RETRY_WINDOW, default 120 s), before the error is raised.

Only idempotent calls are retried: the store's writes are (insert if absent, updates that set fields; a driver's
are numbered, so a first attempt landing after its retry changes nothing), and so are storage's
(content-addressed puts, conditional appends).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sematic_k8s import settings

if TYPE_CHECKING:
    import tenacity

log = logging.getLogger("sematic_k8s")
FIRST_WAIT = 0.1  # seconds before the first retry; doubled each time, with jitter
MAX_WAIT = 4.0  # seconds: the longest pause between two tries


class RetryLater(Exception):
    """An answer that asks to be tried again (HTTP 429/502/503/504), ``retry_after`` seconds on if it said."""

    def __init__(self, message: str, retry_after: float | None = None, response: Any = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.response = response


def _wait() -> Any:
    import tenacity

    backoff = tenacity.wait_exponential(multiplier=FIRST_WAIT, max=MAX_WAIT) + tenacity.wait_random(0, FIRST_WAIT)

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        hinted = getattr(exc, "retry_after", None)
        return float(hinted) if hinted is not None else float(backoff(state))
    return wait


class RetriesStopped(Exception):
    """The retries of a thread :func:`stopped_by` a flag, cut short as it was set: what they retried is left undone."""


_stops = threading.local()  # the flag each thread's retry pauses wait on (stopped_by), if any


@contextmanager
def stopped_by(flag: threading.Event) -> Iterator[None]:
    """Within: this thread's retry pauses (:func:`retrying`'s, and S3's own) wait on ``flag``; set, they raise
    :class:`RetriesStopped` (a thread whose owner is closing: it no longer waits out the retry window)."""
    before, _stops.flag = getattr(_stops, "flag", None), flag
    try:
        yield
    finally:
        _stops.flag = before


def check_stopped() -> None:
    """:class:`RetriesStopped` if this thread's retries were stopped (:func:`stopped_by`)."""
    flag = getattr(_stops, "flag", None)
    if flag is not None and flag.is_set():
        raise RetriesStopped("stopped while retrying: its owner closed")


def pause(seconds: float) -> None:
    """A retry's pause: ``seconds``, unless this thread's retries are stopped first (:class:`RetriesStopped`)."""
    flag = getattr(_stops, "flag", None)
    if flag is None:
        time.sleep(seconds)
    elif flag.wait(seconds):
        check_stopped()


Transient = tuple[type[BaseException], ...] | Callable[[BaseException], bool]


class _FirstAttempt:
    """The first of :func:`retrying`'s attempts, made without tenacity: a failure that may be retried is kept
    (``error``), for tenacity to take as its own first; any other is raised."""

    def __init__(self, retryable: Callable[[BaseException], bool]) -> None:
        self.retryable = retryable
        self.error: BaseException | None = None

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if exc is not None and self.retryable(exc):
            self.error = exc
            return True
        return False


def retrying(what: str, transient: Transient, window: float | None = None) -> Iterator[AbstractContextManager[Any]]:
    """Attempts (``for attempt in retrying(...): with attempt: ...``) that retry the ``transient`` errors (types,
    or a test of the exception) and :class:`RetryLater` for ``window`` seconds (default
    $SEMATIC_K8S_RETRY_WINDOW), then raise the last one. ``what`` names the service in the warning logged
    when it first fails.

    tenacity is imported once the first attempt has failed (a driver or a worker whose requests succeed never
    needs it); it takes that failure as its own first attempt's, so that what follows (the warning, the waits,
    the end of the window, counted from the first attempt's start) is as if it had made that attempt."""
    window = settings.retry_window() if window is None else window
    if isinstance(transient, tuple):
        types = (*transient, RetryLater)

        def retryable(e: BaseException) -> bool:
            return isinstance(e, types)
    else:
        test = transient

        def retryable(e: BaseException) -> bool:
            return isinstance(e, RetryLater) or test(e)

    start = time.monotonic()
    first = _FirstAttempt(retryable)
    yield first
    if first.error is None:
        return
    import tenacity

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if state.attempt_number == 1:
            log.warning("%s: %s: %s; retrying for up to %g s", what, type(exc).__name__, exc, window)

    attempts = iter(tenacity.Retrying(retry=tenacity.retry_if_exception(retryable), wait=_wait(),
                                      stop=tenacity.stop_before_delay(window - (time.monotonic() - start)),
                                      before_sleep=before_sleep, sleep=pause, reraise=True))
    with next(attempts):
        raise first.error  # tenacity's first attempt: the failure already met
    yield from attempts
