"""Events, as the components record them, and the two API views of them.

The kubelet and the Job controller use the legacy recorder (core/v1 Events with ``source``, ``count``,
``firstTimestamp``/``lastTimestamp``; repeats of the same reason and message raise ``count``); the scheduler uses
the events.k8s.io/v1 recorder (``eventTime``, ``reportingController``, ``action``, ``series`` for repeats; in the
core/v1 view its timestamps are empty). https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kube_model.meta import micro_stamp, stamp

NEW_TO_OLD = {"regarding": "involvedObject", "note": "message", "deprecatedSource": "source",
              "deprecatedFirstTimestamp": "firstTimestamp", "deprecatedLastTimestamp": "lastTimestamp",
              "deprecatedCount": "count", "reportingController": "reportingComponent"}
OLD_TO_NEW = {v: k for k, v in NEW_TO_OLD.items()}


def to_new(event: dict[str, Any]) -> dict[str, Any]:
    """core/v1 Event -> events.k8s.io/v1 Event."""
    out: dict[str, Any] = {"apiVersion": "events.k8s.io/v1", "kind": "Event"}
    for k, v in event.items():
        if k in ("apiVersion", "kind"):
            continue
        if k == "series" and isinstance(v, dict):
            out["series"] = {"count": v.get("count"), "lastObservedTime": v.get("lastObservedTime")}
            continue
        out[OLD_TO_NEW.get(k, k)] = v
    return out


def to_old(event: dict[str, Any]) -> dict[str, Any]:
    """events.k8s.io/v1 Event -> core/v1 Event (what is stored)."""
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Event"}
    for k, v in event.items():
        if k in ("apiVersion", "kind"):
            continue
        out[NEW_TO_OLD.get(k, k)] = v
    out.setdefault("involvedObject", {})
    return out


def ref(obj: dict[str, Any], field_path: str | None = None) -> dict[str, Any]:
    meta = obj["metadata"]
    out = {"kind": obj.get("kind"), "namespace": meta.get("namespace"), "name": meta["name"], "uid": meta.get("uid"),
           "apiVersion": obj.get("apiVersion"), "resourceVersion": meta.get("resourceVersion")}
    if field_path:
        out["fieldPath"] = field_path
    return {k: v for k, v in out.items() if v}


class Recorder:
    """Records Events through ``create`` (a function storing a core/v1 Event) and ``bump`` (raise the count of
    a stored one). Repeats within ten minutes update the first Event instead of adding another."""

    def __init__(self, create: Callable[[dict[str, Any]], dict[str, Any]],
                 bump: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None]) -> None:
        self.create, self.bump = create, bump
        self.seen: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}

    def _name(self, obj: dict[str, Any]) -> str:
        return f"{obj['metadata']['name']}.{time.time_ns():x}"

    def legacy(self, obj: dict[str, Any], type_: str, reason: str, message: str, component: str,
               host: str | None = None, field_path: str | None = None) -> None:
        involved = ref(obj, field_path)
        key = (involved.get("uid"), field_path, reason, message, component, host)
        now = stamp()
        prior = self.seen.get(key)
        if prior is not None and time.monotonic() - prior[0] < 600:
            updated = self.bump(prior[1], {"count": int(prior[1].get("count") or 1) + 1, "lastTimestamp": now})
            if updated is not None:
                self.seen[key] = (prior[0], updated)
                return
        source = {"component": component, **({"host": host} if host else {})}
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"name": self._name(obj), "namespace": obj["metadata"].get("namespace") or "default"},
                 "involvedObject": involved, "reason": reason, "message": message, "source": source,
                 "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": type_, "eventTime": None,
                 "reportingComponent": component, "reportingInstance": host or ""}
        self.seen[key] = (time.monotonic(), self.create(event))

    def new(self, obj: dict[str, Any], type_: str, reason: str, note: str, controller: str, instance: str,
            action: str) -> None:
        """An events.k8s.io/v1 Event (stored in core/v1 shape: no first/last timestamps, no count)."""
        involved = ref(obj)
        key = (involved.get("uid"), reason, note, controller, action)
        prior = self.seen.get(key)
        if prior is not None and time.monotonic() - prior[0] < 600:
            series = dict(prior[1].get("series") or {"count": 1})
            series["count"] = int(series.get("count") or 1) + 1
            series["lastObservedTime"] = micro_stamp()
            updated = self.bump(prior[1], {"series": series})
            if updated is not None:
                self.seen[key] = (prior[0], updated)
                return
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"name": self._name(obj), "namespace": obj["metadata"].get("namespace") or "default"},
                 "involvedObject": involved, "reason": reason, "message": note, "source": {},
                 "firstTimestamp": None, "lastTimestamp": None, "type": type_, "eventTime": micro_stamp(),
                 "action": action, "reportingComponent": controller, "reportingInstance": instance}
        self.seen[key] = (time.monotonic(), self.create(event))
