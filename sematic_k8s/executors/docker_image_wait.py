"""The Docker executor's runs that wait for its image (:class:`ImageWait`), as a pod in ImagePullBackOff does: one
pull try at a time on a thread of its own (:class:`PullTry`), shared by every waiting run, tried again with backoff
while its registry does not answer, each run failed at its own grace's end in the engine's words, and noted
meanwhile with the try's progress. The executor launches what a try brought; this module holds what waits."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sematic_k8s.docker_pull import pull
from sematic_k8s.docker_pull_progress import PullProgress, pull_note, unpulled_words
from sematic_k8s.docker_pull_wait import PullBackoff, abandoned_words, past_grace, pull_failing
from sematic_k8s.executors.base import Task
from sematic_k8s.executors.docker_create import Refused
from sematic_k8s.executors.remote import Ended
from sematic_k8s.specs import TaskSpec

log = logging.getLogger("sematic_k8s.docker")


class ImageWait:
    """The runs whose worker waits for ``image`` (:attr:`unpulled`, in the order they came) and its pull try
    (:attr:`current`: under way, or ended and its result not yet read), tried again with :class:`PullBackoff`; each
    run waits for ``grace`` seconds from its first failure. ``wake`` is set when a try ends."""

    def __init__(self, client: Any, image: str, grace: float, wake: threading.Event) -> None:  # noqa: ANN401 - docker
        self.client, self.image, self.grace, self.wake = client, image, grace, wake
        self.unpulled: dict[str, Unpulled] = {}  # run id -> its launch, waiting for its image's registry
        self.backoff = PullBackoff()  # when the image's pull is tried again
        self.current: PullTry | None = None  # the image's pull try under way (or ended, its result not yet read)

    def notes(self) -> dict[str, str]:
        """Run id -> what its worker waits for (its image, :func:`~sematic_k8s.docker_pull_progress.pull_note`: its
        pull try's progress while one is under way, in the engine's stream's words, "pulling its image (PROGRESS):
        REF"; once a try failed, that, "...; trying again for up to N s", with "; pulling: PROGRESS" while the next
        try is under way)."""
        pull = self.current
        progress = pull.progress.words() if pull is not None and pull.is_alive() else None
        return {run_id: pull_note("its", self.image, progress, self._failed(u)) for run_id, u in self.unpulled.items()
                if u.said or progress is not None}

    def _failed(self, u: Unpulled) -> str:
        """The wait's words of a run whose image's pull try failed ("" while none did)."""
        return (f"waiting for its image: the Docker engine could not pull {self.image} ({u.said}); trying again for "
                f"up to {self.grace:g} s") if u.said else ""

    def refused(self, launch: Unpulled, e: Refused, failing_since: float | None) -> Ended | None:
        """A launch the engine refused (``e``; a pull try failing since ``failing_since``, monotonic): None when it
        waits for its image (a registry that did not answer, within its grace: back in :attr:`unpulled`), else its
        run's end, CreateContainerError in the engine's words with what to do."""
        spec, now = launch.spec, time.monotonic()
        if launch.since is None and e.passing():
            launch.since = min(now, max(launch.came, failing_since or now))  # joined that try late
        if e.passing() and now - (launch.since or now) < self.grace:
            if not launch.said:
                log.warning("run %s waits for its image: the Docker engine could not pull %s (%s); trying "
                            "again for up to %g s", spec.run_id, self.image, e.said, self.grace)
            launch.said = e.said
            self.unpulled[spec.run_id] = launch
            return None
        waited = now - launch.since if launch.since is not None else None
        return Ended(spec.run_id, None, "CreateContainerError", e.words(launch.task, self.image, waited),
                     details={"executor": "docker", "image": self.image})

    def ended_try(self) -> PullTry | None:
        """The try that ended, its result to be read by the runs that waited (the backoff told); None while one is
        under way, or none is."""
        pull = self.current
        if pull is None or pull.is_alive():
            return None
        self.current = None
        if pull.error is None:
            self.backoff.pulled()
        else:
            self.backoff.failed()
        return pull

    def past_grace(self) -> list[Ended]:
        """The end of each waiting run whose grace has passed since its first failure (a failed try, or the engine
        retrying a layer in the try under way, or that try's silence), at its own deadline, whether or not a try is
        under way: in the engine's words, the last failure's (or the silence's), with that try's progress; unless
        that try still downloads (:func:`~sematic_k8s.docker_pull_wait.past_grace`, the launchers' rule too)."""
        pull, now, ended = self.current, time.monotonic(), []
        progress = pull.progress if pull is not None else None
        if progress is not None and progress.retried_at is not None:
            for u in self.unpulled.values():  # the retry's time in the stream, or its own coming: not this look's
                u.since = u.since if u.since is not None else pull_failing(None, progress, u.came)
        for run_id, u in list(self.unpulled.items()):
            if past_grace(u.since, self.grace, progress, u.came):
                del self.unpulled[run_id]
                said = abandoned_words(u.said, progress, u.since) if progress is not None else u.said
                waited = now - (pull_failing(u.since, progress, u.came) or now)
                ended.append(Ended(run_id, None, "CreateContainerError", unpulled_words(self.image, said, waited),
                                   details={"executor": "docker", "image": self.image}))
        return ended

    def next_try(self) -> None:
        """Abandon a try no run waits for any more; start the next one once it is due while runs wait."""
        if not self.unpulled:
            self.abandon()
        elif self.current is None and self.backoff.due():
            self.current = PullTry(self.client, self.image, self.wake)

    def forget(self, run_id: str) -> None:
        """The run no longer waits (stopped); its try abandoned when no other run waits for it."""
        if self.unpulled.pop(run_id, None) is not None and not self.unpulled:
            self.abandon()

    def abandon(self) -> None:
        """No run waits for the try under way: it is ended (the engine's pull with it), its result never read."""
        pull, self.current = self.current, None
        if pull is not None:
            pull.abandon()


class PullTry(threading.Thread):
    """One try of :func:`~sematic_k8s.docker_pull.pull` of ``image`` (silent for
    :data:`~sematic_k8s.docker_pull.PULL_SILENCE` at most), on a daemon thread of its own, started at once:
    ``error`` is what it raised (None: pulled); ``wake`` is set when it ends. :meth:`abandon` ends it within
    :data:`~sematic_k8s.docker_pull.PULL_TICK`, a silent try too, the engine's pull with it."""

    def __init__(self, client: Any, image: str, wake: threading.Event) -> None:  # noqa: ANN401 - a docker client
        super().__init__(name="sk-docker-pull", daemon=True)
        self.client, self.image, self.wake = client, image, wake
        self.error: BaseException | None = None
        self.progress = PullProgress(image)  # what its stream said so far
        self.abandoned = threading.Event()
        self.start()

    def abandon(self) -> None:
        self.abandoned.set()

    def run(self) -> None:
        try:
            pull(self.client, self.image, progress=self.progress, abandon=self.abandoned.is_set)
        except BaseException as e:  # noqa: BLE001 - read by the executor's loop (ended_try)
            self.error = e
        finally:
            self.wake.set()


@dataclass(slots=True)
class Unpulled:
    """A worker's launch (``launch``'s arguments) that waits for its image, its pull failing since ``since``
    (monotonic: a try failed, or the engine retried a layer; None: no failure yet), its last failed try as the
    engine ``said`` ("" none failed)."""

    spec: TaskSpec
    task: Task
    env: dict[str, str]
    since: float | None = None
    said: str = ""
    came: float = field(default_factory=time.monotonic)  # when it began to wait
