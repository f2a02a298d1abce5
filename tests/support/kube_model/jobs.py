"""The Job controller and the TTL-after-finished controller.

https://kubernetes.io/docs/concepts/workloads/controllers/job/: pods named ``<job>-<5 chars>`` owned by the Job
(controller reference, ``batch.kubernetes.io/job-tracking`` finalizer until counted or orphaned); ``parallelism`` and
``completions``; failed pods counted against ``backoffLimit`` with an exponential delay before replacements;
``podFailurePolicy`` rules (FailJob, Ignore, Count on exit codes and pod conditions such as DisruptionTarget,
https://kubernetes.io/docs/tasks/job/pod-failure-policy/); ``activeDeadlineSeconds`` counted from
``status.startTime``; the terminal conditions come after interim ones (FailureTarget then Failed,
SuccessCriteriaMet then Complete) once no pod is terminating, with reasons BackoffLimitExceeded,
DeadlineExceeded, PodFailurePolicy, CompletionsReached; Events SuccessfulCreate, SuccessfulDelete, FailedCreate
(pod creation refused: Pod Security, ResourceQuota, LimitRange, missing ServiceAccount...), Completed, and the
failure reason.
https://kubernetes.io/docs/concepts/workloads/controllers/ttlafterfinished/: finished Jobs are deleted (with their
pods) ``ttlSecondsAfterFinished`` after they finish, with propagationPolicy Foreground and a UID precondition
(pkg/controller/ttlafterfinished/ttlafterfinished_controller.go, processJob).
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import TYPE_CHECKING, Any

from kube_model.api import DeleteOptions
from kube_model.errors import ApiError
from kube_model.meta import parse_stamp, stamp
from kube_model.rbac import system_user
from kube_model.store import Change

if TYPE_CHECKING:
    from kube_model.cluster import Cluster

TRACKING = "batch.kubernetes.io/job-tracking"
CONTROLLER = "job-controller"
USER = system_user("system:serviceaccount:kube-system:job-controller")


def condition(kind: str, reason: str, message: str) -> dict[str, Any]:
    now = stamp()
    return {"type": kind, "status": "True", "lastProbeTime": now, "lastTransitionTime": now, "reason": reason,
            "message": message}


def has(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (job.get("status") or {}).get("conditions") or []
                 if c.get("type") == kind and c.get("status") == "True"), None)


def finished(job: dict[str, Any]) -> dict[str, Any] | None:
    return has(job, "Complete") or has(job, "Failed")


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    return next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)


def _terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def match_policy(policy: dict[str, Any] | None, pod: dict[str, Any]) -> tuple[str | None, bool]:
    """(FailJob message or None, whether the failure counts towards backoffLimit)."""
    if not policy:
        return None, True
    status = pod.get("status") or {}
    meta = pod["metadata"]
    for index, rule in enumerate(policy.get("rules") or []):
        action = rule.get("action")
        codes = rule.get("onExitCodes")
        hit = None
        if codes is not None:
            for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
                term = (cs.get("state") or {}).get("terminated")
                if not term or term.get("exitCode", 0) == 0:
                    continue
                if codes.get("containerName") and codes["containerName"] != cs["name"]:
                    continue
                inside = term["exitCode"] in (codes.get("values") or [])
                if inside == (codes.get("operator") == "In"):
                    hit = ("container", cs["name"], term["exitCode"])
                    break
        else:
            for cond in status.get("conditions") or []:
                if any(cond.get("type") == p.get("type") and cond.get("status") == p.get("status", "True")
                       for p in rule.get("onPodConditions") or []):
                    hit = ("condition", cond["type"], None)
                    break
        if hit is None:
            continue
        if action == "Ignore":
            return None, False
        if action == "FailJob":
            if hit[0] == "container":
                return (f"Container {hit[1]} for pod {meta['namespace']}/{meta['name']} failed with exit code "
                        f"{hit[2]} matching FailJob rule at index {index}"), True
            return (f"Pod {meta['namespace']}/{meta['name']} has condition {hit[1]} matching FailJob rule at index "
                    f"{index}"), True
        return None, True
    return None, True


class JobController:
    """Keyed by (namespace, name); resyncs on Job and pod changes and on timers."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.queued: set[tuple[str, str]] = set()
        self.backoff: dict[str, tuple[int, float]] = {}  # job uid -> (failures in a row, last failure time)
        self.create_delay: dict[str, float] = {}
        self.not_before: dict[str, float] = {}
        self.ttl_timers: dict[str, asyncio.TimerHandle] = {}
        self.owned: dict[str, set[tuple[str, str]]] = {}  # job uid -> (ns, name) of pods it controls

    def enqueue(self, ns: str, name: str, delay: float = 0.0) -> None:
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.enqueue, ns, name)
            return
        key = (ns, name)
        if key not in self.queued:
            self.queued.add(key)
            self.queue.put_nowait(key)

    def on_change(self, change: Change) -> None:
        if change.key == "jobs.batch":
            self.enqueue(change.namespace, change.name)
        elif change.key == "pods":
            ref = controller_of(change.obj)
            if ref is not None and ref.get("kind") == "Job":
                pods = self.owned.setdefault(ref.get("uid", ""), set())
                if change.type == "DELETED":
                    pods.discard((change.namespace, change.name))
                else:
                    pods.add((change.namespace, change.name))
                self.enqueue(change.namespace, ref["name"])
            elif change.type != "DELETED" and TRACKING in (change.obj["metadata"].get("finalizers") or []):
                asyncio.get_running_loop().call_soon(self._release_orphan, change.namespace, change.name)

    def _release_orphan(self, ns: str, name: str) -> None:
        """A pod with the tracking finalizer but no Job controlling it (its Job deleted with propagationPolicy
        Orphan): the finalizer goes, or the pod could never be deleted (the real controller's syncOrphanPod)."""
        pod = self.cluster.store.get("pods", ns, name)
        if pod is not None and controller_of(pod) is None:
            self._release(pod)

    async def run(self) -> None:
        while True:
            key = await self.queue.get()
            self.queued.discard(key)
            try:
                self.sync(*key)
            except Exception:  # noqa: BLE001
                self.cluster.log_exception("job controller")

    # -- sync -------------------------------------------------------------------------------------------

    def pods_of(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        uid = job["metadata"]["uid"]
        pods = [self.cluster.store.get("pods", ns, name) for ns, name in self.owned.get(uid, ())]
        return [p for p in pods if p is not None and (controller_of(p) or {}).get("uid") == uid]

    def sync(self, ns: str, name: str) -> None:
        job = self.cluster.store.get("jobs.batch", ns, name)
        if job is None:  # deleted: its pods' tracking finalizers must go, or they never disappear
            for p in list(self.cluster.store.items("pods", ns)):
                ref = controller_of(p)
                if ref is not None and ref.get("kind") == "Job" and ref.get("name") == name:
                    self._release(p)
            return
        uid = job["metadata"]["uid"]
        pods = self.pods_of(job)
        if finished(job) or job["metadata"].get("deletionTimestamp"):
            for p in pods:
                self._release(p)
            if finished(job):
                self._schedule_ttl(job)
                self.backoff.pop(uid, None)
            return
        spec = job["spec"]
        status = copy.deepcopy(job.get("status") or {})
        conditions = list(status.get("conditions") or [])
        if not status.get("startTime") and not spec.get("suspend"):
            status["startTime"] = stamp()
        only_failed = spec.get("podReplacementPolicy") == "Failed"
        policy = spec.get("podFailurePolicy")
        fail_job = None
        succeeded, failed = int(status.get("succeeded") or 0), int(status.get("failed") or 0)
        counted_failures = 0
        for p in pods:
            if TRACKING not in (p["metadata"].get("finalizers") or []):
                continue
            phase = (p.get("status") or {}).get("phase")
            if phase == "Succeeded":
                succeeded += 1
                self.backoff.pop(uid, None)
                self._release(p)
            elif phase == "Failed" or (not only_failed and p["metadata"].get("deletionTimestamp")):
                message, counts = match_policy(policy, p) if phase == "Failed" else (None, True)
                if message and fail_job is None:
                    fail_job = message
                if counts:
                    failed += 1
                    counted_failures += 1
                self._release(p)
        if counted_failures:
            n, _ = self.backoff.get(uid, (0, 0.0))
            self.backoff[uid] = (n + counted_failures, time.monotonic())
        active = [p for p in self.pods_of(job) if not _terminal(p) and not p["metadata"].get("deletionTimestamp")]
        terminating = [p for p in self.pods_of(job) if not _terminal(p) and p["metadata"].get("deletionTimestamp")]
        target = has(job, "FailureTarget")
        if target is None and not has(job, "SuccessCriteriaMet"):
            if fail_job:
                target = condition("FailureTarget", "PodFailurePolicy", fail_job)
            elif failed > int(spec.get("backoffLimit", 6)) or self._past_restarts(job, active):
                target = condition("FailureTarget", "BackoffLimitExceeded",
                                   "Job has reached the specified backoff limit")
            elif self._past_deadline(job, status):
                target = condition("FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline")
            elif spec.get("activeDeadlineSeconds") and status.get("startTime"):
                started = parse_stamp(status["startTime"]).timestamp()
                left = float(spec["activeDeadlineSeconds"]) - (time.time() - started)
                self.enqueue(ns, name, max(left, 0) + 0.05)
            if target is not None:
                conditions.append(target)
        if target is not None:
            for p in active:
                self._delete_pod(job, p)
            active = []
            failed += self._count_unfinished(job, policy)
            terminating = [p for p in self.pods_of(job) if not _terminal(p)]
            if not terminating:
                conditions.append(condition("Failed", target["reason"], target["message"]))
                self.cluster.recorder.legacy(job, "Warning", target["reason"], target["message"], CONTROLLER)
        else:
            completions = spec.get("completions")
            done = (succeeded >= completions) if completions is not None else succeeded > 0
            if done and not active:
                met = has(job, "SuccessCriteriaMet") or condition("SuccessCriteriaMet", "CompletionsReached",
                                                                   "Reached expected number of succeeded pods")
                if not has(job, "SuccessCriteriaMet"):
                    conditions.append(met)
                if not terminating:
                    conditions.append(condition("Complete", met["reason"], met["message"]))
                    status["completionTime"] = stamp()
                    self.cluster.recorder.legacy(job, "Normal", "Completed", "Job completed", CONTROLLER)
            elif not spec.get("suspend"):
                active = active + self._manage(job, active, terminating, succeeded, only_failed)
        status.update({"conditions": conditions or None, "succeeded": succeeded or None, "failed": failed or None,
                       "active": len(active) or None,
                       "ready": sum(1 for p in active if _ready(p)),
                       "terminating": len(terminating),
                       "uncountedTerminatedPods": {}})
        status = {k: v for k, v in status.items() if v is not None}

        def edit(j: dict[str, Any]) -> None:
            j["status"] = status
        self.cluster.api.mutate("jobs.batch", ns, name, edit, share_spec=True)

    def _count_unfinished(self, job: dict[str, Any], policy: dict[str, Any] | None) -> int:
        """A failing Job (FailureTarget) counts each of its pods not yet finished as failed at once (unless a
        podFailurePolicy rule ignores it) and removes their tracking finalizers, terminating or not
        (pkg/controller/job/job_controller.go, trackJobStatusAndRemoveFinalizers: "When the job is considered
        finished, every non-terminated pod is considered failed"; canRemoveFinalizer); the Failed condition still
        waits for them to terminate (``status.terminating``). How many it counted."""
        counted = 0
        for p in self.pods_of(job):
            if TRACKING not in (p["metadata"].get("finalizers") or []) or _terminal(p):
                continue
            if match_policy(policy, p)[1]:
                counted += 1
            self._release(p)
        return counted

    def _past_deadline(self, job: dict[str, Any], status: dict[str, Any]) -> bool:
        deadline = job["spec"].get("activeDeadlineSeconds")
        if not deadline or not status.get("startTime"):
            return False
        return time.time() - parse_stamp(status["startTime"]).timestamp() >= float(deadline)

    def _past_restarts(self, job: dict[str, Any], active: list[dict[str, Any]]) -> bool:
        if job["spec"]["template"]["spec"].get("restartPolicy") != "OnFailure":
            return False
        restarts = sum(int(cs.get("restartCount") or 0) for p in active
                       for cs in ((p.get("status") or {}).get("containerStatuses") or [])
                       + ((p.get("status") or {}).get("initContainerStatuses") or []))
        limit = int(job["spec"].get("backoffLimit", 6))
        return restarts > 0 if limit == 0 else restarts >= limit

    def _manage(self, job: dict[str, Any], active: list[dict[str, Any]], terminating: list[dict[str, Any]],
                succeeded: int, only_failed: bool) -> list[dict[str, Any]]:
        spec = job["spec"]
        meta = job["metadata"]
        uid = meta["uid"]
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        wanted = parallelism if completions is None else min(parallelism, completions - succeeded)
        busy = len(active) + (len(terminating) if only_failed else 0)
        missing = wanted - busy
        if missing <= 0:
            return []
        failures, last = self.backoff.get(uid, (0, 0.0))
        if failures:
            delay = min(self.cluster.timing.job_backoff * 2 ** (failures - 1), self.cluster.timing.job_backoff_cap)
            left = last + delay - time.monotonic()
            if left > 0:
                self.enqueue(meta["namespace"], meta["name"], left + 0.01)
                return []
        if time.monotonic() < self.not_before.get(uid, 0.0):
            return []
        created = []
        for _ in range(missing):
            pod = self._pod_for(job)
            try:
                result = self.cluster.api.create(self.cluster.registry.core("pods"), meta["namespace"], pod, USER)
            except ApiError as e:
                self.cluster.recorder.legacy(job, "Warning", "FailedCreate", f"Error creating: {e.message}",
                                             CONTROLLER)
                delay = self.create_delay.get(uid, self.cluster.timing.create_retry)
                self.create_delay[uid] = min(delay * 2, self.cluster.timing.create_retry_cap)
                self.not_before[uid] = time.monotonic() + delay
                self.enqueue(meta["namespace"], meta["name"], delay + 0.01)
                break
            self.create_delay.pop(uid, None)
            created.append(result.body)
            self.cluster.recorder.legacy(job, "Normal", "SuccessfulCreate",
                                         f"Created pod: {result.body['metadata']['name']}", CONTROLLER)
        return created

    def _pod_for(self, job: dict[str, Any]) -> dict[str, Any]:
        meta = job["metadata"]
        template = copy.deepcopy(job["spec"]["template"])
        tmeta = template.get("metadata") or {}
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": f"{meta['name']}-", "namespace": meta["namespace"],
                             "labels": tmeta.get("labels") or {},
                             **({"annotations": tmeta["annotations"]} if tmeta.get("annotations") else {}),
                             "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                                  "uid": meta["uid"], "controller": True,
                                                  "blockOwnerDeletion": True}],
                             "finalizers": [TRACKING]},
                "spec": template.get("spec") or {}}

    def _release(self, pod: dict[str, Any]) -> None:
        if TRACKING not in (pod["metadata"].get("finalizers") or []):
            return

        def edit(p: dict[str, Any]) -> None:
            p["metadata"]["finalizers"] = [f for f in p["metadata"].get("finalizers") or [] if f != TRACKING]
            if not p["metadata"]["finalizers"]:
                del p["metadata"]["finalizers"]
        self.cluster.api.mutate("pods", pod["metadata"]["namespace"], pod["metadata"]["name"], edit, share_spec=True)

    def _delete_pod(self, job: dict[str, Any], pod: dict[str, Any]) -> None:
        try:
            self.cluster.api.delete(self.cluster.registry.core("pods"), pod["metadata"]["namespace"],
                                    pod["metadata"]["name"], DeleteOptions(), USER)
        except ApiError:
            return
        self.cluster.recorder.legacy(job, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}",
                                     CONTROLLER)

    # -- TTL after finished -----------------------------------------------------------------------------

    def _schedule_ttl(self, job: dict[str, Any]) -> None:
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        uid = job["metadata"]["uid"]
        if ttl is None or uid in self.ttl_timers:
            return
        cond = finished(job) or {}
        when = parse_stamp(cond.get("lastTransitionTime") or stamp()).timestamp() + float(ttl)
        meta = job["metadata"]
        self.ttl_timers[uid] = asyncio.get_running_loop().call_later(
            max(0.0, when - time.time()), self._expire, meta["namespace"], meta["name"], uid)

    def _expire(self, ns: str, name: str, uid: str) -> None:
        self.ttl_timers.pop(uid, None)
        job = self.cluster.store.get("jobs.batch", ns, name)
        if job is None or job["metadata"]["uid"] != uid:
            return
        try:
            self.cluster.api.delete(self.cluster.registry.get("jobs.batch"), ns, name,
                                    DeleteOptions(propagation="Foreground", uid=uid),
                                    system_user("system:serviceaccount:kube-system:ttl-after-finished-controller"))
        except ApiError:
            pass


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])
