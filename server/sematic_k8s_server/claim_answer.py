"""A rerun's claim's answer and note: what the rerun request is answered, and what the claim says its launch waits
for, set together as the launch goes (:mod:`.reruns` has the rules).

The request waits for its answer: the driver started, the launch waits (a wait's words, :meth:`ClaimAnswer.waiting`),
it failed (:meth:`ClaimAnswer.failed`: the request's 502), or its launch has begun a step that may be long
(:meth:`ClaimAnswer.pending`: an image's pull, a slow Kubernetes API) and went on for the answer window: then it is
answered, the claim noted with that step's words. What comes after the answer is noted on the claim (a failure is
recorded by its caller).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("sematic_k8s_server")


class ClaimAnswer:
    """The answer to the request of the rerun claimed as ``root_id`` and the note on its claim (``noted``: told the
    note's words, None to clear it), under one lock: notes in the order they were said, the answer given once."""

    def __init__(self, root_id: str | None, noted: Callable[[str | None], None]) -> None:
        self.root_id = root_id
        self._noted = noted
        self._answer: Future[None] = Future()  # the request's: set when the driver started, waits, or failed
        self._pending: Future[str] = Future()  # set when the launch begins a long step: its claim's note then
        self._lock = threading.Lock()
        self._said = False  # its claim notes a wait (cleared once the driver started)
        self._warned = False  # its wait's first words were logged (once)
        self._step = ""  # what pending() was last told: the step's start, then its progress

    def _note(self, words: str | None) -> None:  # with the lock held
        self._said = words is not None
        try:
            self._noted(words)
        except Exception:  # noqa: BLE001 - the store: a note unwritten, the launch goes on
            log.warning("rerun %s: could not note its wait on its claim", self.root_id, exc_info=True)

    def waiting(self, words: str) -> None:
        """The launch waits (told again as the words change, e.g. its pull's progress): noted, logged once, and the
        request answered now; the launch goes on."""
        with self._lock:
            self._note(words)
            if not self._warned:
                log.warning("rerun %s: %s", self.root_id, words)
                self._warned = True
            if not self._answer.done():
                self._answer.set_result(None)

    def pending(self, words: str) -> None:
        """The launch begins a step that may be long (``words`` say what it is doing): the request is answered
        :data:`~.reruns.ANSWER_WINDOW` on, unless answered before, the claim noted so then. Told again with the
        step's progress: noted once answered, while nothing else (:meth:`waiting`) was said since."""
        with self._lock:
            self._step = words
            if not self._pending.done():
                self._pending.set_result(words)
            elif self._said and self._answer.done():
                self._note(words)

    def started(self) -> None:
        """The driver started: the claim's note cleared, the request answered (if not yet)."""
        with self._lock:
            if self._said:
                self._note(None)
            if not self._answer.done():
                self._answer.set_result(None)

    def unneeded(self) -> None:
        """The claim ended while the launch waited: no driver, its record as its end left it; answered."""
        with self._lock:
            if not self._answer.done():
                self._answer.set_result(None)

    def failed(self, error: Exception) -> bool:
        """The launch failed: the request's answer when it has none yet (True); else False (its caller records it)."""
        with self._lock:
            if self._answer.done():
                return False
            self._answer.set_exception(error)
            return True

    def wait(self, window: float, bound: float) -> None:
        """The request's wait: until it is answered, or ``window`` seconds after a long step began (then it answers,
        the claim noted with the step's words); raises the launch's failure when that is the answer. A launch that
        neither answers nor begins a step within ``bound`` seconds (its turn in the queue, or its launcher, never
        came) fails: TimeoutError, in plain words, the request's answer (its caller records the claim failed)."""
        either: list[Future[Any]] = [self._answer, self._pending]
        if not futures.wait(either, bound, return_when=futures.FIRST_COMPLETED).done:
            self.failed(TimeoutError(f"the launch did not begin within {bound:g} s (it waited for a launch slot "
                                     "behind other reruns, or its launcher hung): try again later"))
        if not self._answer.done() and not futures.wait([self._answer], window).done:  # a refusal comes within it
            with self._lock:
                if not self._answer.done():
                    self._note(self._step)
                    log.info("rerun %s: answered while %s", self.root_id, self._step)
                    self._answer.set_result(None)
        self._answer.result()
