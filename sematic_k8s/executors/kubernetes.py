"""Run each Run attempt as a Kubernetes Job (one pod).

``KubernetesExecutor`` creates one Job per attempt (deterministic name ``sk-<run id>-<attempt>``, owned by
the driver's Job), and learns how pods end from watch streams read by daemon threads (pods and Jobs of the
resolution, label-selected; Warning Events of the namespace, of which only those that block a pod are
kept; without permission to watch Events they are listed per waiting Job or pod): no per-run polling. The
worker is read from its own container's status (sidecars do not count; a classic sidecar that never exits
does not keep the run going). Pod endings
are recorded in plain words: OOMKilled; Evicted and kubelet rejections (OutOfcpu, OutOfmemory,
NodeAffinity), launched again (up to ``eviction_relaunches`` times) before the loop sees them;
ImagePullBackOff / ErrImagePull / CreateContainerConfigError (failed after a grace period); a pod never
created (``FailedCreate`` Events: Pod Security, a missing ServiceAccount, a webhook) or never started
(``FailedCreatePodSandBox`` / ``FailedMount`` Events), failed after ``create_grace`` with the Event's
message; DeadlineExceeded (the func's ``timeout``, counted from the worker container's start, not from
scheduling or the image pull), with the pod's last log lines read before it is gone. A pod waiting for room
(``Unschedulable``, or a ResourceQuota that it fits) waits as long as it takes: that is only reported
("waiting for capacity").

API calls are retried on 429 and 5xx with backoff; a create still refused with 429, 5xx or an exceeded
quota is queued and tried again later (all creates pause meanwhile), never failing its run; a 409 on create
means the Job is already there (a restarted driver, or a create that went through before its answer was
lost): it is re-attached, never duplicated; a create refused by RBAC (the driver's Role lacks ``create`` on
jobs) ends the resolution with :class:`~sematic_k8s.errors.KubernetesForbidden` naming what it lacks, a 401
(the driver's token refused) with :class:`~sematic_k8s.errors.KubernetesUnauthorized` (a driver exits 75 on it,
to be started again with a fresh token), while any other refusal (a webhook's denial, an invalid Job) fails only
its run; a 404 on delete is fine. On start-up the Jobs of the resolution are listed once, so a restarted driver
re-attaches to the newest Job of each attempt (``...-r1`` after an eviction) instead of creating the first
again. Job creation is rate-limited (token bucket, ``creates_per_second``). Watches that keep being refused
raise the same errors in plain words: ``KubernetesForbidden`` (403) or ``KubernetesUnauthorized`` (401).

The API client comes from :mod:`sematic_k8s.k8s.client`; the manifests, pod states and watches from the
rest of :mod:`sematic_k8s.k8s`. The driver's own Job is started by :mod:`sematic_k8s.launchers.kubernetes`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import time
from collections import deque
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sematic_k8s.executors.base import Task
from sematic_k8s.executors.kubernetes_attempts import Attempt, Attempts, KubeStats
from sematic_k8s.executors.kubernetes_follow import Follower, Verdict
from sematic_k8s.executors.remote import Ended, RemoteExecutor
from sematic_k8s.k8s import manifests
from sematic_k8s.k8s.client import (
    Backoff,
    NamespacedApi,
    TokenBucket,
    api_message,
    current_namespace,
    denial,
    make_api_client,
    refused,
    retryable,
)
from sematic_k8s.k8s.events import (
    for_now,
    newest_blocking,
)
from sematic_k8s.k8s.executor_settings import KubernetesSettings
from sematic_k8s.k8s.manifests import driver_job_name, newest_jobs, to_dict, worker_job
from sematic_k8s.k8s.pods import PodState, slim_job
from sematic_k8s.k8s.watch import Event, Watcher, watch_workers
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


class KubernetesExecutor(RemoteExecutor):
    """One Job (one pod) per Run attempt, watched with the Kubernetes watch API.

    Configured by ``settings`` (:class:`KubernetesSettings`) or the same keys as keyword ``options``;
    ``api_client`` and ``backoff`` are live objects for tests and benchmarks.
    """

    # No presigned URLs for pods: they would sit in the Job's spec, readable by anyone who may read Jobs in the
    # namespace. Workers reach storage with the storage Secret (secretKeyRef) instead.
    presigns = False

    enforces_timeouts = False  # the timeout counts from the worker container's start, as the pod watch reports it

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
        self.bucket = TokenBucket(s.creates_per_second, s.create_burst)
        self.log_tail = s.log_tail
        self.watch_timeout = s.watch_timeout
        self.backoff = backoff or Backoff()
        self.kube = NamespacedApi(api_client or make_api_client(s.host), self.namespace, self.backoff)
        self.create_backoff = dataclasses.replace(self.backoff, attempts=min(3, self.backoff.attempts))
        self.watch_backoff = dataclasses.replace(self.backoff, cap=min(self.backoff.cap, 5.0))
        self.stats = KubeStats()
        self.root_id: str | None = None
        self.watchers: list[Watcher] = []
        self.events: queue.Queue[Event] = queue.Queue()
        self.attempts = Attempts()
        self.follower = Follower(self.attempts, s, self.namespace, self.deadlines, self.stats.waits)
        self.queued: deque[tuple[str, dict[str, Any]]] = deque()  # creates the API server refused for now
        self.paused_until = 0.0  # no create before this (monotonic): the API server asked us to slow down
        self.existing: dict[tuple[str, str], tuple[int, str]] = {}  # (run id, attempt) -> newest (relaunch, Job)
        self.ready: list[Ended] = []  # endings found outside the watch (a create refused)

    @classmethod
    def from_spec(cls, spec: DriverSpec, storage: Storage) -> KubernetesExecutor:
        """A driver's executor: the spec's image and ``executor_settings``."""
        return cls(storage, spec.storage_url, spec.image, KubernetesSettings.from_options(**spec.executor_settings))

    @property
    def events_watched(self) -> bool:
        """Warning Events arrive on a watch (else they are read per quiet attempt)."""
        return self.follower.events_watched

    @property
    def waiting(self) -> dict[str, str]:
        """Run id -> what its pod waits for (capacity, quota, its Job's creation), for the runs waiting now."""
        return {a.spec.run_id: a.waiting for a in self.attempts.all() if a.waiting}

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
        attempt = Attempt(spec, body["metadata"]["name"], make_body, timeout=task.func.timeout)
        found = self.existing.pop((spec.run_id, str(spec.attempt)), None)
        if found is not None:  # a restarted driver: this attempt's newest Job (after evictions, ...-r<n>)
            attempt.relaunches, attempt.job_name = found
            self.attempts.track(attempt)
            self.stats.reattached += 1
            log.info("re-attached to existing Job %s (run %s attempt %d)", attempt.job_name, spec.run_id,
                     spec.attempt)
            self._created(attempt)
            return
        self.attempts.track(attempt)
        if self.queued or time.monotonic() < self.paused_until:
            attempt.wait("waiting to create its Job: the API server asked to slow down", self.stats.waits)
            self._queue(attempt, body, None)
        else:
            self._create(attempt, body)
        self._pump()

    def _pump(self) -> None:
        """Take in what the watches said meanwhile (a long burst of creates must not pile their events up)."""
        while True:
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(ev, self.ready)

    def _create(self, a: Attempt, body: dict[str, Any]) -> None:
        """Create the attempt's Job; re-attach to it when it exists; queue it when the API server is busy or
        a quota is used up; KubernetesForbidden when RBAC refuses it, KubernetesUnauthorized when the API server
        does not accept the driver's token (401); an Ended when anything else refuses it."""
        self.bucket.acquire()
        try:
            self.stats.creates += 1
            self.kube.create_job(body, self.create_backoff)
        except ApiException as e:
            if e.status == 409:
                self.stats.conflicts += 1
                if self._reattach(a):
                    self._created(a)
                return
            if e.status == 401 or denial(e) is not None:  # the driver's token or Role, not the run's doing
                self._drop(a)
                raise refused(e, f"create Job {a.job_name}", self.namespace) from None
            if for_now(e):
                self._queue(a, body, e)
                return
            self._drop(a)
            self.ready.append(Ended(a.spec.run_id, None, "JobCreateFailed",
                                    f"the API server refused Job {a.job_name} ({e.status}): {api_message(e)}"))
            return
        except Exception as e:
            if not retryable(e):
                raise
            self._queue(a, body, e)  # unreachable for now
            return
        self._created(a)

    def _queue(self, a: Attempt, body: dict[str, Any], e: BaseException | None) -> None:
        """Create it later; a refusal pauses every create (429: for as long as Retry-After says)."""
        if e is not None:
            self.stats.requeued += 1
            delay = min(self.settings.requeue_cap, self.backoff.delay(min(self.stats.requeued, 6), e))
            self.paused_until = max(self.paused_until, time.monotonic() + max(delay, 0.05))
            why = api_message(e) if isinstance(e, ApiException) else str(e)
            a.wait(f"waiting to create its Job: {getattr(e, 'status', '') or type(e).__name__} {why}", self.stats.waits)
        self.queued.append((a.spec.run_id, body))

    def _drain(self, now: float) -> None:
        """Creates that were refused for now, oldest first, while the API server takes them."""
        while self.queued and now >= self.paused_until:
            run_id, body = self.queued.popleft()
            a = self.attempts.get(run_id)
            if a is None or a.job_name != body["metadata"]["name"]:
                continue  # canceled meanwhile
            self._create(a, body)
            now = time.monotonic()

    def _created(self, a: Attempt) -> None:
        verdict = self.follower.follow(a)
        if verdict is not None:
            self._act(verdict, self.ready)

    def _reattach(self, a: Attempt) -> bool:
        """The Job exists: adopt it if it is this attempt's (a restarted driver), else fail the attempt."""
        try:
            job = self.kube.read_job(a.job_name)
        except ApiException as e:
            raise refused(e, f"read Job {a.job_name}", self.namespace) from None
        labels = (job.metadata.labels if job.metadata else None) or {}
        if labels.get(RUN_LABEL) == a.spec.run_id and labels.get(ATTEMPT_LABEL) == str(a.spec.attempt):
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
        version = self._existing_jobs(selector)
        self.watchers = watch_workers(self.kube, selector, self.events, jobs_from=version,  # listed just now
                                      timeout_seconds=self.watch_timeout, backoff=self.watch_backoff,
                                      page=self.settings.page, forbidden_window=self.settings.forbidden_window)
        self.follower.events_watched = True

    def _existing_jobs(self, selector: str) -> str | None:
        """List the resolution's worker Jobs (a restarted driver's earlier ones), page by page, as a SYNC event;
        remember the newest Job of each attempt. Returns the list's resourceVersion."""
        since, token = time.monotonic(), None
        items: list[dict[str, Any]] = []
        while True:
            self.stats.job_lists += 1
            try:
                data = self.kube.list_jobs(selector, self.settings.page, token)
            except ApiException as e:
                raise refused(e, "list Jobs", self.namespace) from None
            items.extend(slim_job(j) for j in data.get("items") or [])
            token = (data.get("metadata") or {}).get("continue")
            if not token:
                break
        self.existing = newest_jobs(items)
        self.events.put(Event("job", "SYNC", items=items, since=since))
        return (data.get("metadata") or {}).get("resourceVersion") or None

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
            job = self.kube.read_job(name)
        except ApiException as e:
            if e.status != 404:
                raise refused(e, f"read Job {name}", self.namespace) from None
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
            for verdict in self.follower.due(now):
                self._act(verdict, out)
            self.follower.check_events(now, self._blocking_event)
            self._drain(now)
            out.extend(self.ready)
            self.ready = []
            if out or now >= deadline:
                return out
            wait = deadline - now
            soon = [t for t in (self.follower.wake_at(), self.paused_until if self.queued else None) if t is not None]
            if soon:
                wait = min(wait, max(0.0, min(soon) - now) + 0.001)
            try:
                self._handle(self.events.get(timeout=wait), out)
            except queue.Empty:
                pass

    def _handle(self, ev: Event, out: list[Ended]) -> None:
        for verdict in self.follower.handle(ev):
            self._act(verdict, out)

    def _act(self, verdict: Verdict, out: list[Ended]) -> None:
        """Carry out what the follower decided: launch the attempt again, or finish it (its ending to ``out``)."""
        if verdict.relaunch:
            self._relaunch(verdict.attempt, verdict.state)
        else:
            out.append(self._finish(verdict.attempt, verdict.state, delete=verdict.delete))

    def _blocking_event(self, name: str) -> dict[str, Any] | None:
        """The newest Warning Event about ``name`` that says why it has no pod or does not start."""
        try:
            self.stats.event_reads += 1
            items = self.kube.warning_events(name)
        except Exception as e:  # noqa: BLE001 - no Events (no permission, busy): the watches still decide
            log.debug("reading the Events of %s: %s", name, e)
            return None
        return newest_blocking(items)

    def _relaunch(self, a: Attempt, state: PodState) -> None:
        """An evicted (or kubelet-rejected) pod: run the same attempt again in a new Job (the loop never sees it)."""
        a.relaunches += 1
        self.stats.relaunches += 1
        log.warning("run %s: pod %s %s (%s); launching it again (%d/%d)", a.spec.run_id, a.pod_name,
                    state.reason, state.message or "", a.relaunches, self.settings.eviction_relaunches)
        self._delete(a.job_name)
        body = a.make_body(a.relaunches)
        self.attempts.relaunched(a, body["metadata"]["name"])
        self.follower.relaunched(a)
        self._create(a, body)

    def _finish(self, a: Attempt, state: PodState, delete: bool = False) -> Ended:
        a.stop_waiting()
        self._drop(a)
        logs = ""
        if state.started and (state.exit_code != 0 or state.reason):
            logs = self._logs(a) or state.termination_log
        if delete:  # stuck, past its deadline, or a sidecar keeps its pod running: stop the Job
            self._delete(a.job_name)
        return a.ending(state, logs, self.namespace, self.image)

    def _drop(self, a: Attempt) -> None:
        self.attempts.drop(a)
        self.follower.forget(a)

    def _logs(self, a: Attempt) -> str:
        if not a.pod_name:
            return ""
        try:
            self.stats.log_reads += 1
            return self.kube.pod_log(a.pod_name, manifests.WORKER_CONTAINER, self.log_tail)
        except Exception as e:  # noqa: BLE001 - the pod may be gone already; the ending matters more
            log.debug("no logs for pod %s: %s", a.pod_name, e)
            return ""

    def tail(self, run_id: str) -> str:
        a = self.attempts.get(run_id)
        if a is not None:
            self.stats.timeouts += 1
        return self._logs(a) if a is not None else ""

    # -- stopping ---------------------------------------------------------------------------------

    def stop(self, run_id: str) -> None:
        a = self.attempts.get(run_id)
        if a is not None:
            self._drop(a)
            self._delete(a.job_name)

    def _delete(self, job_name: str) -> None:
        try:
            self.stats.deletes += 1
            self.kube.delete_job(job_name)
        except ApiException as e:
            if e.status != 404:
                log.warning("could not delete Job %s: %s %s", job_name, e.status, api_message(e))

    def detach(self) -> None:
        """Stop watching and leave every Job running (a driver about to be restarted re-attaches to them)."""
        self.running.clear()
        self.deadlines.clear()
        for w in self.watchers:
            w.stop()

    def close(self) -> None:
        super().close()
        for w in self.watchers:
            w.stop()
