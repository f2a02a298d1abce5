"""Calls on threads of their own: racing ones, released together by a barrier once every thread is up; one left to
run in the background, what it raised kept for the test."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


def at_once(calls: Sequence[Callable[[], Any]], timeout: float | None = None) -> list[Any]:
    """Run ``calls`` on threads of their own, released together; what each returned, in order. A call that raised
    is raised again here (the first one's error), after every thread ended or ``timeout`` seconds passed for it."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def race(k: int) -> None:
        start.wait()
        try:
            results[k] = calls[k]()
        except BaseException as e:  # noqa: BLE001 - raised again on the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=race, args=(k,)) for k in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    if errors:
        raise errors[0]
    return results


def on_a_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    """``call()`` on a daemon thread of its own, started: the thread, and what the call raised once it did (empty
    while it runs, and after it returned)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            raised.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised
