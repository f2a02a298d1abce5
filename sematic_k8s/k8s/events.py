"""Reading what Kubernetes says about a worker's Job and pod: the Warning Events that block a pod, refusals that
pass (429, 5xx, a quota other Jobs will free), refusals that never will (a LimitRange), and timestamps. Pure functions
over the API's raw dicts."""

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
# The LimitRanger admission plugin's words (plugin/pkg/admission/limitranger: minConstraint, maxConstraint,
# limitRequestRatioConstraint), and a pod made invalid by a LimitRange's default limit below its request
LIMIT_RANGE = re.compile(r"(?:minimum|maximum) \S+ usage per (?:Container|Pod) is |"
                         r"\S+ max limit to request ratio per (?:Container|Pod) is ")
OVER_DEFAULT = re.compile(r'is invalid: .*resources\.requests: Invalid value: "[^"]*": must be less than or equal to '
                          r"(?P<resource>\S+) limit")
# client-go's EventCorrelator records the 10th distinct message of one source, object and reason within 10
# minutes (a Job controller's refusals each name their generated pod) as one Event with this prefix
# (k8s.io/client-go/tools/record/events_cache.go)
COMBINED = "(combined from similar events): "
QUOTA = re.compile(r"exceeded quota: [^,]+, requested: (?P<req>.*?), used: (?P<used>.*?), limited: (?P<lim>[^\s]*)")


def message_of(event: dict[str, Any]) -> str:
    """An Event's message in the words of what it reports, without the prefix an aggregated one carries."""
    message = str(event.get("message") or "")
    return message[len(COMBINED):] if message.startswith(COMBINED) else message


def slim_event(event: dict[str, Any]) -> dict[str, Any] | None:
    """What the executor keeps of a Warning Event: only one that says why a Job has no pod or a pod does not
    start (FailedScheduling and the like are dropped in the watch thread)."""
    if event.get("reason") not in BLOCKING_EVENTS:
        return None
    return {"name": (event.get("involvedObject") or {}).get("name") or "", "reason": event["reason"],
            "message": message_of(event),
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
    """A refusal that passes: 429, 5xx, a ResourceQuota on Jobs that other Jobs ending will free, or a create
    meeting an object of its name that is being deleted (:func:`being_deleted`)."""
    return e.status in (429, 500, 502, 503, 504) or (e.status == 403 and "exceeded quota" in api_message(e)) or (
        being_deleted(e))


def being_deleted(e: ApiException) -> bool:
    """A create's 409 AlreadyExists whose object of that name is being deleted (a foreground deletion, a finalizer):
    the API server's "object is being deleted: ..." (the generic registry's Store.Create). It is not there to
    re-attach to: the create passes once it is gone."""
    return e.status == 409 and api_message(e).startswith("object is being deleted: ")


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


def refused_for_good(message: str, asks: str, namespace: str, cpu_limit: str = "") -> str | None:
    """What to do about a pod's create refused for what the pod itself asks, which each of its Job controller's tries
    meets again (a FailedCreate Event's ``message``): a LimitRange's min, max or limit/request ratio, or a request
    over the limit a LimitRange's default gave the pod (the pod invalid). ``asks`` names where its requests are set,
    ``cpu_limit`` how it may set its own cpu limit. None for another refusal (a missing ServiceAccount, Pod Security,
    a quota, a webhook: they may pass)."""
    see = f"`kubectl describe limitrange -n {namespace}`"
    if LIMIT_RANGE.search(message):
        return f"ask within the namespace's LimitRange ({asks}; {see}) or have it changed"
    over = OVER_DEFAULT.search(message)
    if over is None:
        return None
    resource = over.group("resource")
    own = f", {cpu_limit}" if resource == "cpu" and cpu_limit else ""
    return (f"the namespace's LimitRange gives a pod that sets no {resource} limit a default one below its {resource} "
            f"request: ask at most that ({asks}; {see}){own}, or have the LimitRange's default raised")
