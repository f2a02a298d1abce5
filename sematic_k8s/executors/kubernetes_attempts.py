"""What the Kubernetes executor knows of the attempts it runs: each one's Job and what the watches said of it so
far (:class:`Attempt`), what one may wait for (:class:`Waiting`), the attempts in flight found by run id, Job name
or pod name (:class:`Attempts`), and counts of what it asked of the API server (:class:`KubeStats`). No API calls
here.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sematic_k8s.executors.remote import Ended
from sematic_k8s.k8s.pods import PodState
from sematic_k8s.specs import TaskSpec

log = logging.getLogger("sematic_k8s.k8s")


@dataclass
class KubeStats:
    """What the executor asked of the API server (benchmarks and tests read it)."""

    creates: int = 0
    conflicts: int = 0
    reattached: int = 0
    deletes: int = 0
    pod_deletes: int = 0  # pods left running by a Job deleted without them
    log_reads: int = 0
    owner_reads: int = 0
    relaunches: int = 0
    event_reads: int = 0
    requeued: int = 0
    job_lists: int = 0
    timeouts: int = 0
    secret_creates: int = 0
    secret_deletes: int = 0
    refreshes: int = 0  # task Secrets made again with fresh URLs while their pods waited for room
    tasks_stored: int = 0  # tasks too large for their Secret, stored (the Secret holds a presigned GET of them)
    tasks_deleted: int = 0  # stored tasks deleted: their attempt ended or ran again, or a refresh replaced them
    waits: dict[str, int] = field(default_factory=dict)  # what attempts began to wait for -> how many did


class Waiting(enum.Enum):
    """What an attempt waits for, reported, never failed; its value begins the note the attempt says it in (and names
    it in :attr:`KubeStats.waits`)."""

    CAPACITY = "waiting for capacity"  # its pod is Unschedulable: room on a node
    QUOTA = "waiting for quota"  # its pod is not made: a ResourceQuota it fits in is used up for now
    CREATE = "waiting to create its Job"  # the API server asked to slow down, or was out of reach

    @property
    def for_room(self) -> bool:
        """Its pod waits for room on no node (its task Secret, unread by any kubelet, may be made again)."""
        return self in (Waiting.CAPACITY, Waiting.QUOTA)


@dataclass
class Attempt:
    """One attempt being run: its Job, and what the watches said about it so far."""

    spec: TaskSpec
    job_name: str
    make_body: Callable[[int], dict[str, Any]]  # relaunch number -> Job manifest
    timeout: float | None = None
    make_secret: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # Job manifest -> its task Secret (URLs
    # presigned at each call), for a task that carries presigned URLs
    secret: str | None = None  # the task Secret made for its Job (deleted when the attempt ends or runs again)
    secret_made: float | None = None  # when it was made (monotonic): made again while its pod waits for room
    task_copies: list[str] = field(default_factory=list)  # storage keys of its task stored for its Secrets, oldest
    # first (a task too large for a Secret): deleted when the attempt ends or runs again, the older ones by a refresh
    created: float = float("inf")  # when its Job was known to exist (monotonic)
    job_uid: str | None = None  # its Job's uid (from its create, the start-up list, a read or the Job watch): its
    # pods carry it (controller ownerReference, labels); a pod an older Job of that name made is not this attempt's
    relaunches: int = 0
    pod_name: str | None = None
    pod_uid: str | None = None  # its pod's uid, when its labels say it is this run's worker (else never deleted)
    stuck: PodState | None = None
    stuck_since: float | None = None
    job_failed: tuple[str, str | None] | None = None
    job_failed_at: float | None = None
    stopping: PodState | None = None  # its pod is being deleted and has not ended yet (what its ending will be)
    waiting: str | None = None  # what it waits for, in words (capacity, quota, its Job's creation): reported
    waiting_for: Waiting | None = None  # what it waits for, as the executor tests it
    waited_since: float | None = None
    waited: float = 0.0  # seconds spent waiting so far
    quiet: bool = False  # no pod yet, or a pod not started: its Events are read now and then
    event_reads: int = 0
    timed: bool = False  # the func's timeout is counting (from the worker container's start)

    def wait(self, kind: Waiting, detail: str, waits: dict[str, int]) -> None:
        """Note what the attempt waits for (``kind``, said as "<kind's words>: <detail>"); logged, and counted in
        ``waits`` by kind, when the kind changes."""
        why = f"{kind.value}: {detail}"
        if self.waiting_for is not kind:
            log.info("run %s (%s): %s", self.spec.run_id, self.job_name, why)
            waits[kind.value] = waits.get(kind.value, 0) + 1
            if self.waiting_for is None:
                self.waited_since = time.monotonic()
        self.waiting, self.waiting_for = why, kind

    def stop_waiting(self) -> None:
        """It waits no more: the time it waited is added up."""
        if self.waiting_for is not None:
            now = time.monotonic()
            self.waited += now - (self.waited_since or now)
            log.info("run %s: %s no more", self.spec.run_id, self.waiting_for.value)
        self.waiting = self.waiting_for = self.waited_since = None

    def where(self, namespace: str, image: str, node: str | None = None) -> dict[str, Any]:
        """Where the attempt runs (or ran): its executor's details of it."""
        details: dict[str, Any] = {"executor": "kubernetes", "namespace": namespace, "job": self.job_name,
                                   "pod": self.pod_name, "node": node, "image": image}
        if self.relaunches:
            details["relaunches"] = self.relaunches
        if self.waited >= 1:
            details["waited_seconds"] = round(self.waited, 1)
        return {k: v for k, v in details.items() if v is not None}

    def ending(self, state: PodState, logs: str, namespace: str, image: str) -> Ended:
        """How the attempt ended, as its pod's ``state`` says, with its last ``logs`` and where it ran."""
        return Ended(self.spec.run_id, state.exit_code, state.reason, state.message, logs,
                     self.where(namespace, image, state.node))


