"""Run each Run attempt as a Kubernetes Job (one pod).

``KubernetesExecutor`` creates one Job per attempt (deterministic name ``sk-<run id>-<attempt>``, owned by
the driver's Job), and learns how pods end from watch streams read by daemon threads (pods and Jobs of the
resolution, label-selected; Warning Events of the namespace, of which only those that block a pod are
kept; without permission to watch Events they are listed per waiting Job or pod): no per-run polling. A pod
that ends badly has its last log lines read before it is gone; a 404 on a Job's delete is fine. A Job someone
deleted without its pod (``kubectl delete --cascade=orphan``, the batch/v1 default) fails its run as JobDeleted,
and the executor deletes the pods left running (listed by the labels the Job controller set on them, seen by the
watch or not; each by uid, if its labels are this run's). A restarted driver deletes the worker pods of its
resolution that none of its Jobs made (a Job deleted without its pod while no driver ran) before it makes any Job;
pods are matched to attempts by their Job's uid, never by its name alone.

A worker gets presigned URLs and no storage credentials (where the storage presigns): its task is a file of a
Secret of its Job's own (``<job>-task``, owned by the driver's Job), made just before the Job with URLs presigned
then (a relaunch, or a create that waited, has fresh ones) and deleted when the attempt ends; a task more than a
Secret may hold (1 MiB) is stored (content-addressed, ``tasks/<root>/<run>/<attempt>/<sha256>.json``), and the
Secret holds a presigned GET of it instead (deleted with its Secret, or once a refresh stored a newer one, where the
storage deletes, off the driver's loop; at the resolution's end, every copy left under ``tasks/<root>/``, earlier
drivers' too: :mod:`.kubernetes_copies`); a restarted driver keeps the Secrets of the Jobs it re-attaches to, and
makes again one an earlier driver left without its Job. Where the image's label says its worker signs its outcome
(:mod:`.outcome_signing`), the task in the Secret carries the attempt's key (a stored copy never does: the reference
in the Secret carries it), and a task without URLs goes in a Secret too.

The executor holds the state and wires its pieces, one module per job:

- :mod:`.kubernetes_launch`: creating Jobs (rate limit, refusals, re-attaching to the ones that exist, the
  driver's Job that owns them), with :mod:`.kubernetes_launch_queue` for creates refused for now;
- :mod:`.kubernetes_follow`: what the watches and Events say of each attempt, and when it is decided
  (launch it again, or finish it);
- :mod:`.kubernetes_attempts`: the attempts in flight, by run id, Job and pod name, and what is known of each;
- :mod:`.kubernetes_copies`: the stored copies of tasks too large for a Secret, deleted off the loop;
- :mod:`.kubernetes_owner`: the read of the driver's own Job (deleted: the driver stops), off the loop.

It alone carries out what they decide with the API (through :class:`~sematic_k8s.k8s.client.NamespacedApi`):
deleting a Job, reading a pod's log, reading Events when they cannot be watched. The manifests, pod states and
watches come from the rest of :mod:`sematic_k8s.k8s`. The driver's own Job is started by
:mod:`sematic_k8s.launchers.kubernetes`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import time
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sematic_k8s.errors import KubernetesForbidden, KubernetesUnauthorized
from sematic_k8s.executors import outcome_signing
from sematic_k8s.executors.base import Task
from sematic_k8s.executors.kubernetes_attempts import Attempt, Attempts, KubeStats, Waiting
from sematic_k8s.executors.kubernetes_copies import TaskCopies
from sematic_k8s.executors.kubernetes_follow import Follower, Verdict
from sematic_k8s.executors.kubernetes_launch import JobLauncher, Made
from sematic_k8s.executors.kubernetes_owner import OwnerCheck
from sematic_k8s.executors.remote import Ended, RemoteExecutor, task_ref
from sematic_k8s.k8s import manifests
from sematic_k8s.k8s.client import Backoff, NamespacedApi, api_message, current_namespace, make_api_client
from sematic_k8s.k8s.events import newest_blocking
from sematic_k8s.k8s.executor_settings import KubernetesSettings
from sematic_k8s.k8s.manifests import task_secret, to_dict, worker_job
from sematic_k8s.k8s.pods import PodState, orphans, pods_left
from sematic_k8s.k8s.watch import Event, Watcher, watch_workers
from sematic_k8s.labels import RESOLUTION_LABEL, ROLE_LABEL, RUN_LABEL
from sematic_k8s.settings import POD_NAME_ENV, STORAGE_SECRET_ENV, TASK_ENV, WORKER_SERVICE_ACCOUNT_ENV, worker_env
from sematic_k8s.specs import DriverSpec, TaskSpec
from sematic_k8s.storage.base import Storage

log = logging.getLogger("sematic_k8s.k8s")


class KubernetesExecutor(RemoteExecutor):
    """One Job (one pod) per Run attempt, watched with the Kubernetes watch API.

    Configured by ``settings`` (:class:`KubernetesSettings`) or the same keys as keyword ``options``;
    ``api_client`` and ``backoff`` are live objects for tests and benchmarks.
    """

    # Workers get presigned URLs, in a Secret of their Job's own (never in the Job's spec, which whoever may read Jobs
    # reads), and no storage credentials; the storage Secret only where the storage makes no URLs.
    presigns = True

    enforces_timeouts = False  # the timeout counts from the worker container's start, as the pod watch reports it
    # the key its worker signs its outcome with goes in its task Secret too (never in the Job, nor in the stored copy
    # of a task too large for the Secret: the reference to it carries it), where its image's worker can (workers_sign)
    signs = True

    def __init__(self, storage: Storage, storage_url: str, image: str, settings: KubernetesSettings | None = None,
                 *, api_client: client.ApiClient | None = None, backoff: Backoff | None = None,
                 secret: bytes | None = None, **options: Any) -> None:
        super().__init__(storage, storage_url, secret=secret)
        s = (settings or KubernetesSettings()).with_options(**options)
        if "@sha256:" not in image:
            log.warning("worker image %s is not a reference by digest: pods may run other code", image)
        self.image = image
        self.settings = s
        self.namespace = s.namespace or current_namespace()
        env = worker_env() if s.env is None else s.env
        storage_secret = s.job.storage_secret or os.environ.get(STORAGE_SECRET_ENV) or None
        presigns = getattr(storage, "presign", None) is not None  # then workers need no storage Secret
        if not storage_secret and not presigns and set(env) & set(manifests.STORAGE_SECRET_KEYS):
            log.warning("S3 credentials are not passed to worker pods as plain env: set the executor's "
                        "storage_secret (a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
        job = dataclasses.replace(
            s.job, storage_secret=storage_secret, image_pull_secrets=tuple(s.job.image_pull_secrets),
            service_account=s.job.service_account or os.environ.get(WORKER_SERVICE_ACCOUNT_ENV) or None)
        self.job_settings: dict[str, Any] = {f.name: getattr(job, f.name) for f in dataclasses.fields(job)}
        self.env = dict(env)
        self.owner: tuple[str, str] | None = None
        backoff = backoff or Backoff()
        api = api_client or make_api_client(s.host)
        self._own_api = None if api_client is not None else api  # closed with the executor (a given one: its giver's)
        self.kube = NamespacedApi(api, self.namespace, backoff)
        self.watch_backoff = dataclasses.replace(backoff, cap=min(backoff.cap, 5.0))
        self.stats = KubeStats()
        self.copies = TaskCopies(storage, self.stats)
        self.root_id: str | None = None
        self.watchers: list[Watcher] = []
        self.events: queue.Queue[Event] = queue.Queue()
        self.attempts = Attempts()
        self.launcher = JobLauncher(self.kube, s, backoff, self.stats)
        self.follower = Follower(self.attempts, s, self.namespace, self.deadlines, self.stats.waits)
        self.ready: list[Ended] = []  # endings found outside the watch (a create refused)
        self.owner_check = OwnerCheck(self.kube, s.owner_check, backoff, self.stats)  # the driver's Job, read
        self.refresh_checked = float("-inf")  # when task Secrets were last looked at (_refresh)

    @classmethod
    def from_spec(cls, spec: DriverSpec, storage: Storage, secret: bytes | None = None) -> KubernetesExecutor:
        """A driver's executor: the spec's image and ``executor_settings``, its workers' keys derived from its
        ``secret``; its resolution's task copies are its to delete at the end, whether or not it launches anything."""
        ex = cls(storage, spec.storage_url, spec.image, KubernetesSettings.from_options(**spec.executor_settings),
                 secret=secret)
        ex.copies.root_id = spec.root_id
        return ex

    @property
    def events_watched(self) -> bool:
        """Warning Events arrive on a watch (else they are read per quiet attempt)."""
        return self.follower.events_watched

    @property
    def waiting(self) -> dict[str, str]:
        """Run id -> what its pod waits for (capacity, quota, its Job's creation), for the runs waiting now."""
        return {a.spec.run_id: a.waiting for a in self.attempts.all() if a.waiting}

    # -- launching --------------------------------------------------------------------------------

    def image_signs(self, task: Task) -> bool | None:
        """Whether the image's worker signs its outcome: its label, read from its registry by digest."""
        return outcome_signing.image_signs(self.image)

    def launch(self, spec: TaskSpec, task: Task, env: dict[str, str]) -> None:
        """With presigned URLs (``spec.urls``) or a signing key the task goes in the Job's own Secret, presigned
        afresh at each create (:meth:`presigned`); with URLs the pod gets no storage Secret. A task with neither goes
        in $SEMATIC_K8S_TASK (it holds no secret)."""
        self._start_watching(spec.root_id)
        in_secret = bool(spec.urls or spec.signing_key)
        worker_env = {**self.env, **env, **({} if in_secret else {TASK_ENV: spec.to_json()})}
        job_settings = {**self.job_settings, **({"storage_secret": None} if spec.urls else {})}

        def make_body(relaunch: int) -> dict[str, Any]:
            return to_dict(worker_job(spec, task.func, self.image, worker_env, namespace=self.namespace,
                                      owner=self.owner, relaunch=relaunch, task_in_secret=in_secret, **job_settings))

        def make_secret(job: dict[str, Any]) -> dict[str, Any]:
            return task_secret(job, self._handed(self.presigned(spec, task), attempt), self.owner)

        try:
            body = make_body(0)
        except ValueError as e:  # e.g. memory="lots": not a quantity
            self.ready.append(Ended(spec.run_id, None, "InvalidJob", str(e)))
            return
        attempt = Attempt(spec, body["metadata"]["name"], make_body, timeout=task.func.timeout,
                          make_secret=make_secret if in_secret else None)
        if self.launcher.found(attempt):  # a restarted driver: this attempt's newest Job is there
            self.attempts.track(attempt)
            self._created(attempt)
            return
        self.attempts.track(attempt)
        if self.launcher.queue.busy():
            attempt.wait(Waiting.CREATE, "the API server asked to slow down", self.stats.waits)
            self.launcher.hold(attempt, body, None)
        else:
            self._create(attempt, body)
        self._pump()

    def _handed(self, spec: TaskSpec, a: Attempt) -> str:
        """What the task Secret of ``spec`` (URLs presigned now) holds: the TaskSpec, or, when it is more than a Secret
        may hold (:data:`~sematic_k8s.k8s.manifests.SECRET_DATA_MAX`: a fan-in of thousands of inputs, a presigned GET
        each), a TaskRef: the TaskSpec stored in storage under a key of its own and a presigned GET of it (no storage
        key in the pod either way, nothing in the Job). A stored copy is noted on attempt ``a``
        (:meth:`_delete_task_copies` deletes it)."""
        text = spec.to_json()
        if len(text.encode()) <= manifests.SECRET_DATA_MAX:
            return text
        self.stats.tasks_stored += 1
        ref = task_ref(self.storage, dataclasses.replace(spec, signing_key=""), claim=self.copies.claim)
        a.task_copies.append(ref.key)
        return dataclasses.replace(ref, signing_key=spec.signing_key).to_json()  # the key: in the Secret only

    def _delete_task_copies(self, a: Attempt, keep: int = 0) -> None:
        """Delete the stored copies of the attempt's task (:meth:`_handed`) but its newest ``keep``: all of them once
        its pod read one or never will (the attempt ended, or runs again with a copy of its own), the older ones once
        a refresh handed a newer one over (a kubelet mounts the Secret that names it). Off the loop, on the copies'
        thread (:class:`TaskCopies`): where the storage cannot delete, they stay; a failed delete is logged once, and
        the run goes on as it would."""
        cut = len(a.task_copies) - keep
        gone, a.task_copies = a.task_copies[:cut], a.task_copies[cut:]
        self.copies.drop(gone)

    def _start_watching(self, root_id: str) -> None:
        """At the first launch: the owner of the workers' Jobs, the Jobs there already, and the watches."""
        if self.root_id is not None:
            return
        self.root_id = self.copies.root_id = root_id
        self.owner = self.launcher.find_owner(root_id)
        selector = f"{RESOLUTION_LABEL}={root_id},{ROLE_LABEL}=worker"
        pods = self.launcher.list_pods(selector)  # before the Jobs: a pod no Job listed after made has none left
        listed, version = self.launcher.list_jobs(selector)
        if pods:  # a restarted driver's: delete those whose Job was deleted without them while no driver ran
            live = {j["metadata"]["uid"] for j in listed.items if not j["metadata"].get("deletionTimestamp")}
            self._delete_pods(orphans(pods, live, root_id), "its Job was deleted without it while no driver ran")
        self.events.put(listed)
        self.watchers = watch_workers(self.kube, selector, self.events, jobs_from=version,  # listed just now
                                      timeout_seconds=self.settings.watch_timeout, backoff=self.watch_backoff,
                                      page=self.settings.page, forbidden_window=self.settings.forbidden_window)
        self.follower.events_watched = True

    def _pump(self) -> None:
        """Take in what the watches said meanwhile (a long burst of creates must not pile their events up)."""
        while True:
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(ev, self.ready)

    def _create(self, a: Attempt, body: dict[str, Any]) -> None:
        """Create the attempt's Job (see :meth:`JobLauncher.create`) and follow it once it is there."""
        try:
            made = self.launcher.create(a, body)
        except (KubernetesForbidden, KubernetesUnauthorized):  # the driver's token or Role: the resolution ends
            self._drop(a)
            raise
        if made is Made.EXISTS:
            made = self.launcher.adopt(a, body)
        if isinstance(made, Ended):
            self._drop(a)
            self.ready.append(made)
        elif made is Made.CREATED:
            self._created(a)

    def _created(self, a: Attempt) -> None:
        verdict = self.follower.follow(a)
        if verdict is not None:
            self._act(verdict, self.ready)

    def _drain(self, now: float) -> None:
        """Creates that were refused for now, oldest first, while the API server takes them."""
        for run_id, body in self.launcher.queue.due(now):
            a = self.attempts.get(run_id)
            if a is None or a.job_name != body["metadata"]["name"]:
                continue  # canceled meanwhile
            self._create(a, body)

    def _refresh(self, now: float) -> None:
        """Every second at most: the task Secrets of attempts whose pod waits for room on no node (Unschedulable, or
        not made for a quota), made ``task_refresh`` seconds ago or more, are made again with URLs presigned now, so
        that a pod that waits long starts with URLs that last (:meth:`JobLauncher.refresh`)."""
        if now < self.refresh_checked + 1.0:
            return
        self.refresh_checked = now
        for a in self.attempts.all():
            if a.secret is None or a.secret_made is None or now - a.secret_made < self.settings.task_refresh:
                continue
            if a.waiting_for is not None and a.waiting_for.for_room and self.launcher.refresh(a):
                self._delete_task_copies(a, keep=1)  # its Secret names the newest: the older ones are read by no one

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
            self.owner_check.check(self.owner, now)
            for verdict in self.follower.due(now):
                self._act(verdict, out)
            self.follower.check_events(now, self._blocking_event)
            self._drain(now)
            self._refresh(now)
            out.extend(self.ready)
            self.ready = []
            if out or now >= deadline:
                return out
            wait = deadline - now
            soon = [t for t in (self.follower.wake_at(), self.launcher.queue.wake_at()) if t is not None]
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
            out.append(self._finish(verdict.attempt, verdict.state, delete=verdict.delete,
                                    delete_pod=verdict.delete_pod))

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
        self._delete_secret(a)
        body = a.make_body(a.relaunches)  # and, in _create, its own Secret with URLs presigned now
        self.attempts.relaunched(a, body["metadata"]["name"])
        self.follower.relaunched(a)
        self._create(a, body)

    def _finish(self, a: Attempt, state: PodState, delete: bool = False, delete_pod: bool = False) -> Ended:
        a.stop_waiting()
        self._drop(a)
        logs = ""
        if state.started and (state.exit_code != 0 or state.reason):
            logs = self._logs(a) or state.termination_log
        if delete:  # stuck, past its deadline, or a sidecar keeps its pod running: stop the Job
            self._delete(a.job_name)
        if delete_pod:  # its Job was deleted without it: nothing else stops it
            self._delete_pod(a)
        return a.ending(state, logs, self.namespace, self.image)

    def _drop(self, a: Attempt) -> None:
        self.attempts.drop(a)
        self.follower.forget(a)
        self._delete_secret(a)

    def _delete_secret(self, a: Attempt) -> None:
        """Delete the task Secret made for the attempt's Job (its pod read it as it started, or never will). Gone
        already is fine; refused or unreachable is logged: it goes with the driver's Job, which owns it. The copies of
        its task stored for it go too (:meth:`_delete_task_copies`)."""
        self._delete_task_copies(a)
        name, a.secret = a.secret, None
        if name is None:
            return
        try:
            self.launcher.delete_secret(name)  # gone already is fine
        except Exception as e:  # noqa: BLE001 - the run's end matters more; the garbage collector takes it later
            hint = " (give the driver's Role delete on secrets, as the chart's does)" \
                if isinstance(e, ApiException) and e.status == 403 else ""
            log.warning("could not delete Secret %s (run %s's task), left until the driver's Job is deleted: %s%s",
                        name, a.spec.run_id, api_message(e) if isinstance(e, ApiException) else e, hint)

    def _logs(self, a: Attempt) -> str:
        return self._pod_logs(a.pod_name)

    def _pod_logs(self, pod_name: str | None) -> str:
        if not pod_name:
            return ""
        try:
            self.stats.log_reads += 1
            return self.kube.pod_log(pod_name, manifests.WORKER_CONTAINER, self.settings.log_tail)
        except Exception as e:  # noqa: BLE001 - the pod may be gone already; the ending matters more
            log.debug("no logs for pod %s: %s", pod_name, e)
            return ""

    def where(self, run_id: str) -> dict[str, Any]:
        a = self.attempts.get(run_id)
        return a.where(self.namespace, self.image) if a is not None else {}

    def unread_tail(self, e: Ended) -> str:
        """A worker whose pod exited 0 without an outcome: its last lines, read now (a successful pod's are not)."""
        return self._pod_logs(e.details.get("pod"))

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
        """Delete a worker's Job (a stopped run's, a stuck one's, an evicted one's before its relaunch). Gone already
        is fine; refused, unreachable or unanswered (``KubernetesUnanswered``) is logged: the Job is left for its TTL
        or its owner's deletion (the driver's Job), and the caller goes on (a cancel ends as a cancel)."""
        try:
            self.stats.deletes += 1
            self.kube.delete_job(job_name)
        except ApiException as e:
            if e.status != 404:
                log.warning("could not delete Job %s: %s %s", job_name, e.status, api_message(e))
        except Exception as e:  # noqa: BLE001 - out of reach: the run's end matters more
            log.warning("could not delete Job %s, left for its TTL or the driver Job's deletion: %s: %s", job_name,
                        type(e).__name__, e)

    def _delete_pod(self, a: Attempt) -> None:
        """Delete the pods the attempt's Job left running when someone deleted it without them: found by the labels
        the Job controller set on them (its uid, or its name while the watch had not shown the Job's uid), whether
        or not the pod watch showed them yet, and deleted only if their labels say they are this run's worker, each
        by its uid (never another pod of that name). Gone already, or replaced, is fine; refused is logged (the run
        ends all the same)."""
        selector = f"{RESOLUTION_LABEL}={a.spec.root_id},{RUN_LABEL}={a.spec.run_id},{ROLE_LABEL}=worker"
        try:
            left = pods_left(self.kube.list_pods(selector), a.job_name, a.job_uid, a.spec.root_id, a.spec.run_id)
        except Exception as e:  # noqa: BLE001 - not listable now: the one the watch showed, if any
            log.warning("could not list the pods of Job %s, deleted without them: %s", a.job_name,
                        api_message(e) if isinstance(e, ApiException) else e)
            left = [(a.pod_name, a.pod_uid)] if a.pod_name and a.pod_uid else []
        self._delete_pods(left, f"its Job {a.job_name} (run {a.spec.run_id}) was deleted without it")

    def _delete_pods(self, pods: list[tuple[str, str]], why: str) -> None:
        """Delete each (name, uid) in ``pods``, left running because ``why``, only if it is still that pod. Gone
        already, or replaced, is fine; refused is logged."""
        for name, uid in pods:
            try:
                self.stats.pod_deletes += 1
                self.kube.delete_pod(name, uid)
                log.warning("deleted pod %s: %s", name, why)
            except ApiException as e:
                if e.status not in (404, 409):
                    hint = " (give the driver's Role delete on pods, as the chart's does)" if e.status == 403 else ""
                    log.warning("could not delete pod %s, left running: %s; %s %s%s", name, why, e.status,
                                api_message(e), hint)

    def detach(self) -> None:
        """Stop watching and leave every Job running (a driver about to be restarted re-attaches to them), and the
        copies of their tasks (the deletes waiting are made)."""
        self.owner_check.stop()
        self.running.clear()
        self.deadlines.clear()
        for w in self.watchers:
            w.stop()
        self.copies.stop()
        self._close_api()

    def close(self) -> None:
        """The resolution ended: its runs still running are stopped, watching stops, every copy of their tasks stored
        (by this driver or an earlier one) is deleted (:meth:`TaskCopies.finish`), and the pods of a driver's Job
        deleted without them (:meth:`_delete_own_pods`); then :meth:`_close_api`, whatever went wrong."""
        try:
            self.owner_check.stop()
            super().close()
            for w in self.watchers:
                w.stop()
            self.copies.finish()
            if self.owner_check.gone:
                self.owner_check.gone = False  # once
                self._delete_own_pods()
        finally:
            self._close_api()

    def _close_api(self) -> None:
        """Close the connections to the API server of the client this executor made (a driver's, one for its life:
        they stayed open until the garbage collector found the executor), and its thread pool, if any. A client given
        is its giver's, left open. The client stays usable: a later call opens a connection again."""
        if self._own_api is not None:
            self._own_api.close()

    def _delete_own_pods(self) -> None:
        """The last act of a driver whose Job was deleted without its pods (the resolution's end recorded, its
        workers' Jobs deleted): delete the pods that Job made, which nothing else would (no Job, so no TTL; the pod
        garbage collector takes an ended pod only once its node is gone) and would stay, ended, for ever: the
        earlier ones (a driver that exited 75, an evicted one), listed by the Job controller's labels, each by uid;
        then its own ($SEMATIC_K8S_POD_NAME, the downward API's), last, as its delete stops this process (by name
        when not listed: no other pod can have it while this one runs in it). Refused (a Role without delete on
        pods) or unreachable, it logs the command to run."""
        assert self.owner is not None and self.root_id is not None
        (job, job_uid), root = self.owner, self.root_id
        me = os.environ.get(POD_NAME_ENV)
        selector = f"{RESOLUTION_LABEL}={root},{ROLE_LABEL}=driver"
        try:
            pods: list[tuple[str, str | None]] = [*pods_left(self.kube.list_pods(selector), job, job_uid, root, root,
                                                             role="driver")]
        except Exception as e:  # noqa: BLE001 - not listable now: its own pod, which it knows
            log.warning("could not list the pods of this driver's Job %s: %s", job,
                        api_message(e) if isinstance(e, ApiException) else e)
            pods = []
        if me and me not in {name for name, _ in pods}:
            pods.append((me, None))
        pods.sort(key=lambda p: p[0] == me)  # its own last
        for name, uid in pods:
            try:
                self.stats.pod_deletes += 1
                self.kube.delete_pod(name, uid)
            except Exception as e:  # noqa: BLE001 - refused or unreachable: said, with what to run
                if isinstance(e, ApiException) and e.status in (404, 409):
                    continue  # gone already, or another pod of that name
                status = e.status if isinstance(e, ApiException) else None
                why = f"{status} {api_message(e)}" if isinstance(e, ApiException) else f"{type(e).__name__}: {e}"
                hint = " (give the driver's Role delete on pods, as the chart's does)" if status == 403 else ""
                log.warning("could not delete pod %s, left behind by this driver's Job %s deleted without it: %s%s; "
                            "delete its pods with: kubectl delete pods -n %s -l %s", name, job, why, hint,
                            self.namespace, selector)
                return
            log.warning("deleting pod %s: this driver's Job %s was deleted without it, and nothing else would", name,
                        job)
