"""Reading what Kubernetes says about a worker's Job and pod: the Warning Events that block a pod, refusals that
pass (429, 5xx, a quota other Jobs will free), and timestamps. Pure functions over the API's raw dicts."""

from __future__ import annotations

import datetime
import re
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from sematic_k8s.k8s.client import api_message
from sematic_k8s.k8s.pods import PULL_PROBLEMS

BLOCKING_EVENTS = ("FailedCreate", "FailedCreatePodSandBox", "FailedMount", "FailedAttachVolume")
PLAIN = {"FailedCreate": "Kubernetes could not create the pod", "FailedAttachVolume": "a volume could not be attached",
         "FailedCreatePodSandBox": "the pod could not start", "FailedMount": "a volume could not be mounted"}
QUOTA = re.compile(r"exceeded quota: [^,]+, requested: (?P<req>.*?), used: (?P<used>.*?), limited: (?P<lim>[^\s]*)")


def slim_event(event: dict[str, Any]) -> dict[str, Any] | None:
    """What the executor keeps of a Warning Event: only one that says why a Job has no pod or a pod does not
    start (FailedScheduling and the like are dropped in the watch thread)."""
    if event.get("reason") not in BLOCKING_EVENTS:
        return None
    return {"name": (event.get("involvedObject") or {}).get("name") or "", "reason": event["reason"],
            "message": event.get("message") or "",
            "rv": int((event.get("metadata") or {}).get("resourceVersion") or 0)}


def newest_blocking(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest of ``events`` (raw Warning Events about one Job or pod) that says why it has no pod or does not
    start."""
    blocking = [e for e in events if e.get("reason") in BLOCKING_EVENTS]
    if not blocking:
        return None
    return max(blocking, key=lambda e: (str(e.get("lastTimestamp") or e.get("eventTime") or ""),
                                        int((e.get("metadata") or {}).get("resourceVersion") or 0)))


def problem(reason: str | None) -> str | None:
    """One name for reasons that alternate while one problem lasts (ErrImagePull <-> ImagePullBackOff)."""
    return "pull" if reason in PULL_PROBLEMS else reason


def timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def for_now(e: ApiException) -> bool:
    """A refusal that passes: 429, 5xx, or a ResourceQuota on Jobs that other Jobs ending will free."""
    return e.status in (429, 500, 502, 503, 504) or (e.status == 403 and "exceeded quota" in api_message(e))


def fits_quota(message: str) -> bool:
    """An "exceeded quota" refusal whose request is within the quota's limits: it will fit once other pods end
    (a request larger than the limit never will)."""
    m = QUOTA.search(message)
    if not m:
        return False
    def parse(part: str) -> dict[str, Any]:
        out = {}
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            try:
                out[key] = parse_quantity(value)
            except ValueError:
                continue
        return out
    requested, limited = parse(m.group("req")), parse(m.group("lim"))
    return all(requested[k] <= limited[k] for k in requested if k in limited)
