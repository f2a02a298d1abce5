"""The small controllers: garbage collector, namespace lifecycle, default ServiceAccounts, quota status, and a
cluster autoscaler.

- Garbage collector (https://kubernetes.io/docs/concepts/architecture/garbage-collection/): when an owner is gone
  (or never existed with that uid) its dependents are deleted; ``orphan`` removes the owner references first;
  ``foregroundDeletion`` deletes the dependents first (those with blockOwnerDeletion hold the owner).
- Namespaces (https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/): a new one gets the
  ``default`` ServiceAccount and the ``kube-root-ca.crt`` ConfigMap; a deleted one is emptied, then removed.
- ResourceQuota status: ``status.hard`` and ``status.used`` follow the namespace's usage.
- Autoscaler (https://github.com/kubernetes/autoscaler, FAQ): when pods are Unschedulable and a node of the
  template would take them, a node is added after a delay (up to a maximum), with a TriggeredScaleUp Event.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections import Counter
from typing import TYPE_CHECKING, Any

from kube_model import admission
from kube_model.api import FOREGROUND, ORPHAN, DeleteOptions
from kube_model.errors import ApiError
from kube_model.rbac import system_user
from kube_model.scheduler import Scheduler, node_object
from kube_model.store import Change

if TYPE_CHECKING:
    from kube_model.cluster import Cluster
    from kube_model.config import NodeSpec

GC_USER = system_user("system:serviceaccount:kube-system:generic-garbage-collector")


class GarbageCollector:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.dependents: dict[str, set[tuple[str, str, str]]] = {}  # owner uid -> {(key, ns, name)}
        self.uids: dict[str, tuple[str, str, str]] = {}  # uid -> (key, ns, name) of live objects
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def on_change(self, change: Change) -> None:
        meta = change.obj["metadata"]
        uid = meta.get("uid")
        ident = (change.key, change.namespace, change.name)
        old_refs = {r["uid"] for r in ((change.old or {}).get("metadata") or {}).get("ownerReferences") or []}
        new_refs = {r["uid"] for r in meta.get("ownerReferences") or []} if change.type != "DELETED" else set()
        for r in old_refs - new_refs:
            self.dependents.get(r, set()).discard(ident)
        for r in new_refs:
            self.dependents.setdefault(r, set()).add(ident)
        if change.type == "DELETED":
            self.uids.pop(uid, None)
            self.queue.put_nowait(("gone", uid))
            for r in old_refs | {x["uid"] for x in meta.get("ownerReferences") or []}:
                self.dependents.get(r, set()).discard(ident)
                self.queue.put_nowait(("owner-check", r))
            return
        self.uids[uid] = ident
        if new_refs - old_refs:
            self.queue.put_nowait(("check", ident))
        finalizers = meta.get("finalizers") or []
        if meta.get("deletionTimestamp") and (ORPHAN in finalizers or FOREGROUND in finalizers):
            self.queue.put_nowait(("owner", uid))

    async def run(self) -> None:
        while True:
            kind, arg = await self.queue.get()
            try:
                if kind == "gone":
                    self._owner_gone(arg)
                elif kind == "check":
                    self._check_owners(arg)
                elif kind in ("owner", "owner-check"):
                    self._owner_deleting(arg)
            except Exception:  # noqa: BLE001
                self.cluster.log_exception("garbage collector")

    def _exists(self, ref: dict[str, Any]) -> bool:
        return ref.get("uid", "") in self.uids

    def _check_owners(self, ident: tuple[str, str, str]) -> None:
        """A dependent whose owners are all absent (never existed with that uid) is deleted."""
        obj = self.cluster.store.get(*ident)
        if obj is None:
            return
        refs = obj["metadata"].get("ownerReferences") or []
        if refs and not any(self._exists(r) for r in refs):
            self._delete(ident, "Background")

    def _owner_gone(self, uid: str) -> None:
        for ident in list(self.dependents.pop(uid, set())):
            obj = self.cluster.store.get(*ident)
            if obj is None:
                continue
            refs = obj["metadata"].get("ownerReferences") or []
            live = [r for r in refs if r.get("uid") != uid and self._exists(r)]
            if live:
                self._drop_ref(ident, uid)
            else:
                self._delete(ident, "Background")

    def _owner_deleting(self, uid: str) -> None:
        ident = self.uids.get(uid)
        if ident is None:
            return
        owner = self.cluster.store.get(*ident)
        if owner is None or not owner["metadata"].get("deletionTimestamp"):
            return
        finalizers = owner["metadata"].get("finalizers") or []
        deps = [d for d in self.dependents.get(uid, set()) if self.cluster.store.get(*d) is not None]
        if ORPHAN in finalizers:
            for d in deps:
                self._drop_ref(d, uid)
            self._remove_finalizer(ident, ORPHAN)
        elif FOREGROUND in finalizers:
            blocking = []
            for d in deps:
                obj = self.cluster.store.get(*d)
                ref = next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") == uid), {})
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete(d, "Foreground")
                if ref.get("blockOwnerDeletion") and self.cluster.store.get(*d) is not None:
                    blocking.append(d)
            if not blocking:
                self._remove_finalizer(ident, FOREGROUND)

    def _delete(self, ident: tuple[str, str, str], propagation: str) -> None:
        rt = self.cluster.registry.get(ident[0])
        try:
            self.cluster.api.delete(rt, ident[1], ident[2], DeleteOptions(propagation=propagation), GC_USER)
        except ApiError:
            pass

    def _drop_ref(self, ident: tuple[str, str, str], uid: str) -> None:
        def edit(o: dict[str, Any]) -> None:
            refs = [r for r in o["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            if refs:
                o["metadata"]["ownerReferences"] = refs
            else:
                o["metadata"].pop("ownerReferences", None)
        self.cluster.api.mutate(*ident, edit)

    def _remove_finalizer(self, ident: tuple[str, str, str], finalizer: str) -> None:
        def edit(o: dict[str, Any]) -> None:
            o["metadata"]["finalizers"] = [f for f in o["metadata"].get("finalizers") or [] if f != finalizer]
            if not o["metadata"]["finalizers"]:
                del o["metadata"]["finalizers"]
        self.cluster.api.mutate(*ident, edit)


class NamespaceController:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def on_change(self, change: Change) -> None:
        if change.key == "namespaces" and change.type != "DELETED":
            self.queue.put_nowait(("ns", change.name))
        elif change.type == "DELETED" and change.namespace:
            ns = self.cluster.store.get("namespaces", "", change.namespace)
            if ns is not None and ns["metadata"].get("deletionTimestamp"):
                self.queue.put_nowait(("ns", change.namespace))

    async def run(self) -> None:
        while True:
            _, name = await self.queue.get()
            try:
                self.sync(name)
            except Exception:  # noqa: BLE001
                self.cluster.log_exception("namespace controller")

    def sync(self, name: str) -> None:
        ns = self.cluster.store.get("namespaces", "", name)
        if ns is None:
            return
        api, store = self.cluster.api, self.cluster.store
        user = system_user("system:serviceaccount:kube-system:namespace-controller")
        if not ns["metadata"].get("deletionTimestamp"):
            if store.get("serviceaccounts", name, "default") is None:
                api.create(self.cluster.registry.core("serviceaccounts"), name,
                           {"metadata": {"name": "default"}}, user)
            if store.get("configmaps", name, "kube-root-ca.crt") is None:
                api.create(self.cluster.registry.core("configmaps"), name,
                           {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": self.cluster.ca_pem}}, user)
            return
        left = 0
        for rt in self.cluster.registry.types:
            if not rt.namespaced or rt.storage:
                continue
            for obj in list(store.items(rt.key, name)):
                left += 1
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    api.delete(rt, name, obj["metadata"]["name"], DeleteOptions(propagation="Background"), user)
                except ApiError:
                    pass
        if left == 0:
            def edit(o: dict[str, Any]) -> None:
                o.setdefault("spec", {})["finalizers"] = []
                o["metadata"].pop("finalizers", None)
            api.mutate("namespaces", "", name, edit)
            api.remove("namespaces", "", name)


class QuotaController:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.dirty: set[str] = set()
        self.wake = asyncio.Event()

    def on_change(self, change: Change) -> None:
        if change.namespace and change.key in ("pods", "resourcequotas", "jobs.batch", "configmaps", "secrets"):
            if change.key == "resourcequotas" and change.type == "MODIFIED" and change.old is not None and (
                    change.old.get("spec") == change.obj.get("spec")):
                return
            self.dirty.add(change.namespace)
            self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            await asyncio.sleep(self.cluster.timing.quota_resync)
            dirty, self.dirty = self.dirty, set()
            for ns in dirty:
                for q in list(self.cluster.store.items("resourcequotas", ns)):
                    status = admission.quota_status(self.cluster.store, q)

                    def edit(o: dict[str, Any], status: dict[str, Any] = status) -> None:
                        o["status"] = status
                    self.cluster.api.mutate("resourcequotas", ns, q["metadata"]["name"], edit)


@dataclasses.dataclass
class NodeGroup:
    template: NodeSpec
    max_nodes: int
    added: int = 0


class Autoscaler:
    """Adds a node of a template when Unschedulable pods would fit on one."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.groups: list[NodeGroup] = []
        self.pending: asyncio.TimerHandle | None = None

    def consider(self, unschedulable: list[dict[str, Any]]) -> None:
        if not self.groups or not unschedulable or self.pending is not None:
            return
        for group in self.groups:
            if group.added >= group.max_nodes:
                continue
            probe = node_object(group.template)
            scheduler: Scheduler = self.cluster.scheduler
            empty = {probe["metadata"]["name"]: Counter()}
            fits = [p for p in unschedulable if scheduler.fit(p, [probe], empty)[0]]
            if not fits:
                continue
            n = group.added + 1
            for p in fits:
                self.cluster.recorder.legacy(p, "Normal", "TriggeredScaleUp",
                                             f"pod triggered scale-up: [{{{group.template.name} {n - 1}->{n} "
                                             f"(max: {group.max_nodes})}}]", "cluster-autoscaler")
            self.pending = asyncio.get_running_loop().call_later(self.cluster.timing.autoscale_delay, self._add, group)
            return

    def _add(self, group: NodeGroup) -> None:
        self.pending = None
        group.added += 1
        spec = copy.deepcopy(group.template)
        spec.name = f"{group.template.name}-{group.added}"
        self.cluster._add_node(spec)
