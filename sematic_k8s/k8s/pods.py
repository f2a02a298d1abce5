"""What a pod's (or a Job's) status says about the worker in it, in the words the Runs record.

Works on the raw JSON dicts of watch events (no model deserialization: a fan-out sees thousands).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PULL_PROBLEMS = frozenset({"ImagePullBackOff", "ErrImagePull"})
CONFIG_PROBLEMS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
FATAL_WAITING = frozenset({"InvalidImageName", "ErrImageNeverPull"})  # never fixes itself: fail at once
NODE_GONE = frozenset({"Evicted", "Shutdown", "Terminated", "NodeShutdown", "NodeLost", "Preempting",
                       "UnexpectedAdmissionError"})  # the pod lost its node: not the func's fault
BORING_EXIT = frozenset({None, "", "Error", "Completed"})


@dataclass(frozen=True, slots=True)
class PodState:
    """One pod's status, classified.

    ``terminal``: the worker is done (Succeeded, Failed, or the pod is gone). ``stuck``: Pending for a
    reason that fails the run after a grace period (image pull, unschedulable, container config);
    ``fatal``: Pending for a reason that fails it at once. ``retryable``: the pod lost its node
    (evicted, preempted, drained), so the same attempt may run again. ``started``: a container ran, so
    its logs are worth reading. ``termination_log``: the kubelet's copy of the last log lines.
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


def _container_status(status: dict[str, Any]) -> dict[str, Any]:
    statuses = status.get("containerStatuses") or []
    return statuses[0] if statuses else {}


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def pod_state(pod: dict[str, Any], *, deleted: bool = False) -> PodState:
    """Classify ``pod`` (a watch event's object); ``deleted`` when the event was DELETED."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    node = (pod.get("spec") or {}).get("nodeName")
    cs = _container_status(status)
    state = cs.get("state") or {}
    term = state.get("terminated") or (cs.get("lastState") or {}).get("terminated")
    waiting = state.get("waiting") or {}
    started = bool(term or state.get("running"))
    exit_code = term.get("exitCode") if term else None
    log = (term or {}).get("message") or ""
    disruption = _condition(status, "DisruptionTarget")
    disrupted = bool(disruption and disruption.get("status") == "True")
    common: dict[str, Any] = {"phase": phase, "node": node, "started": started, "termination_log": log}

    if phase == "Succeeded":
        return PodState(terminal=True, exit_code=0 if exit_code is None else exit_code, **common)
    if phase == "Failed":
        reason, message, retryable = status.get("reason"), status.get("message"), False
        if term and term.get("reason") == "OOMKilled":
            reason = "OOMKilled"
        elif reason in NODE_GONE or (disrupted and reason != "DeadlineExceeded"):
            reason, retryable = "Evicted", True
            message = message or (disruption or {}).get("message") or (disruption or {}).get("reason")
        elif not reason and term and term.get("reason") not in BORING_EXIT:
            reason = term.get("reason")
        return PodState(terminal=True, exit_code=exit_code, reason=reason, message=message,
                        retryable=retryable, **common)
    if deleted:  # gone before it finished
        if disrupted:
            return PodState(terminal=True, exit_code=exit_code, reason="Evicted", retryable=True,
                            message=(disruption or {}).get("message") or (disruption or {}).get("reason"), **common)
        return PodState(terminal=True, exit_code=exit_code, reason="PodDeleted",
                        message="the worker's pod was deleted before it finished", **common)
    why = waiting.get("reason")
    if why in FATAL_WAITING:
        return PodState(reason=why, message=waiting.get("message"), fatal=True, **common)
    if why in PULL_PROBLEMS or why in CONFIG_PROBLEMS:
        return PodState(reason=why, message=waiting.get("message"), stuck=True, **common)
    scheduled = _condition(status, "PodScheduled")
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return PodState(reason="Unschedulable", message=scheduled.get("message"), stuck=True, **common)
    return PodState(**common)


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