class Attempts:
    """The attempts in flight by run id, and by the names of their Jobs and pods; what the pod watch said of Jobs
    not tracked yet (a restarted driver's first list comes before its launches); the Jobs of attempts that ended
    (their pods' later events, finalizers and TTL, are of no interest)."""

    def __init__(self) -> None:
        self.by_run: dict[str, Attempt] = {}
        self.by_job: dict[str, str] = {}  # Job name -> run id
        self.by_pod: dict[str, str] = {}  # pod name -> run id
        self.untracked: dict[str, tuple[dict[str, Any], PodState]] = {}  # Job name -> (pod, its last state) seen
        self.ended_jobs: set[str] = set()

    def get(self, run_id: str) -> Attempt | None:
        return self.by_run.get(run_id)

    def __getitem__(self, run_id: str) -> Attempt:
        return self.by_run[run_id]

    def all(self) -> list[Attempt]:
        return list(self.by_run.values())

    def track(self, a: Attempt) -> None:
        self.by_run[a.spec.run_id] = a
        self.by_job[a.job_name] = a.spec.run_id

    def of_job(self, job_name: str) -> Attempt | None:
        run_id = self.by_job.get(job_name)
        return self.by_run.get(run_id) if run_id is not None else None

    def run_of(self, name: str) -> str | None:
        """The run whose Job or pod is called ``name``."""
        return self.by_job.get(name) or self.by_pod.get(name)

    def saw_pod(self, a: Attempt, pod_name: str, uid: str | None) -> None:
        if a.pod_name != pod_name:
            self.by_pod.pop(a.pod_name or "", None)
            self.by_pod[pod_name] = a.spec.run_id
        a.pod_name, a.pod_uid = pod_name, uid

    def relaunched(self, a: Attempt, job_name: str) -> None:
        """The attempt runs again in Job ``job_name``: its old Job and pod, and what the watches said of them, are
        forgotten."""
        del self.by_job[a.job_name]
        self.by_pod.pop(a.pod_name or "", None)
        a.job_name, a.pod_name, a.pod_uid, a.stuck, a.stuck_since, a.job_failed = job_name, None, None, None, None, None
        a.job_uid = None
        a.stopping = None
        a.quiet = a.timed = False
        self.by_job[a.job_name] = a.spec.run_id

    def drop(self, a: Attempt) -> None:
        self.ended_jobs.add(a.job_name)
        self.untracked.pop(a.job_name, None)
        self.by_pod.pop(a.pod_name or "", None)
        self.by_run.pop(a.spec.run_id, None)
        self.by_job.pop(a.job_name, None)
