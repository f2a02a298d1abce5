"""Riding out outages (DESIGN.md "Faults"): a call to the server or to storage that fails for a reason that
passes (a refused connection, a dropped one, 502/503/504, 429) is tried again with exponential backoff and
jitter, for a window of time ($SEMATIC_K8S_RETRY_WINDOW, default 120 s), before the error is raised.

Only idempotent calls are retried: the store's writes are (insert if absent, updates that set fields), and
so are storage's (content-addressed puts, conditional appends).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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


Transient = tuple[type[BaseException], ...] | Callable[[BaseException], bool]


def retrying(what: str, transient: Transient, window: float | None = None) -> tenacity.Retrying:
    """Attempts (``for attempt in retrying(...): with attempt: ...``) that retry the ``transient`` errors (types,
    or a test of the exception) and :class:`RetryLater` for ``window`` seconds (default
    $SEMATIC_K8S_RETRY_WINDOW), then raise the last one. ``what`` names the service in the warning logged
    when it first fails."""
    import tenacity  # here: a worker whose first requests succeed never needs it

    window = settings.retry_window() if window is None else window
    retry: tenacity.retry_base
    if isinstance(transient, tuple):
        retry = tenacity.retry_if_exception_type((*transient, RetryLater))
    else:
        test = transient
        retry = tenacity.retry_if_exception(lambda e: isinstance(e, RetryLater) or test(e))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if state.attempt_number == 1:
            log.warning("%s: %s: %s; retrying for up to %g s", what, type(exc).__name__, exc, window)

    return tenacity.Retrying(retry=retry, wait=_wait(),
                             stop=tenacity.stop_before_delay(window), before_sleep=before_sleep, reraise=True)
