"""retrying(): the first attempt without tenacity, then tenacity's, as if it had made the first one."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from sematic_k8s.retries import RetryLater, retrying


def test_an_attempt_that_succeeds_does_not_import_tenacity() -> None:
    code = ("import sys; from sematic_k8s.retries import retrying\n"
            "for attempt in retrying('svc', (OSError,), 5):\n"
            "    with attempt:\n"
            "        pass\n"
            "assert 'tenacity' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.getcwd()}, check=True)


def test_failures_are_retried_with_one_warning(caplog) -> None:
    tries = []
    with caplog.at_level(logging.WARNING, logger="sematic_k8s"):
        for attempt in retrying("svc", (OSError,), 30):
            with attempt:
                tries.append(1)
                if len(tries) < 3:
                    raise ConnectionRefusedError("refused")
    assert len(tries) == 3
    assert [r.getMessage() for r in caplog.records] == ["svc: ConnectionRefusedError: refused; retrying for up to 30 s"]


def test_what_may_not_pass_is_raised_at_once() -> None:
    tries = []
    with pytest.raises(ValueError, match="bad"):
        for attempt in retrying("svc", lambda e: isinstance(e, OSError), 30):
            with attempt:
                tries.append(1)
                raise ValueError("bad")
    assert len(tries) == 1


def test_the_last_failure_is_raised_at_the_end_of_the_window() -> None:
    tries = []
    with pytest.raises(RetryLater, match="HTTP 503") as info:
        for attempt in retrying("svc", (OSError,), 0.3):
            with attempt:
                tries.append(1)
                raise RetryLater("HTTP 503", response=len(tries))
    assert len(tries) >= 2 and info.value.response == len(tries)


def test_a_return_from_an_attempt_ends_them() -> None:
    def get() -> int:
        for attempt in retrying("svc", (OSError,), 30):
            with attempt:
                if not tries:
                    tries.append(1)
                    raise TimeoutError("slow")
                return 42
        raise AssertionError("unreachable")

    tries: list[int] = []
    assert get() == 42 and tries == [1]
