"""Events, as the components record them, and the two API views of them.

The kubelet and the Job controller use the legacy recorder (core/v1 Events with ``source``, ``count``,
``firstTimestamp``/``lastTimestamp``; repeats raise ``count``, similar ones are combined, a spamming source is cut
off: :class:`Recorder`); the scheduler uses
the events.k8s.io/v1 recorder (``eventTime``, ``reportingController``, ``action``, ``series`` for repeats; in the
core/v1 view its timestamps are empty). https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/
"""

from __future__ import annotations

import asyncio
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


COMBINED = "(combined from similar events): "
AGGREGATE_AFTER = 10  # defaultAggregateMaxEvents
SPAM_BURST = 25  # defaultSpamBurst


class Recorder:
    """Records Events through ``create`` (a function storing a core/v1 Event) and ``bump`` (update a stored one).

    The legacy recorder correlates as client-go's EventCorrelator does (k8s.io/client-go/tools/record/
    events_cache.go): a repeat of the same Event (source, involved object, type, reason, message) raises the
    count of the first one; the 10th distinct message of the same source, object, type and reason within
    ``aggregate_interval`` (real 600 s) is recorded as one Event "(combined from similar events): <message>",
    which later ones update (count, lastTimestamp, message); and a source may record 25 Events (or updates)
    about one object, then one more every ``spam_refill`` seconds (real 300 s): the rest are dropped."""

    def __init__(self, create: Callable[[dict[str, Any]], dict[str, Any]],
                 bump: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None],
                 aggregate_interval: float = 600.0, spam_refill: float = 300.0, series_refresh: float = 1800.0,
                 series_finish: float = 360.0) -> None:
        self.create, self.bump = create, bump
        self.aggregate_interval, self.spam_refill = aggregate_interval, spam_refill
        self.series_refresh, self.series_finish = series_refresh, series_finish
        self.isomorphic: dict[tuple[Any, ...], dict[str, Any]] = {}  # events.k8s.io: the Event, its series, seen
        self.logged: dict[tuple[Any, ...], tuple[int, dict[str, Any] | None]] = {}  # eventLogger: count, stored
        self.similar: dict[tuple[Any, ...], tuple[set[str], float]] = {}  # EventAggregator: messages, last seen
        self.tokens: dict[tuple[Any, ...], tuple[float, float]] = {}  # spam filter: tokens, when counted

    def _name(self, obj: dict[str, Any]) -> str:
        return f"{obj['metadata']['name']}.{time.time_ns():x}"

    def _aggregate(self, group: tuple[Any, ...], message: str) -> bool:
        """EventAggregate: whether this message is one too many of its group (then recorded combined)."""
        now = time.monotonic()
        messages, last = self.similar.get(group, (set(), float("-inf")))
        if now - last > self.aggregate_interval:
            messages = set()
        messages.add(message)
        self.similar[group] = (messages, now)
        if len(messages) < AGGREGATE_AFTER:
            return False
        messages.pop()  # PopAny: the set grows no larger
        return True

    def _spam(self, source_object: tuple[Any, ...]) -> bool:
        """EventSourceObjectSpamFilter: a token bucket per source and object; whether this Event is dropped."""
        now = time.monotonic()
        tokens, then = self.tokens.get(source_object, (float(SPAM_BURST), now))
        tokens = min(float(SPAM_BURST), tokens + (now - then) / self.spam_refill)
        dropped = tokens < 1
        self.tokens[source_object] = (tokens if dropped else tokens - 1, now)
        return dropped

    def legacy(self, obj: dict[str, Any], type_: str, reason: str, message: str, component: str,
               host: str | None = None, field_path: str | None = None) -> None:
        involved = ref(obj, field_path)
        source_object = (component, host, involved.get("kind"), involved.get("namespace"), involved.get("name"),
                         involved.get("uid"), involved.get("apiVersion"))
        key: tuple[Any, ...] = (*source_object, field_path, type_, reason, message)
        if self._aggregate((*source_object, type_, reason), message):
            key, message = (*source_object, type_, reason, COMBINED), COMBINED + message
        now = stamp()
        count, prior = self.logged.get(key, (0, None))
        self.logged[key] = (count + 1, prior)  # counted before the spam filter, as eventObserve does
        if self._spam(source_object):
            return
        if prior is not None:
            updated = self.bump(prior, {"count": count + 1, "lastTimestamp": now, "message": message})
            if updated is not None:
                self.logged[key] = (count + 1, updated)
                return
        source = {"component": component, **({"host": host} if host else {})}
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"name": self._name(obj), "namespace": obj["metadata"].get("namespace") or "default"},
                 "involvedObject": involved, "reason": reason, "message": message, "source": source,
                 "firstTimestamp": now, "lastTimestamp": now, "count": count + 1, "type": type_, "eventTime": None,
                 "reportingComponent": component, "reportingInstance": host or ""}
        self.logged[key] = (count + 1, self.create(event))  # a dropped first one still counts (recordEvent)

    def new(self, obj: dict[str, Any], type_: str, reason: str, note: str, controller: str, instance: str,
            action: str) -> None:
        """An events.k8s.io/v1 Event (stored in core/v1 shape: no first/last timestamps, no count), recorded as
        client-go's tools/events broadcaster does (event_broadcaster.go: recordToSink, refreshExistingEventSeries,
        finishSeries): Events are isomorphic by type, action, reason, reporting controller and instance and the
        object they regard (not by note: the stored Event keeps its first note); the first repeat is written at
        once as ``series`` count 2, later ones raise the count in the recorder only, written every
        ``series_refresh`` seconds (real 30 min) and once the series ends (no repeat for ``series_finish``, real
        6 min), when it is forgotten (as a single Event is that long after it)."""
        involved = ref(obj)
        key = (tuple(sorted(involved.items())), type_, reason, controller, instance, action)
        now = time.monotonic()
        cached = self.isomorphic.get(key)
        if cached is not None and cached.get("series") is None and now - cached["seen"] > self.series_finish:
            cached = None  # finishSeries forgot the single Event
        if cached is None:
            event = {"apiVersion": "v1", "kind": "Event",
                     "metadata": {"name": self._name(obj),
                                  "namespace": obj["metadata"].get("namespace") or "default"},
                     "involvedObject": involved, "reason": reason, "message": note, "source": {},
                     "firstTimestamp": None, "lastTimestamp": None, "type": type_, "eventTime": micro_stamp(),
                     "action": action, "reportingComponent": controller, "reportingInstance": instance}
            self.isomorphic[key] = {"stored": self.create(event), "series": None, "seen": now}
            return
        cached["seen"] = now
        if cached["series"] is not None:
            cached["series"] = {"count": cached["series"]["count"] + 1, "lastObservedTime": micro_stamp()}
            return
        cached["series"] = {"count": 2, "lastObservedTime": micro_stamp()}
        self._write_series(key)
        self._later(self.series_refresh, self._refresh, key)
        self._later(self.series_finish, self._finish, key)

    def _write_series(self, key: tuple[Any, ...]) -> None:
        cached = self.isomorphic.get(key)
        if cached is None or cached["series"] is None:
            return
        updated = self.bump(cached["stored"], {"series": dict(cached["series"])})
        if updated is not None:
            cached["stored"] = updated

    def _refresh(self, key: tuple[Any, ...]) -> None:
        if key in self.isomorphic:
            self._write_series(key)
            self._later(self.series_refresh, self._refresh, key)

    def _finish(self, key: tuple[Any, ...]) -> None:
        cached = self.isomorphic.get(key)
        if cached is None:
            return
        left = cached["seen"] + self.series_finish - time.monotonic()
        if left > 0:
            self._later(left, self._finish, key)
            return
        self._write_series(key)
        del self.isomorphic[key]

    @staticmethod
    def _later(delay: float, fn: Callable[[tuple[Any, ...]], None], key: tuple[Any, ...]) -> None:
        asyncio.get_running_loop().call_later(delay, fn, key)
