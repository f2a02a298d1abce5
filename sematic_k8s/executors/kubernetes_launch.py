"""Launching the Kubernetes executor's worker Jobs: creating them, re-attaching to the ones that exist, and
finding the driver's Job that owns them.

Job creation is rate-limited (token bucket, ``creates_per_second``). API calls are retried on 429 and 5xx with
backoff; a create still refused with 429, 5xx or an exceeded quota is queued (:mod:`.kubernetes_launch_queue`)
and tried again later (all creates pause meanwhile), never failing its run; a 409 on create means the Job is
already there (a restarted driver, or a create that went through before its answer was lost): it is re-attached,
never duplicated; a create refused by RBAC (the driver's Role lacks ``create`` on jobs) ends the resolution with
:class:`~sematic_k8s.errors.KubernetesForbidden` naming what it lacks, a 401 (the driver's token refused) with
:class:`~sematic_k8s.errors.KubernetesUnauthorized` (a driver exits 75 on it, to be started again with a fresh
token), while any other refusal (a webhook's denial, an invalid Job) fails only its run. On start-up the Jobs of
the resolution are listed once, so a restarted driver re-attaches to the newest Job of each attempt (``...-r1``
after an eviction) instead of creating the first again; the resolution's worker pods are listed just before, so
the executor can delete those no listed Job made (a Job deleted without its pod while no driver ran) before it
makes their attempts' Jobs again under the same names. Each attempt keeps its Job's uid (from the create, the
list or a read): its pods are told apart from an older Job's of that name by it.

A worker whose task carries presigned URLs gets it from a Secret of its Job's own, created just before the Job (a
pod whose Secret is missing would wait in ContainerCreating, FailedMount) with URLs presigned then: a relaunch, or a
create that waited in the queue, has fresh ones. The Secret's create meets the Job's rules (queued for now, refused
for good, RBAC's refusal in words); one there already (left by a driver that died before deleting it) is deleted and
made again, never read: the driver may create and delete Secrets, not read them.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import time
from typing import Any

from kubernetes.client.exceptions import ApiException

from sematic_k8s.errors import StorageError
from sematic_k8s.executors.kubernetes_attempts import Attempt, KubeStats, Waiting
from sematic_k8s.executors.kubernetes_launch_queue import LaunchQueue
from sematic_k8s.executors.remote import Ended
from sematic_k8s.k8s.client import Backoff, NamespacedApi, TokenBucket, api_message, denial, refused, retryable
from sematic_k8s.k8s.events import being_deleted, for_now
from sematic_k8s.k8s.executor_settings import KubernetesSettings
from sematic_k8s.k8s.manifests import driver_job_name, newest_jobs, task_secret_name
from sematic_k8s.k8s.pods import slim_job, slim_pod
from sematic_k8s.k8s.watch import Event
from sematic_k8s.labels import ATTEMPT_LABEL, RUN_LABEL
from sematic_k8s.settings import DRIVER_JOB_ENV, DRIVER_JOB_UID_ENV

log = logging.getLogger("sematic_k8s.k8s")


# lists of Jobs started again when their continue token expired (410) before one finished whole
LIST_RESTARTS = 3
REFRESH_RETRY = 5.0  # seconds before a task Secret that could not be made again is tried again


class Made(enum.Enum):
    """What became of a Job's create, when it was not refused for good (that is an Ended)."""

    CREATED = "created"  # or re-attached: follow it
    QUEUED = "queued"  # refused for now: tried again later
    EXISTS = "exists"  # a Job of that name is there: JobLauncher.adopt says whose it is


