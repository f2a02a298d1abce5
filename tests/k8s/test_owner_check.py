"""The driver's read of its own Job on its thread (``sematic_k8s.executors.kubernetes_owner.OwnerCheck``): a read
ended by what is not an Exception (an interrupt, a SystemExit raised in the API client's call path) is a failed read,
and the next one is made (was: the read left marked under way, no read made again)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from sematic_k8s.executors.kubernetes_attempts import KubeStats
from sematic_k8s.executors.kubernetes_owner import OwnerCheck
from sematic_k8s.k8s.client import Backoff


class Interrupted(BaseException):
    """Not an Exception, as KeyboardInterrupt and SystemExit are not."""


class FirstReadInterrupted:
    """The driver's Job ``uid``, its first read ended by :class:`Interrupted` (in process: the read's own call)."""

    def __init__(self, uid: str) -> None:
        self.uid, self.reads = uid, 0

    def read_job(self, name: str, backoff: Backoff | None = None) -> Any:  # noqa: ANN401 - a V1Job's shape
        self.reads += 1
        if self.reads == 1:
            raise Interrupted("the read's thread interrupted")
        return SimpleNamespace(metadata=SimpleNamespace(uid=self.uid))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread ends by it
def test_a_read_ended_by_a_base_exception_is_a_failed_read_and_the_next_read_is_made() -> None:
    kube = FirstReadInterrupted("uid-1")
    owner = OwnerCheck(kube, every=0.0, backoff=Backoff(), stats=KubeStats())  # type: ignore[arg-type]
    failed = []  # the failed read, as the loop took it
    for _ in range(1000):  # the loop's passes, until a second read is made
        owner.check(("driver-job", "uid-1"), time.monotonic())
        failed += [owner.unread] if owner.unread is not None else []
        if kube.reads == 2:
            break
        time.sleep(0.01)
    owner.stop()
    assert kube.reads == 2, "no read made again after a read ended by a BaseException"
    assert failed, "the read ended by a BaseException was not taken as a failed read"
