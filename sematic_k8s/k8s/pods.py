"""What a pod's (or a Job's) status says about the worker in it, in the words the Runs record.

Works on the raw JSON dicts of watch events (no model deserialization: a fan-out sees thousands).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sematic_k8s.errors import node_rejected
from sematic_k8s.labels import RESOLUTION_LABEL, ROLE_LABEL, RUN_LABEL

PULL_PROBLEMS = frozenset({"ImagePullBackOff", "ErrImagePull"})
CONFIG_PROBLEMS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
FATAL_WAITING = frozenset({"InvalidImageName", "ErrImageNeverPull"})  # never fixes itself: fail at once
NODE_GONE = frozenset({"Evicted", "Shutdown", "Terminated", "NodeShutdown", "NodeLost", "Preempting",
                       "UnexpectedAdmissionError"})  # the pod lost its node: not the func's fault
WORKER = "worker"  # the worker's container (sematic_k8s.k8s.manifests.WORKER_CONTAINER)
BORING_EXIT = frozenset({None, "", "Error", "Completed"})


@dataclass(frozen=True, slots=True)
class PodState:
    """One pod's status, classified.

    Read from the worker's own container status (found by name: sidecars such as istio-proxy sort
    first). ``terminal``: the worker is done (Succeeded, Failed, the pod is gone, or the worker container
    ended while a classic sidecar keeps the pod running: ``lingering``). ``stuck``: Pending for a reason
    that fails the run after a grace period (image pull, container config); ``fatal``: Pending for a
    reason that fails it at once; ``waiting``: Pending until the cluster has room (Unschedulable: only
    reported, never failed); ``creating``: scheduled, its containers not created yet (ContainerCreating:
    Events say whether something blocks it). ``retryable``: the pod lost its node (evicted, preempted,
    drained) or its kubelet refused it (OutOfcpu, NodeAffinity, TaintToleration), so the same attempt may run again.
    ``started``: a container ran, so its logs are worth reading; ``started_at``: when the worker
    container started (RFC 3339). ``termination_log``: the kubelet's copy of the last log lines.
    ``stopping``: the pod is being deleted (evicted through the API, preempted, drained, deleted by someone) and
    has not ended yet; ``reason`` says what its ending will be (Evicted, or PodDeleted). Its Job has failed
    already (a deleted pod counts as failed at once) while its containers may take their grace period to stop.
    """

    phase: str
    terminal: bool = False
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    stuck: bool = False
    fatal: bool = False
    retryable: bool = False
    started: bool = False
    node: str | None = None
    termination_log: str = ""
    waiting: bool = False
    creating: bool = False
    lingering: bool = False
    started_at: str | None = None
    stopping: bool = False


def _container_status(status: dict[str, Any], container: str) -> dict[str, Any]:
    """The status of ``container`` (statuses are sorted by name, not spec order); the only one if none is
    named so (a pod of another shape)."""
    statuses = status.get("containerStatuses") or []
    named = next((cs for cs in statuses if cs.get("name") == container), None)
    if named is not None:
        return named
    return statuses[0] if len(statuses) == 1 else {}


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def pod_state(pod: dict[str, Any], *, deleted: bool = False, container: str = WORKER) -> PodState:
    """Classify ``pod`` (a watch event's object) by its ``container``; ``deleted`` when the event was DELETED."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    node = (pod.get("spec") or {}).get("nodeName")
    cs = _container_status(status, container)
    state = cs.get("state") or {}
    term = state.get("terminated") or (cs.get("lastState") or {}).get("terminated")
    waiting = state.get("waiting") or {}
    started = bool(term or state.get("running"))
    started_at = (state.get("running") or term or {}).get("startedAt")
    exit_code = term.get("exitCode") if term else None
    log = (term or {}).get("message") or ""
    disruption = _condition(status, "DisruptionTarget")
    disrupted = bool(disruption and disruption.get("status") == "True")
    common: dict[str, Any] = {"phase": phase, "node": node, "started": started, "termination_log": log,
                              "started_at": started_at}

    if phase == "Succeeded":
        return PodState(terminal=True, exit_code=0 if exit_code is None else exit_code, **common)
    if phase == "Failed":
        reason, message, retryable = status.get("reason"), status.get("message"), False
        if term and term.get("reason") == "OOMKilled":
            reason = "OOMKilled"
        elif node_rejected(reason):  # launched again: errors.NODE_REJECTIONS
            retryable = True
        elif reason in NODE_GONE or (disrupted and reason != "DeadlineExceeded"):
            reason, retryable = "Evicted", True
            message = message or (disruption or {}).get("message") or (disruption or {}).get("reason")
        elif not reason and (pod.get("metadata") or {}).get("deletionTimestamp"):  # stopped by a delete (kubectl)
            reason = "PodDeleted"  # its words: errors.PodDeleted
        elif not reason and term and term.get("reason") not in BORING_EXIT:
            reason = term.get("reason")
        return PodState(terminal=True, exit_code=exit_code, reason=reason, message=message,
                        retryable=retryable, **common)
    if deleted or (pod.get("metadata") or {}).get("deletionTimestamp"):  # gone, or going, before it finished
        if disrupted:
            return PodState(terminal=deleted, stopping=not deleted, exit_code=exit_code, reason="Evicted",
                            retryable=True,
                            message=(disruption or {}).get("message") or (disruption or {}).get("reason"), **common)
        return PodState(terminal=deleted, stopping=not deleted, exit_code=exit_code, reason="PodDeleted",
                        **common)  # no message: the reason's words (errors.PodDeleted) say it
    others_run = any((c.get("state") or {}).get("running") for c in status.get("containerStatuses") or []
                     if c is not cs)
    if state.get("terminated") and others_run and not disrupted:  # the worker ended; a classic sidecar runs on
        reason = "OOMKilled" if state["terminated"].get("reason") == "OOMKilled" else None
        return PodState(terminal=True, exit_code=exit_code, reason=reason, lingering=True, **common)
    why = waiting.get("reason")
    if why in FATAL_WAITING:
        return PodState(reason=why, message=waiting.get("message"), fatal=True, **common)
    if why in PULL_PROBLEMS or why in CONFIG_PROBLEMS:
        return PodState(reason=why, message=waiting.get("message"), stuck=True, **common)
    scheduled = _condition(status, "PodScheduled")
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return PodState(reason="Unschedulable", message=scheduled.get("message"), waiting=True, **common)
    creating = phase == "Pending" and bool(node) and not started and why in (None, "ContainerCreating",
                                                                              "PodInitializing")
    return PodState(creating=creating, **common)


KEPT_CONDITIONS = frozenset({"DisruptionTarget", "PodScheduled"})
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")  # set on a Job's pods by the Job controller
JOB_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
KEPT_LABELS = (*JOB_NAME_LABELS, *JOB_UID_LABELS, RESOLUTION_LABEL, RUN_LABEL, ROLE_LABEL)


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """What :func:`pod_state`, :func:`owner_job`, :func:`made_by` and :func:`worker_uid` read of a pod, and nothing
    else: a watch thread keeps this, not the whole object, while the executor is busy (a fan-out's events can pile
    up)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    labels = meta.get("labels") or {}
    return {"metadata": {"name": meta.get("name"), "uid": meta.get("uid"),
                         "deletionTimestamp": meta.get("deletionTimestamp"),
                         "ownerReferences": [r for r in meta.get("ownerReferences") or [] if r.get("kind") == "Job"],
                         "labels": {k: labels[k] for k in KEPT_LABELS if k in labels}},
            "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
            "status": {"phase": status.get("phase"), "reason": status.get("reason"), "message": status.get("message"),
                       "conditions": [c for c in status.get("conditions") or [] if c.get("type") in KEPT_CONDITIONS],
                       "containerStatuses": [{k: cs.get(k) for k in ("name", "state", "lastState")}
                                             for cs in status.get("containerStatuses") or []]}}


def slim_job(job: dict[str, Any]) -> dict[str, Any]:
    """What the executor reads of a Job: its name, uid, labels and conditions."""
    meta = job.get("metadata") or {}
    return {"metadata": {"name": meta.get("name"), "uid": meta.get("uid"), "labels": meta.get("labels") or {},
                         "deletionTimestamp": meta.get("deletionTimestamp")},
            "status": {"conditions": (job.get("status") or {}).get("conditions") or []}}


def job_failure(job: dict[str, Any]) -> tuple[str, str | None] | None:
    """(reason, message) when the Job failed (or is about to: FailureTarget), else None."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Failed", "FailureTarget") and cond.get("status") == "True":
            return cond.get("reason") or "JobFailed", cond.get("message")
    return None