class JobLauncher:
    """Creates the attempts' Jobs in ``kube``'s namespace, with ``settings``' rate limit and pauses; counts its
    calls in ``stats``."""

    def __init__(self, kube: NamespacedApi, settings: KubernetesSettings, backoff: Backoff, stats: KubeStats) -> None:
        self.kube, self.settings, self.backoff, self.stats = kube, settings, backoff, stats
        self.create_backoff = dataclasses.replace(backoff, attempts=min(3, backoff.attempts))  # then queued
        self.bucket = TokenBucket(settings.creates_per_second, settings.create_burst)
        self.queue = LaunchQueue()
        self.existing: dict[tuple[str, str], tuple[int, str]] = {}  # (run id, attempt) -> newest (relaunch, Job)
        self.uids: dict[str, str] = {}  # Job name -> uid, of the Jobs the start-up list found

    def find_owner(self, root_id: str) -> tuple[str, str] | None:
        """The driver Job's (name, uid): the setting, else the downward API's env, else read by name."""
        owner = self.settings.owner
        if owner is False:
            return None
        if isinstance(owner, (tuple, list)):
            return (str(owner[0]), str(owner[1]))
        name, uid = os.environ.get(DRIVER_JOB_ENV), os.environ.get(DRIVER_JOB_UID_ENV)
        if name and uid:
            return name, uid
        name = name or driver_job_name(root_id)
        try:
            self.stats.owner_reads += 1
            job = self.kube.read_job(name)
        except ApiException as e:
            if e.status != 404:
                raise refused(e, f"read Job {name}", self.kube.namespace) from None
            log.info("no driver Job %s in %s: worker Jobs will have no owner", name, self.kube.namespace)
            return None
        uid = job.metadata.uid if job.metadata else None
        return (name, uid) if uid else None

    def list_jobs(self, selector: str) -> tuple[Event, str | None]:
        """List the resolution's worker Jobs (a restarted driver's earlier ones), page by page, and remember the
        newest Job of each attempt. Returns them as a SYNC event, and the list's resourceVersion. A continue token
        that expired between pages (410: etcd compacted past the list's snapshot) starts the list again, whole."""
        since, token, expired = time.monotonic(), None, 0
        items: list[dict[str, Any]] = []
        while True:
            self.stats.job_lists += 1
            try:
                data = self.kube.list_jobs(selector, self.settings.page, token)
            except ApiException as e:
                if e.status == 410 and token and expired < LIST_RESTARTS:  # etcd compacted past the list's snapshot
                    expired += 1
                    log.info("the list of Jobs expired between its pages (410): listing them again from the start")
                    items, token = [], None
                    continue
                raise refused(e, "list Jobs", self.kube.namespace) from None
            items.extend(slim_job(j) for j in data.get("items") or [])
            token = (data.get("metadata") or {}).get("continue")
            if not token:
                break
        self.existing = newest_jobs(items)
        self.uids = {m["name"]: m["uid"] for j in items if (m := j["metadata"]).get("name") and m.get("uid")}
        version = (data.get("metadata") or {}).get("resourceVersion") or None
        return Event("job", "SYNC", items=items, since=since), version

    def list_pods(self, selector: str) -> list[dict[str, Any]] | None:
        """The pods ``selector`` picks, page by page (the first from the watch cache); None when they cannot be
        listed now (refused, unreachable: logged)."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            try:
                data = self.kube.list_pod_page(selector, self.settings.page, token)
            except Exception as e:  # noqa: BLE001 - not listable now: the watches still tell pods apart by Job uid
                log.warning("could not list the resolution's worker pods: %s",
                            api_message(e) if isinstance(e, ApiException) else e)
                return None
            items.extend(slim_pod(p) for p in data.get("items") or [])
            token = (data.get("metadata") or {}).get("continue")
            if not token:
                return items

    def found(self, a: Attempt) -> bool:
        """Whether the start-up list found this attempt's Job (a restarted driver's): if so ``a`` is its newest
        (``...-r<n>`` after evictions), to be followed, not created."""
        found = self.existing.pop((a.spec.run_id, str(a.spec.attempt)), None)
        if found is None:
            return False
        a.relaunches, a.job_name = found
        a.job_uid = self.uids.get(a.job_name)
        if a.make_secret is not None:  # its pod has its task (or will): the Secret is kept, deleted when it ends
            a.secret, a.secret_made = task_secret_name(a.job_name), float("-inf")  # made again if its pod waits
        self.stats.reattached += 1
        log.info("re-attached to existing Job %s (run %s attempt %d)", a.job_name, a.spec.run_id, a.spec.attempt)
        return True

    def create(self, a: Attempt, body: dict[str, Any]) -> Made | Ended:
        """Create the attempt's Job (``body``); queue it when the API server is busy or a quota is used up; an
        Ended when the API server refuses it for good; KubernetesForbidden when RBAC refuses it,
        KubernetesUnauthorized when the API server does not accept the driver's token (401). The attempt's task
        Secret, if it has one, is created first, with the same outcomes."""
        self.bucket.acquire()
        if a.make_secret is not None:
            made = self._create_secret(a, body, a.make_secret(body))
            if made is not None:
                return made
        try:
            self.stats.creates += 1
            a.job_uid = self.kube.create_job(body, self.create_backoff)
        except ApiException as e:
            if e.status == 409:
                self.stats.conflicts += 1
                if not being_deleted(e):  # (a Job of its name being deleted is one refused for now, below)
                    return Made.EXISTS
            if e.status == 401 or denial(e) is not None:  # the driver's token or Role, not the run's doing
                raise refused(e, f"create Job {a.job_name}", self.kube.namespace) from None
            if for_now(e):
                self.hold(a, body, e)
                return Made.QUEUED
            return Ended(a.spec.run_id, None, "JobCreateFailed",
                         f"the API server refused Job {a.job_name} ({e.status}): {api_message(e)}")
        except Exception as e:
            if not retryable(e):
                raise
            self.hold(a, body, e)  # unreachable for now
            return Made.QUEUED
        return Made.CREATED

    def _create_secret(self, a: Attempt, body: dict[str, Any], secret: dict[str, Any]) -> Made | Ended | None:
        """Create the task Secret of Job ``body`` (None: done, the Job's create goes on), as :meth:`_put_secret`."""
        name = secret["metadata"]["name"]
        try:
            self._put_secret(a, secret)
        except ApiException as e:
            if e.status == 401 or denial(e) is not None:
                raise refused(e, f"create Secret {name}", self.kube.namespace) from None
            if for_now(e):
                self.hold(a, body, e)
                return Made.QUEUED
            return Ended(a.spec.run_id, None, "JobCreateFailed",
                         f"the API server refused Secret {name}, the task of Job {a.job_name} ({e.status}): "
                         f"{api_message(e)}")
        except Exception as e:
            if not retryable(e):
                raise
            self.hold(a, body, e)
            return Made.QUEUED
        return None

    def _put_secret(self, a: Attempt, secret: dict[str, Any]) -> None:
        """Create ``secret``; one of its name there already (a driver's before this one, its URLs stale) is deleted
        and made again, never read. Raises what the API server answers."""
        name = secret["metadata"]["name"]
        try:
            self.stats.secret_creates += 1
            self.kube.create_secret(secret, self.create_backoff)
        except ApiException as e:
            if e.status != 409:
                raise
            self.stats.conflicts += 1
            self.delete_secret(name)
            log.info("deleted Secret %s, there already: made again with fresh URLs", name)
            self.stats.secret_creates += 1
            self.kube.create_secret(secret, self.create_backoff)
        a.secret, a.secret_made = name, time.monotonic()

    def delete_secret(self, name: str) -> None:
        """Delete Secret ``name``; gone already is fine."""
        try:
            self.stats.secret_deletes += 1
            self.kube.delete_secret(name)
        except ApiException as e:
            if e.status != 404:
                raise

    def refresh(self, a: Attempt) -> bool:
        """Make the attempt's task Secret again with URLs presigned now: its pod is on no node yet, so no kubelet
        has read it (one that binds meanwhile meets FailedMount, and its kubelet tries again). Refused or
        unreachable (the API server; storage, for a task too large for its Secret: that one kept then), it is tried
        again :data:`REFRESH_RETRY` seconds later, and logged. Whether it was made again."""
        assert a.make_secret is not None and a.secret is not None
        self.bucket.acquire()
        try:
            secret = a.make_secret(a.make_body(a.relaunches))  # first: a task that cannot be stored keeps its Secret
            self.delete_secret(a.secret)
            self._put_secret(a, secret)
        except Exception as e:  # noqa: BLE001 - its URLs last a while yet; a missing Secret is made at the next try
            if not retryable(e) and not isinstance(e, (ApiException, StorageError)):  # StorageError: a task stored
                raise
            a.secret_made = time.monotonic() - self.settings.task_refresh + REFRESH_RETRY
            log.warning("run %s: could not make Secret %s again with fresh URLs (tried again in %gs): %s",
                        a.spec.run_id, a.secret, REFRESH_RETRY, api_message(e) if isinstance(e, ApiException) else e)
            return False
        self.stats.refreshes += 1
        log.info("run %s: its pod waits for room: Secret %s made again with fresh URLs", a.spec.run_id, a.secret)
        return True

    def adopt(self, a: Attempt, body: dict[str, Any]) -> Made | Ended:
        """The attempt's Job exists: re-attach to it if it is this attempt's (a restarted driver, a create whose
        answer was lost), else an Ended (another run's Job has its name). One gone since the create's 409, or being
        deleted since, is not re-attached to: its create (``body``) is tried again later, as one the API server
        refused for now."""
        try:
            job = self.kube.read_job(a.job_name)
        except ApiException as e:
            if e.status == 404:
                self.hold(a, body, e)
                return Made.QUEUED
            raise refused(e, f"read Job {a.job_name}", self.kube.namespace) from None
        if job.metadata is not None and job.metadata.deletion_timestamp is not None:
            self.hold(a, body, None)
            self.queue.pause(self.backoff.delay(min(self.stats.requeued, 6)))
            return Made.QUEUED
        labels = (job.metadata.labels if job.metadata else None) or {}
        if labels.get(RUN_LABEL) == a.spec.run_id and labels.get(ATTEMPT_LABEL) == str(a.spec.attempt):
            a.job_uid = job.metadata.uid if job.metadata else None
            self.stats.reattached += 1
            log.info("re-attached to existing Job %s (run %s attempt %d)", a.job_name, a.spec.run_id,
                     a.spec.attempt)
            return Made.CREATED
        return Ended(a.spec.run_id, None, "JobNameConflict", f"Job {a.job_name} exists and belongs to another run")

    def hold(self, a: Attempt, body: dict[str, Any], e: BaseException | None) -> None:
        """Create it later; a refusal ``e`` pauses every create (429: for as long as Retry-After says)."""
        if e is not None:
            self.stats.requeued += 1
            self.queue.pause(min(self.settings.requeue_cap, self.backoff.delay(min(self.stats.requeued, 6), e)))
            why = api_message(e) if isinstance(e, ApiException) else str(e)
            a.wait(Waiting.CREATE, f"{getattr(e, 'status', '') or type(e).__name__} {why}", self.stats.waits)
        self.queue.hold(a.spec.run_id, body)
