"""The model's etcd: objects by resource, one global resourceVersion, a change history for watches and
consistent paginated lists, and compaction.

Semantics from https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions: every change
gets a new, increasing resourceVersion; a watch from version N gets every change after N, or 410 Gone when N
was compacted away; a paginated list keeps reading the snapshot of its first page until that version is
compacted (then the continue token has expired: 410).

Everything here runs on the model's event loop thread: no locking. Stored objects are never mutated in place
(a change stores a new dict), so readers may hold on to them.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Change:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: str  # resource store key: pods, jobs.batch, ...
    namespace: str
    name: str
    obj: dict[str, Any]  # the object after the change (for DELETED: its last state)
    old: dict[str, Any] | None = None


Listener = Callable[[Change], None]


@dataclass
class Store:
    history_limit: int = 200_000  # changes kept for watches and list snapshots (the watch cache window)
    rv: int = 1
    compacted: int = 1  # history at or below this version is gone
    objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)
    history: list[Change] = field(default_factory=list)
    history_rvs: list[int] = field(default_factory=list)
    listeners: list[Listener] = field(default_factory=list)

    # -- reads ----------------------------------------------------------------------------------------

    def get(self, key: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(key, {}).get((namespace, name))

    def items(self, key: str, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        for (ns, _), obj in self.objects.get(key, {}).items():
            if namespace is None or ns == namespace:
                yield obj

    def snapshot(self, key: str, namespace: str | None, rv: int) -> dict[tuple[str, str], dict[str, Any]]:
        """The objects of ``key`` as they were at version ``rv`` (which must not be compacted)."""
        current = {k: o for k, o in self.objects.get(key, {}).items() if namespace is None or k[0] == namespace}
        start = bisect.bisect_right(self.history_rvs, rv)
        for change in reversed(self.history[start:]):
            if change.key != key or (namespace is not None and change.namespace != namespace):
                continue
            k = (change.namespace, change.name)
            if change.type == "ADDED":
                current.pop(k, None)
            elif change.type == "MODIFIED":
                current[k] = change.old  # type: ignore[assignment]
            else:
                current[k] = change.obj
        return current

    def since(self, rv: int) -> list[Change]:
        """Changes after ``rv`` (the caller checked ``rv >= compacted``)."""
        return self.history[bisect.bisect_right(self.history_rvs, rv):]

    # -- writes ---------------------------------------------------------------------------------------

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def commit(self, type_: str, key: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> Change:
        """Store ``obj`` (whose metadata.resourceVersion the caller set from :meth:`next_rv`) and tell listeners."""
        meta = obj["metadata"]
        rv = int(meta["resourceVersion"])
        ns, name = meta.get("namespace") or "", meta["name"]
        bucket = self.objects.setdefault(key, {})
        if type_ == "DELETED":
            bucket.pop((ns, name), None)
        else:
            bucket[(ns, name)] = obj
        change = Change(rv, type_, key, ns, name, obj, old)
        self.history.append(change)
        self.history_rvs.append(rv)
        if len(self.history) > self.history_limit:
            self.compact(self.history_rvs[len(self.history) - self.history_limit // 2])
        for listener in list(self.listeners):
            listener(change)
        return change

    def compact(self, rv: int | None = None) -> int:
        """Forget the history up to ``rv`` (default: all of it), as etcd compaction does."""
        rv = self.rv if rv is None else rv
        cut = bisect.bisect_right(self.history_rvs, rv)
        del self.history[:cut]
        del self.history_rvs[:cut]
        self.compacted = max(self.compacted, rv)
        return self.compacted
