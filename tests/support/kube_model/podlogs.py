"""A pod log request's options as the API server takes them (``PodLogOptions``), checked before the pod is read.

As kube-apiserver's ``LogREST.Get``: its query decoded (an integer or a time that does not parse: 400), then
``ValidatePodLogOptions`` (pkg/apis/core/validation): ``tailLines`` >= 0, ``limitBytes`` and ``sinceSeconds`` > 0,
not both ``sinceSeconds`` and ``sinceTime``; its errors a 422 ``PodLogOptions "<pod>" is invalid: ...``.
"""

from __future__ import annotations

import datetime
import re
import time
from dataclasses import dataclass
from typing import Any

from kube_model.errors import Cause, Kind, bad_request, invalid

KIND = Kind("pods", "", "PodLogOptions")
RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", re.IGNORECASE)


@dataclass(frozen=True)
class LogOptions:
    container: str | None
    previous: bool
    timestamps: bool
    tail: int | None
    limit_bytes: int | None
    since: float | None  # seconds since the epoch: records before it are left out


def _integer(query: dict[str, str], key: str) -> int | None:
    value = query.get(key)
    if value in (None, ""):
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except ValueError as e:
        raise bad_request(f'{key}: Invalid value: "{value}": must be an integer') from e


def _time(value: str | None) -> float | None:
    """metav1.Time's query form: RFC3339 (seconds), as Go's time.Parse(time.RFC3339, ...) reads it."""
    if value in (None, ""):
        return None
    m = RFC3339.fullmatch(value or "")
    if not m:
        raise bad_request(f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse "{value}" as '
                          f'"2006-01-02T15:04:05Z07:00"')
    zone = "+00:00" if m.group(3).upper() == "Z" else m.group(3)
    when = datetime.datetime.fromisoformat(m.group(1) + zone)
    return float(int(when.timestamp()))  # handed to the kubelet as RFC3339: whole seconds


def parse(pod: str, query: dict[str, str]) -> LogOptions:
    """The request's options, or the API server's 400 (undecodable) or 422 (invalid) for them."""
    tail, limit, seconds = _integer(query, "tailLines"), _integer(query, "limitBytes"), _integer(query, "sinceSeconds")
    since_time = _time(query.get("sinceTime"))
    causes = []
    if tail is not None and tail < 0:
        causes.append(Cause("tailLines", "FieldValueInvalid",
                            f"Invalid value: {tail}: must be greater than or equal to 0"))
    if limit is not None and limit < 1:
        causes.append(Cause("limitBytes", "FieldValueInvalid", f"Invalid value: {limit}: must be greater than 0"))
    if seconds is not None and since_time is not None:
        causes.append(Cause("", "FieldValueForbidden",
                            "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"))
    elif seconds is not None and seconds < 1:
        causes.append(Cause("sinceSeconds", "FieldValueInvalid",
                            f"Invalid value: {seconds}: must be greater than 0"))
    if causes:
        raise invalid(KIND, pod, causes)
    since = time.time() - seconds if seconds is not None else since_time
    return LogOptions(container=query.get("container") or None, previous=query.get("previous") == "true",
                      timestamps=query.get("timestamps") == "true", tail=tail, limit_bytes=limit, since=since)


def container(pod: dict[str, Any], name: str | None) -> str:
    """The container a log request names, as the API server's validateContainer picks it (or its 400)."""
    spec = pod.get("spec") or {}
    regular = [c["name"] for c in spec.get("containers") or []]
    inits = [c["name"] for c in spec.get("initContainers") or []]
    pod_name = pod["metadata"]["name"]
    if name is None:
        if len(regular) == 1:
            return regular[0]
        extra = f" or one of the init containers: [{' '.join(inits)}]" if inits else ""
        raise bad_request(f"a container name must be specified for pod {pod_name}, choose one of: "
                          f"[{' '.join(regular)}]{extra}")
    if name not in regular + inits:
        raise bad_request(f"container {name} is not valid for pod {pod_name}")
    return name
