"""Run each Run attempt as a Kubernetes Job (one pod).

``KubernetesExecutor`` creates one Job per attempt (deterministic name ``sk-<run id>-<attempt>``, owned by
the driver's Job), and learns how pods end from two watch streams (pods and Jobs of the resolution,
label-selected) read by daemon threads: no per-run polling. Pod endings are recorded in plain words:
OOMKilled, Evicted (launched again, up to ``eviction_relaunches`` times, before the loop sees it),
ImagePullBackOff / ErrImagePull / CreateContainerConfigError / Unschedulable (failed after a grace
period), DeadlineExceeded (the func's ``timeout``), with the pod's last log lines read before it is gone.

API calls are retried on 429 and 5xx with backoff; a 409 on create means the Job is already there (a
restarted driver, or a create that went through before its answer was lost): it is re-attached, never
duplicated; a 404 on delete is fine. Job creation is rate-limited (token bucket, ``creates_per_second``).

The API client comes from :mod:`sematic_k8s.k8s.client`; the manifests, pod states and watches from the
rest of :mod:`sematic_k8s.k8s`. The driver's own Job is started by :mod:`sematic_k8s.launchers.kubernetes`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sematic_k8s.executors.base import Task
from sematic_k8s.executors.remote import Ended, RemoteExecutor
from sematic_k8s.k8s import manifests
from sematic_k8s.k8s.client import Backoff, TokenBucket, api_call, api_message, current_namespace, make_api_client
from sematic_k8s.k8s.manifests import driver_job_name, to_dict, worker_job
from sematic_k8s.k8s.pods import PodState, job_failure, owner_job, pod_state
from sematic_k8s.k8s.watch import Event, Watcher
from sematic_k8s.labels import ATTEMPT_LABEL, RESOLUTION_LABEL, ROLE_LABEL, RUN_LABEL
from sematic_k8s.settings import (
    DRIVER_JOB_ENV,
    DRIVER_JOB_UID_ENV,
    STORAGE_SECRET_ENV,
    WORKER_SERVICE_ACCOUNT_ENV,
    worker_env,
)
from sematic_k8s.specs import DriverSpec, TaskSpec
from sematic_k8s.storage.base import Storage

log = logging.getLogger("sematic_k8s.k8s")

JOB_FAILED_GRACE = 5.0  # seconds a failed Job waits for its pod's own (more precise) ending


@dataclass
class KubeStats:
    """What the executor asked of the API server (benchmarks and tests read it)."""

    creates: int = 0
    conflicts: int = 0
    reattached: int = 0
    deletes: int = 0
    log_reads: int = 0
    owner_reads: int = 0
    relaunches: int = 0


@dataclass
class _Attempt:
    """One attempt being run: its Job, and what the watches said about it so far."""

    spec: TaskSpec
    job_name: str
    make_body: Callable[[int], dict[str, Any]]  # relaunch number -> Job manifest
    created: float = float("inf")  # when its Job was known to exist (monotonic)
    relaunches: int = 0
    pod_name: str | None = None
    stuck: PodState | None = None
    stuck_since: float | None = None
    job_failed: tuple[str, str | None] | None = None
    job_failed_at: float | None = None


@dataclass(frozen=True)
class WorkerJobSettings:
    """How each worker's Job looks (the keywords of :func:`sematic_k8s.k8s.manifests.worker_job`).

    ``service_account``: the workers' (default $SEMATIC_K8S_WORKER_SERVICE_ACCOUNT); ``storage_secret``: a
    Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN (default
    $SEMATIC_K8S_STORAGE_SECRET); ``automount_token``: workers get no API token unless set.
    """

    service_account: str | None = None
    storage_secret: str | None = None
    node_selector: Mapping[str, str] | None = None
    tolerations: Sequence[Mapping[str, Any]] | None = None
    image_pull_secrets: Sequence[str] = ()
    ttl_seconds_after_finished: int | None = 3600
    deadline_slack: int = 600
    cpu_limits: bool = False
    labels: Mapping[str, str] | None = None
    automount_token: bool = False


@dataclass(frozen=True)
class KubernetesSettings:
    """What the KubernetesExecutor is told; ``DriverSpec.executor_settings`` holds the same keys, flat (see
    :meth:`from_options`).

    ``namespace`` (default: :func:`~sematic_k8s.k8s.client.current_namespace`), ``host`` (an API server URL
    without credentials), ``env`` (plain env for workers; default the driver's pass-through env), ``owner``
    ((name, uid) of the driver Job; default from the downward API or by reading the driver's Job; ``False``:
    none), ``pull_grace`` / ``unschedulable_grace`` / ``config_grace`` (seconds before a stuck pod fails),
    ``creates_per_second`` and ``create_burst`` (the creation rate limit), ``eviction_relaunches``,
    ``log_tail``, ``watch_timeout``; ``job``: each worker Job's settings.
    """

    namespace: str | None = None
    host: str | None = None
    env: Mapping[str, str] | None = None
    owner: tuple[str, str] | list[str] | bool | None = None
    pull_grace: float = 120.0
    unschedulable_grace: float = 300.0
    config_grace: float = 60.0
    creates_per_second: float = 20.0
    create_burst: int | None = None
    eviction_relaunches: int = 3
    log_tail: int = 40
    watch_timeout: int = 300
    job: WorkerJobSettings = field(default_factory=WorkerJobSettings)

    def with_options(self, **options: Any) -> KubernetesSettings:
        """These settings with ``options`` (flat keys of either class) replaced; TypeError for unknown keys."""
        own = {f.name for f in dataclasses.fields(self)} - {"job"}
        job_keys = {f.name for f in dataclasses.fields(WorkerJobSettings)}
        unknown = set(options) - own - job_keys
        if unknown:
            raise TypeError(f"unknown Kubernetes executor setting(s) {sorted(unknown)}; known: "
                            f"{sorted(own | job_keys)}")
        job = dataclasses.replace(self.job, **{k: v for k, v in options.items() if k in job_keys})
        return dataclasses.replace(self, job=job, **{k: v for k, v in options.items() if k in own})

    @classmethod
    def from_options(cls, **options: Any) -> KubernetesSettings:
        return cls().with_options(**options)


class KubernetesExecutor(RemoteExecutor):
    """One Job (one pod) per Run attempt, watched with the Kubernetes watch API.

    Configured by ``settings`` (:class:`KubernetesSettings`) or the same keys as keyword ``options``;
    ``api_client`` and ``backoff`` are live objects for tests and benchmarks.
    """

    enforces_timeouts = False  # each pod's activeDeadlineSeconds is the func's timeout: the kubelet stops it

    def __init__(self, storage: Storage, storage_url: str, image: str, settings: KubernetesSettings | None = None,
                 *, api_client: client.ApiClient | None = None, backoff: Backoff | None = None,
                 **options: Any) -> None:
        super().__init__(storage, storage_url)
        s = (settings or KubernetesSettings()).with_options(**options)
        if "@sha256:" not in image:
            log.warning("worker image %s is not a reference by digest: pods may run other code", image)
        self.image = image
        self.settings = s
        self.namespace = s.namespace or current_namespace()
        self.api = api_client or make_api_client(s.host)
        self.batch, self.core = client.BatchV1Api(self.api), client.CoreV1Api(self.api)
        env = worker_env() if s.env is None else s.env
        storage_secret = s.job.storage_secret or os.environ.get(STORAGE_SECRET_ENV) or None
        if not storage_secret and set(env) & set(manifests.STORAGE_SECRET_KEYS):
            log.warning("S3 credentials are not passed to worker pods as plain env: set the executor's "
                        "storage_secret (a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
        job = dataclasses.replace(
            s.job, storage_secret=storage_secret, image_pull_secrets=tuple(s.job.image_pull_secrets),
            service_account=s.job.service_account or os.environ.get(WORKER_SERVICE_ACCOUNT_ENV) or None)
        self.job_settings: dict[str, Any] = {f.name: getattr(job, f.name) for f in dataclasses.fields(job)}
        self.env = dict(env)
        self.owner_setting = s.owner
        self.owner: tuple[str, str] | None = None
        self.graces = {"Unschedulable": s.unschedulable_grace, "ImagePullBackOff": s.pull_grace,
                       "ErrImagePull": s.pull_grace, "CreateContainerConfigError": s.config_grace,
                       "CreateContainerError": s.config_grace}
        self.bucket = TokenBucket(s.creates_per_second, s.create_burst)
        self.eviction_relaunches = s.eviction_relaunches
        self.log_tail = s.log_tail
        self.watch_timeout = s.watch_timeout
        self.backoff = backoff or Backoff()
        self.watch_backoff = dataclasses.replace(self.backoff, cap=min(self.backoff.cap, 5.0))
        self.stats = KubeStats()
        self.root_id: str | None = None
        self.watchers: list[Watcher] = []
        self.events: queue.Queue[Event] = queue.Queue()
        self.attempts: dict[str, _Attempt] = {}  # run id -> attempt in flight
        self.by_job: dict[str, str] = {}  # Job name -> run id
        self.pods: dict[str, tuple[str, PodState]] = {}  # Job name -> (pod name, last state) seen by the watch
        self.timers: dict[str, float] = {}  # run id -> when its stuck pod or failed Job must be decided
        self.ready: list[Ended] = []  # endings found outside the watch (a create refused)

    @classmethod
    def from_spec(cls, spec: DriverSpec, storage: Storage) -> KubernetesExecutor:
        """A driver's executor: the spec's image and ``executor_settings``."""
        return cls(storage, spec.storage_url, spec.image, KubernetesSettings.from_options(**spec.executor_settings))

    # -- launching --------------------------------------------------------------------------------

    def launch(self, spec: TaskSpec, task: Task, env: dict[str, str]) -> None:
        self._start_watching(spec.root_id)
        worker_env = {**self.env, **env}

        def make_body(relaunch: int) -> dict[str, Any]:
            return to_dict(worker_job(spec, task.func, self.image, worker_env, namespace=self.namespace,
                                      owner=self.owner, relaunch=relaunch, **self.job_settings))

        try:
            body = make_body(0)
        except ValueError as e:  # e.g. memory="lots": not a quantity
            self.ready.append(Ended(spec.run_id, None, "InvalidJob", str(e)))
            return
        attempt = _Attempt(spec, body["metadata"]["name"], make_body)
        self.attempts[spec.run_id] = attempt
        self.by_job[attempt.job_name] = spec.run_id
        self._create(attempt, body)

    def _create(self, a: _Attempt, body: dict[str, Any]) -> None:
        """Create the attempt's Job; re-attach to it when it exists; an Ended when the API refuses it."""
        self.bucket.acquire()
        try:
            self.stats.creates += 1
            api_call(self.batch.create_namespaced_job, self.namespace, body, backoff=self.backoff)
            a.created = time.monotonic()  # a list that starts later must show the Job
        except ApiException as e:
            if e.status != 409:
                self._drop(a)
                self.ready.append(Ended(a.spec.run_id, None, "JobCreateFailed",
                                        f"the API server refused Job {a.job_name} ({e.status}): {api_message(e)}"))
                return
            self.stats.conflicts += 1
            if not self._reattach(a):
                return
        seen = self.pods.get(a.job_name)  # the watch may have seen its pod before we tracked it
        if seen is not None:
            self._apply(a, *seen, out=self.ready)

    def _reattach(self, a: _Attempt) -> bool:
        """The Job exists: adopt it if it is this attempt's (a restarted driver), else fail the attempt."""
        job = api_call(self.batch.read_namespaced_job, a.job_name, self.namespace, backoff=self.backoff)
        labels = (job.metadata.labels if job.metadata else None) or {}
        if labels.get(RUN_LABEL) == a.spec.run_id and labels.get(ATTEMPT_LABEL) == str(a.spec.attempt):
            a.created = time.monotonic()
            self.stats.reattached += 1
            log.info("re-attached to existing Job %s (run %s attempt %d)", a.job_name, a.spec.run_id,
                     a.spec.attempt)
            return True
        self._drop(a)
        self.ready.append(Ended(a.spec.run_id, None, "JobNameConflict",
                                f"Job {a.job_name} exists and belongs to another run"))
        return False

    def _start_watching(self, root_id: str) -> None:
        if self.root_id is not None:
            return
        self.root_id = root_id
        self.owner = self._find_owner(root_id)
        selector = f"{RESOLUTION_LABEL}={root_id},{ROLE_LABEL}=worker"
        self.watchers = [
            Watcher("pod", self.core.list_namespaced_pod, self.namespace, selector, self.events,
                    timeout_seconds=self.watch_timeout, backoff=self.watch_backoff).start(),
            Watcher("job", self.batch.list_namespaced_job, self.namespace, selector, self.events,
                    timeout_seconds=self.watch_timeout, backoff=self.watch_backoff).start()]

    def _find_owner(self, root_id: str) -> tuple[str, str] | None:
        """The driver Job's (name, uid): the setting, else the downward API's env, else read by name."""
        if self.owner_setting is False:
            return None
        if isinstance(self.owner_setting, (tuple, list)):
            return (str(self.owner_setting[0]), str(self.owner_setting[1]))
        name, uid = os.environ.get(DRIVER_JOB_ENV), os.environ.get(DRIVER_JOB_UID_ENV)
        if name and uid:
            return name, uid
        name = name or driver_job_name(root_id)
        try:
            self.stats.owner_reads += 1
            job = api_call(self.batch.read_namespaced_job, name, self.namespace, backoff=self.backoff)
        except ApiException as e:
            if e.status != 404:
                raise
            log.info("no driver Job %s in %s: worker Jobs will have no owner", name, self.namespace)
            return None
        uid = job.metadata.uid if job.metadata else None
        return (name, uid) if uid else None

    # -- endings ----------------------------------------------------------------------------------

    def ended(self, timeout: float) -> list[Ended]:
        deadline = time.monotonic() + timeout
        out, self.ready = self.ready, []
        while True:
            while True:
                try:
                    self._handle(self.events.get_nowait(), out)
                except queue.Empty:
                    break
            now = time.monotonic()
            self._check_timers(now, out)
            if out or now >= deadline:
                return out
            wait = deadline - now
            if self.timers:
                wait = min(wait, max(0.0, min(self.timers.values()) - now) + 0.001)
            try:
                self._handle(self.events.get(timeout=wait), out)
            except queue.Empty:
                pass

    def _handle(self, ev: Event, out: list[Ended]) -> None:
        if ev.kind == "pod":
            for obj in ev.items if ev.type == "SYNC" else [ev.obj]:
                self._on_pod(obj, ev.type == "DELETED", out)
            return
        if ev.type == "SYNC":  # tracked Jobs that are gone (deleted while the watch was away)
            names = {(o.get("metadata") or {}).get("name") for o in ev.items}
            for a in list(self.attempts.values()):
                if a.job_name not in names and a.created < ev.since:
                    self._on_job_gone(a, out)
        for obj in ev.items if ev.type == "SYNC" else [ev.obj]:
            run_id = self.by_job.get((obj.get("metadata") or {}).get("name", ""))
            tracked = self.attempts.get(run_id) if run_id else None
            if tracked is None:
                continue
            a = tracked
            if ev.type == "DELETED":
                self._on_job_gone(a, out)
                continue
            failure = job_failure(obj)
            if failure is None or a.job_failed is not None:
                continue
            a.job_failed, a.job_failed_at = failure, time.monotonic()
            if failure[0] == "DeadlineExceeded":  # the pod is being killed: its ending says less than this
                out.append(self._finish(a, PodState("Failed", terminal=True, reason="DeadlineExceeded",
                                                    message=failure[1], started=a.pod_name is not None),
                                        delete=True))
            else:
                self.timers[a.spec.run_id] = a.job_failed_at + JOB_FAILED_GRACE

    def _on_job_gone(self, a: _Attempt, out: list[Ended]) -> None:
        if a.job_failed is None:
            a.job_failed, a.job_failed_at = ("JobDeleted", f"Job {a.job_name} was deleted"), time.monotonic()
            self.timers[a.spec.run_id] = a.job_failed_at + JOB_FAILED_GRACE

    def _on_pod(self, pod: dict[str, Any], deleted: bool, out: list[Ended]) -> None:
        job = owner_job(pod)
        if not job:
            return
        name = (pod.get("metadata") or {}).get("name", "")
        state = pod_state(pod, deleted=deleted)
        if deleted:
            self.pods.pop(job, None)
        else:
            self.pods[job] = (name, state)
        run_id = self.by_job.get(job)
        if run_id is not None and run_id in self.attempts:
            self._apply(self.attempts[run_id], name, state, out)

    def _apply(self, a: _Attempt, pod_name: str, state: PodState, out: list[Ended]) -> None:
        a.pod_name = pod_name
        run_id = a.spec.run_id
        if state.terminal:
            if state.retryable and a.relaunches < self.eviction_relaunches:
                self._relaunch(a, state)
                return
            out.append(self._finish(a, state))
        elif state.fatal:
            out.append(self._finish(a, state, delete=True))
        elif state.stuck:
            if a.stuck is None or a.stuck.reason != state.reason:
                a.stuck_since = time.monotonic()
                self.timers[run_id] = a.stuck_since + self.graces.get(state.reason or "", 120.0)
            a.stuck = state
        elif a.stuck is not None:  # it got going after all
            a.stuck = a.stuck_since = None
            if a.job_failed is None:
                self.timers.pop(run_id, None)

    def _check_timers(self, now: float, out: list[Ended]) -> None:
        for run_id, when in list(self.timers.items()):
            if when > now:
                continue
            del self.timers[run_id]
            a = self.attempts.get(run_id)
            if a is None:
                continue
            if a.job_failed is not None:  # no pod ending came: the Job's word is all there is
                reason, message = a.job_failed
                out.append(self._finish(a, PodState("Failed", terminal=True, reason=reason, message=message,
                                                    started=a.pod_name is not None)))
            elif a.stuck is not None:
                grace = self.graces.get(a.stuck.reason or "", 120.0)
                message = f"{a.stuck.message or a.stuck.reason} (still so after {grace:g}s)"
                out.append(self._finish(a, dataclasses.replace(a.stuck, message=message), delete=True))

    def _relaunch(self, a: _Attempt, state: PodState) -> None:
        """An evicted pod: run the same attempt again in a new Job (the loop never sees it)."""
        a.relaunches += 1
        self.stats.relaunches += 1
        log.warning("run %s: pod %s %s (%s); launching it again (%d/%d)", a.spec.run_id, a.pod_name,
                    state.reason, state.message or "", a.relaunches, self.eviction_relaunches)
        self._delete(a.job_name)
        del self.by_job[a.job_name]
        body = a.make_body(a.relaunches)
        a.job_name, a.pod_name, a.stuck, a.stuck_since, a.job_failed = body["metadata"]["name"], None, None, None, None
        self.timers.pop(a.spec.run_id, None)
        self.by_job[a.job_name] = a.spec.run_id
        self._create(a, body)

    def _finish(self, a: _Attempt, state: PodState, delete: bool = False) -> Ended:
        self._drop(a)
        logs = ""
        if state.started and (state.exit_code != 0 or state.reason):
            logs = self._logs(a) or state.termination_log
        if delete:  # stuck, or past its deadline: stop the Job from trying further
            self._delete(a.job_name)
        details: dict[str, Any] = {"executor": "kubernetes", "namespace": self.namespace, "job": a.job_name,
                                   "pod": a.pod_name, "node": state.node, "image": self.image}
        if a.relaunches:
            details["relaunches"] = a.relaunches
        return Ended(a.spec.run_id, state.exit_code, state.reason, state.message, logs,
                     {k: v for k, v in details.items() if v is not None})

    def _drop(self, a: _Attempt) -> None:
        self.pods.pop(a.job_name, None)
        self.attempts.pop(a.spec.run_id, None)
        self.by_job.pop(a.job_name, None)
        self.timers.pop(a.spec.run_id, None)

    def _logs(self, a: _Attempt) -> str:
        if not a.pod_name:
            return ""
        try:
            self.stats.log_reads += 1
            text = api_call(self.core.read_namespaced_pod_log, a.pod_name, self.namespace,
                            container=manifests.WORKER_CONTAINER, tail_lines=self.log_tail,
                            _request_timeout=10, backoff=Backoff(attempts=3))
        except Exception as e:  # noqa: BLE001 - the pod may be gone already; the ending matters more
            log.debug("no logs for pod %s: %s", a.pod_name, e)
            return ""
        return text if isinstance(text, str) else str(text or "")

    # -- stopping ---------------------------------------------------------------------------------

    def stop(self, run_id: str) -> None:
        a = self.attempts.get(run_id)
        if a is not None:
            self._drop(a)
            self._delete(a.job_name)

    def _delete(self, job_name: str) -> None:
        try:
            self.stats.deletes += 1
            api_call(self.batch.delete_namespaced_job, job_name, self.namespace, propagation_policy="Background",
                     backoff=self.backoff)
        except ApiException as e:
            if e.status != 404:
                log.warning("could not delete Job %s: %s %s", job_name, e.status, api_message(e))

    def close(self) -> None:
        super().close()
        for w in self.watchers:
            w.stop()