def owner_job(pod: dict[str, Any]) -> str | None:
    """The name of the Job that owns ``pod``."""
    meta = pod.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "Job":
            return ref.get("name")
    labels = meta.get("labels") or {}
    return labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")


def made_by(pod: dict[str, Any]) -> str | None:
    """The uid of the Job that made ``pod``: its controller's, else the one the Job controller's labels name (they
    stay on a pod whose Job was deleted without it; its ownerReferences do not)."""
    meta = pod.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "Job" and ref.get("controller"):
            return ref.get("uid")
    labels = meta.get("labels") or {}
    return next((labels[k] for k in JOB_UID_LABELS if labels.get(k)), None)


def orphans(pods: list[dict[str, Any]], job_uids: set[str], resolution_id: str) -> list[tuple[str, str]]:
    """(name, uid) of the worker pods of resolution ``resolution_id`` in ``pods`` that none of the Jobs ``job_uids``
    made (their Job was deleted without them: ``kubectl delete --cascade=orphan`` while no driver ran), and that are
    not being deleted already: nothing else would ever stop them."""
    left = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        ours = labels.get(RESOLUTION_LABEL) == resolution_id and labels.get(ROLE_LABEL) == "worker" and bool(
            labels.get(RUN_LABEL))
        if ours and made_by(pod) not in job_uids and meta.get("uid") and not meta.get("deletionTimestamp"):
            left.append((str(meta.get("name")), str(meta["uid"])))
    return left


