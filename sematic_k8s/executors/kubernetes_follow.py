"""Following the Kubernetes executor's attempts: what the watches say of their pods and Jobs, and what Warning
Events say of a pod that is not created or does not start, turned into verdicts (:class:`Verdict`) for the
executor to carry out: launch the attempt again, or finish it. No API calls here: the executor reads Events for
it when they cannot be watched.

The worker is read from its own container's status (sidecars do not count; a classic sidecar that never exits
does not keep the run going). Pod endings are recorded in plain words: OOMKilled; Evicted and kubelet
rejections (OutOfcpu, OutOfmemory, NodeAffinity, TaintToleration), launched again (up to ``eviction_relaunches``
times) before the loop sees them; ImagePullBackOff / ErrImagePull / CreateContainerConfigError (failed after a grace
period); a pod never created (``FailedCreate`` Events: Pod Security, a missing ServiceAccount, a webhook) or never
started (``FailedCreatePodSandBox`` / ``FailedMount`` Events), failed after ``create_grace`` with the Event's message
(at once when a LimitRange refuses what the pod asks, which every try of its Job controller meets again);
DeadlineExceeded (the func's ``timeout``, counted from the worker container's start, not from scheduling or the
image pull). A pod waiting for room (``Unschedulable``, or a ResourceQuota that it fits) waits as long as it
takes: that is only reported ("waiting for capacity"). Watches that keep being refused raise the errors in plain
words: ``KubernetesForbidden`` (403) or ``KubernetesUnauthorized`` (401).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sematic_k8s.errors import KubernetesForbidden, KubernetesUnauthorized
from sematic_k8s.executors.kubernetes_attempts import Attempt, Attempts, Waiting
from sematic_k8s.k8s.events import BLOCKING_EVENTS, PLAIN, fits_quota, message_of, problem, refused_for_good, timestamp
from sematic_k8s.k8s.executor_settings import KubernetesSettings
from sematic_k8s.k8s.pods import PodState, job_failure, made_by, owner_job, pod_state, worker_uid
from sematic_k8s.k8s.watch import Event

log = logging.getLogger("sematic_k8s.k8s")

JOB_FAILED_GRACE = 5.0  # seconds a failed Job waits for its pod's own (more precise) ending
EVENT_READS_PER_TURN = 20  # Events lists of quiet attempts per turn of the loop, at most
STUCK_GRACE = 120.0  # seconds a pod stuck for a reason without a grace of its own is given
ASKS = "the func's cpu= and memory="  # where a worker's requests come from (refused_for_good)
CPU_LIMIT = "or give the executor cpu_limits=True (its cpu limit is then its request)"


@dataclass(frozen=True)
class Verdict:
    """What became of an attempt: its pod lost its node, so it runs again (``relaunch``), or it ended as ``state``
    says (its Job deleted when ``delete``: stuck, past its deadline, or kept running by a sidecar; its pod deleted
    when ``delete_pod``: someone deleted its Job and left its pods running, ``kubectl delete --cascade=orphan``; the
    pods are found by the labels the Job controller set on them, whether or not the watch showed them yet)."""

    attempt: Attempt
    state: PodState
    relaunch: bool = False
    delete: bool = False
    delete_pod: bool = False


class Follower:
    """What the watches say of the attempts in flight (``attempts``), and when each must be decided.

    Holds its timers (run id -> when a stuck pod or a failed Job is decided), its checks (run id -> when to look
    at the Events of a quiet Job or pod) and the newest blocking Event of each Job or pod. Starts the clock of a
    func's timeout in ``deadlines`` (the executor's: run id -> (monotonic deadline, timeout)) when the worker
    container starts; counts in ``waits`` the attempts that begin to wait, by what they wait for.
    """

    def __init__(self, attempts: Attempts, settings: KubernetesSettings, namespace: str,
                 deadlines: dict[str, tuple[float, float]], waits: dict[str, int]) -> None:
        self.attempts, self.settings, self.namespace = attempts, settings, namespace
        self.deadlines, self.waits = deadlines, waits
        s = settings
        self.graces = {"ImagePullBackOff": s.pull_grace, "ErrImagePull": s.pull_grace,
                       "CreateContainerConfigError": s.config_grace, "CreateContainerError": s.config_grace,
                       **dict.fromkeys(BLOCKING_EVENTS, s.create_grace)}
        self.timers: dict[str, float] = {}  # run id -> when its stuck pod or failed Job must be decided
        self.checks: dict[str, float] = {}  # run id -> when to read the Events of its quiet Job or pod
        self.blocking: dict[str, tuple[int, str, str]] = {}  # Job or pod name -> newest (rv, reason, message)
        self.events_watched = False  # Warning Events arrive on a watch (else they are read per quiet attempt)

    # -- what the executor tells it ---------------------------------------------------------------

    def follow(self, a: Attempt) -> Verdict | None:
        """The attempt's Job exists: follow it (the pod watch may have seen its pod before it was tracked)."""
        a.created = time.monotonic()  # a list that starts later must show the Job
        if a.waiting_for is Waiting.CREATE:
            a.stop_waiting()
        seen = self.attempts.untracked.pop(a.job_name, None)
        if seen is not None and _made(a, seen[0]):
            return self._apply(a, *seen)
        a.quiet = True
        self.checks[a.spec.run_id] = a.created + self.settings.event_check
        return None

    def relaunched(self, a: Attempt) -> None:
        """The attempt runs again in a new Job: the clocks of the old one stop."""
        self.deadlines.pop(a.spec.run_id, None)
        self.timers.pop(a.spec.run_id, None)
        self.checks.pop(a.spec.run_id, None)

    def forget(self, a: Attempt) -> None:
        """The attempt ended or was stopped."""
        self.blocking.pop(a.job_name, None)
        self.blocking.pop(a.pod_name or "", None)
        self.timers.pop(a.spec.run_id, None)
        self.checks.pop(a.spec.run_id, None)

    def wake_at(self) -> float | None:
        """When the next timer or check is due (monotonic), if any is."""
        return min([*self.timers.values(), *self.checks.values()], default=None)

    # -- what the watches say ---------------------------------------------------------------------

    def handle(self, ev: Event) -> Iterator[Verdict]:
        """Take in one watch event; each verdict is carried out before the next object is looked at.
        KubernetesForbidden or KubernetesUnauthorized when the pod or Job watch is refused for good."""
        if ev.kind == "event":
            self._on_events(ev)
            return
        if ev.type == "ERROR":
            what = "pods" if ev.kind == "pod" else "Jobs"
            if ev.obj.get("code") == 401:
                raise KubernetesUnauthorized.refusing(f"watch {what}", self.namespace, str(ev.obj.get("message")))
            raise KubernetesForbidden(
                f"the Kubernetes API refuses to let this driver watch {what} in namespace {self.namespace} "
                f"({ev.obj.get('code')}: {ev.obj.get('message')}); give its ServiceAccount a Role that allows "
                f"list and watch on pods and jobs there (the chart's driver Role does)")
        if ev.kind == "pod":
            for obj in ev.items if ev.type == "SYNC" else [ev.obj]:
                verdict = self._on_pod(obj, ev.type == "DELETED")
                if verdict is not None:
                    yield verdict
            return
        if ev.type == "SYNC":  # tracked Jobs that are gone (deleted while the watch was away; another of the name)
            uids = {(o.get("metadata") or {}).get("name"): (o.get("metadata") or {}).get("uid") for o in ev.items}
            for a in self.attempts.all():
                gone = a.job_name not in uids or (a.job_uid is not None and uids[a.job_name] != a.job_uid)
                if gone and a.created < ev.since:
                    self._on_job_gone(a)
        for obj in ev.items if ev.type == "SYNC" else [ev.obj]:
            meta = obj.get("metadata") or {}
            tracked = self.attempts.of_job(meta.get("name", ""))
            if tracked is None or (tracked.job_uid and meta.get("uid") and meta["uid"] != tracked.job_uid):
                continue  # not ours, or an older Job of that name
            a = tracked
            a.job_uid = meta.get("uid") or a.job_uid
            if ev.type == "DELETED":
                self._on_job_gone(a)
                continue
            failure = job_failure(obj)
            if failure is None or a.job_failed is not None:
                continue
            a.job_failed, a.job_failed_at = failure, time.monotonic()
            if failure[0] == "DeadlineExceeded":  # the pod is being killed: its ending says less than this
                yield Verdict(a, PodState("Failed", terminal=True, reason="DeadlineExceeded", message=failure[1],
                                          started=a.pod_name is not None), delete=True)
            else:
                self.timers[a.spec.run_id] = a.job_failed_at + JOB_FAILED_GRACE

    def _on_events(self, ev: Event) -> None:
        """Warning Events that say why a Job has no pod or a pod does not start: noted, and its attempt (if it is
        quiet) looked at now."""
        if ev.type == "ERROR":  # no permission to watch Events: read them per quiet attempt instead
            log.warning("cannot watch Events in %s (%s): reading them per waiting pod instead", self.namespace,
                        ev.obj.get("message"))
            self.events_watched = False
            return
        now = time.monotonic()
        for obj in ev.items if ev.type == "SYNC" else [ev.obj]:
            name = obj["name"]
            if ev.type == "DELETED" or (name in self.blocking and self.blocking[name][0] > obj["rv"]):
                continue
            self.blocking[name] = (obj["rv"], obj["reason"], obj["message"])
            run_id = self.attempts.run_of(name)
            if run_id in self.checks:
                self.checks[run_id] = now

    def _on_job_gone(self, a: Attempt) -> None:
        if a.job_failed is None:
            a.job_failed, a.job_failed_at = ("JobDeleted", f"Job {a.job_name} was deleted"), time.monotonic()
            self.timers[a.spec.run_id] = a.job_failed_at + JOB_FAILED_GRACE

    def _on_pod(self, pod: dict[str, Any], deleted: bool) -> Verdict | None:
        job = owner_job(pod)
        if not job:
            return None
        a = self.attempts.of_job(job)
        if a is not None:  # made by its Job, not by an older one of that name (deleted without its pod)
            return self._apply(a, pod, pod_state(pod, deleted=deleted)) if _made(a, pod) else None
        if deleted or job in self.attempts.ended_jobs:
            self.attempts.untracked.pop(job, None)
        else:  # not ours yet (a restarted driver's SYNC before its launches): kept until it is
            self.attempts.untracked[job] = (pod, pod_state(pod))
        return None

    def _apply(self, a: Attempt, pod: dict[str, Any], state: PodState) -> Verdict | None:
        name = (pod.get("metadata") or {}).get("name", "")
        self.attempts.saw_pod(a, name, worker_uid(pod, a.spec.root_id, a.spec.run_id))
        run_id = a.spec.run_id
        if state.started and a.timeout and not a.timed:
            self._start_clock(a, state)
        a.stopping = state if state.stopping else None
        if state.terminal:
            return self._ended(a, state)
        if state.fatal:
            return Verdict(a, state, delete=True)
        if state.waiting:  # Unschedulable: wait for room as long as it takes (a scale-up, other pods ending)
            a.wait(Waiting.CAPACITY, f"{state.message or state.reason}", self.waits)
        elif a.waiting_for is not None and a.waiting_for is not Waiting.CREATE:
            a.stop_waiting()
        if state.creating:  # scheduled, not started: Events say whether something blocks it
            if a.stuck is not None and a.stuck.reason == "FailedCreate":
                self._unstick(a)  # it has a pod after all
            if not a.quiet:
                a.quiet, a.event_reads = True, 0
                self.checks[run_id] = time.monotonic() + self.settings.event_check
            return None
        a.quiet = False
        self.checks.pop(run_id, None)
        if state.stuck:
            if a.stuck is None or problem(a.stuck.reason) != problem(state.reason):  # a pull error flips between
                a.stuck_since = time.monotonic()  # ErrImagePull and ImagePullBackOff: one problem, one grace
                self.timers[run_id] = a.stuck_since + self.graces.get(state.reason or "", STUCK_GRACE)
            a.stuck = state
        elif a.stuck is not None:  # it got going after all
            self._unstick(a)
        return None

    def _ended(self, a: Attempt, state: PodState) -> Verdict:
        """The attempt's pod ended as ``state`` says: run it again if it lost its node (and may), else finish it."""
        if state.retryable and a.relaunches < self.settings.eviction_relaunches:
            return Verdict(a, state, relaunch=True)
        return Verdict(a, state, delete=state.lingering)

    def _unstick(self, a: Attempt) -> None:
        a.stuck = a.stuck_since = None
        if a.job_failed is None:
            self.timers.pop(a.spec.run_id, None)

    def _start_clock(self, a: Attempt, state: PodState) -> None:
        """The worker container started: its func's timeout counts from then (not from the pod's creation:
        scheduling, waiting for capacity and pulling the image do not count)."""
        a.timed = True
        started = timestamp(state.started_at)
        elapsed = max(0.0, time.time() - started - 1.0) if started is not None else 0.0  # whole seconds
        self.deadlines[a.spec.run_id] = (time.monotonic() + float(a.timeout or 0) - elapsed, float(a.timeout or 0))

    # -- what time says ---------------------------------------------------------------------------

    def due(self, now: float) -> Iterator[Verdict]:
        """Attempts whose timer ran out: a failed Job whose pod said nothing more, a pod stuck past its grace."""
        for run_id, when in list(self.timers.items()):
            if when > now:
                continue
            del self.timers[run_id]
            a = self.attempts.get(run_id)
            if a is None:
                continue
            if a.job_failed is not None and a.stopping is not None:  # its pod is still stopping (a sidecar that
                # drains, a node that is gone): evicted or deleted says more than the Job's BackoffLimitExceeded
                yield self._ended(a, dataclasses.replace(a.stopping, terminal=True, stopping=False))
            elif a.job_failed is not None:  # no pod ending came: the Job's word is all there is
                reason, message = a.job_failed
                yield Verdict(a, PodState("Failed", terminal=True, reason=reason, message=message,
                                          started=a.pod_name is not None),
                              delete_pod=reason == "JobDeleted")  # deleted without its pod: it runs on, unowned
            elif a.stuck is not None and a.stuck.fatal:  # refused for good: no grace
                yield Verdict(a, a.stuck, delete=True)
            elif a.stuck is not None:
                grace = self.graces.get(a.stuck.reason or "", STUCK_GRACE)
                message = f"{a.stuck.message or a.stuck.reason} (still so after {grace:g}s)"
                yield Verdict(a, dataclasses.replace(a.stuck, message=message), delete=True)

    def check_events(self, now: float, read: Callable[[str], dict[str, Any] | None]) -> None:
        """Look at the Events of Jobs without a pod and of pods that do not start (as watched, else as ``read``
        returns the newest blocking one of a Job or pod): a FailedCreate (Pod Security, a missing ServiceAccount,
        a webhook), FailedCreatePodSandBox or FailedMount makes the attempt stuck (failed after
        ``create_grace``); an exceeded quota it fits in is waited out; a LimitRange's refusal of what the pod asks
        fails it at once, saying what to do."""
        reads = 0
        for run_id, when in list(self.checks.items()):
            if when > now:
                continue
            a = self.attempts.get(run_id)
            if a is None or not a.quiet:
                self.checks.pop(run_id, None)
                continue
            name = a.pod_name or a.job_name
            if self.events_watched:  # they come to us: no API call
                self.checks[run_id] = now + self.settings.event_check
                known = self.blocking.get(name)
                if known is None:
                    continue
                _, reason, message = known
            else:
                if reads >= EVENT_READS_PER_TURN:  # many quiet at once (a slow controller, a long pull)
                    self.checks[run_id] = now + self.settings.event_check * random.random()
                    continue
                reads += 1
                a.event_reads += 1  # quiet for long: read less often (10 s, 20 s, ... 160 s)
                self.checks[run_id] = now + self.settings.event_check * 2 ** min(a.event_reads - 1, 4)
                event = read(name)
                if event is None:
                    continue
                reason, message = event.get("reason") or "", message_of(event)
            if reason == "FailedCreate" and fits_quota(message):
                a.wait(Waiting.QUOTA, message, self.waits)
                continue
            fix = refused_for_good(message, ASKS, self.namespace, CPU_LIMIT) if reason == "FailedCreate" else None
            if a.stuck is None or a.stuck.reason != reason:
                a.stuck_since = now
                self.timers[run_id] = now + self.graces.get(reason, self.settings.create_grace)
                log.warning("run %s: %s: %s", run_id, PLAIN.get(reason, reason), message)
            if fix is not None:  # every try meets it again: failed now, not after the grace
                self.timers[run_id] = now
            kind = "Job" if name == a.job_name else "pod"
            a.stuck = PodState("Pending", reason=reason, stuck=True, fatal=fix is not None,
                               message=f"{PLAIN.get(reason, reason)} ({kind} {name}): {message}"
                                       + (f"; {fix}" if fix else ""))


def _made(a: Attempt, pod: dict[str, Any]) -> bool:
    """Whether ``pod`` is of the attempt's Job: the uid of the Job that made it is the Job's (when both are known),
    not another Job's of that name (one deleted without its pod, whose labels still name it)."""
    uid = made_by(pod)
    return a.job_uid is None or uid is None or uid == a.job_uid