def worker_uid(pod: dict[str, Any], resolution_id: str, run_id: str) -> str | None:
    """The uid of ``pod`` when its labels say it is the worker of run ``run_id`` in resolution ``resolution_id``
    (the one pod of theirs the executor may delete), else None."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    wanted = {RESOLUTION_LABEL: resolution_id, RUN_LABEL: run_id, ROLE_LABEL: "worker"}
    return meta.get("uid") if all(labels.get(k) == v for k, v in wanted.items()) else None


def pods_left(pods: list[dict[str, Any]], job_name: str, job_uid: str | None, resolution_id: str,
              run_id: str, role: str = "worker") -> list[tuple[str, str]]:
    """(name, uid) of the pods in ``pods`` that Job ``job_name`` made (its uid in their labels when ``job_uid`` is
    known, else its name: the labels the Job controller sets on its pods) for the ``role`` (worker, or driver) of
    run ``run_id`` in resolution ``resolution_id``, and that are not being deleted already: what a Job deleted
    without its pods left behind."""
    left = []
    wanted = {RESOLUTION_LABEL: resolution_id, RUN_LABEL: run_id, ROLE_LABEL: role}
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        made = (job_uid in {labels.get(k) for k in JOB_UID_LABELS}) if job_uid else (
            job_name in {labels.get(k) for k in JOB_NAME_LABELS})
        ours = all(labels.get(k) == v for k, v in wanted.items())
        if made and ours and meta.get("uid") and not meta.get("deletionTimestamp"):
            left.append((str(meta.get("name")), str(meta["uid"])))
    return left
