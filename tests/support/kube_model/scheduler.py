"""The scheduler: binds pending pods to nodes with room for them, or marks them Unschedulable.

https://kubernetes.io/docs/concepts/scheduling-eviction/kube-scheduler/ -- filters in the default order:
unschedulable nodes, taints and tolerations
(https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/), node selector and required node
affinity, resource requests against allocatable
(https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/), pod count. A pod that fits
nowhere keeps ``PodScheduled=False`` with reason ``Unschedulable`` and the scheduler's message (``0/3 nodes are
available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector. preemption: ...``) and a
FailedScheduling Event; it is tried again whenever capacity frees (a pod ends or goes, a node is added or changed)
and at least every ``Timing.scheduler_retry`` seconds.
"""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from typing import TYPE_CHECKING, Any

from kube_model.admission import pod_usage
from kube_model.meta import Requirement, amount, labels_match, stamp
from kube_model.store import Change

if TYPE_CHECKING:
    from kube_model.cluster import Cluster

SCHEDULER = "default-scheduler"


def _expr_matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!", "Gt": "gt", "Lt": "lt"}.get(
        expr.get("operator", ""), "")
    return Requirement(expr["key"], op, tuple(expr.get("values") or ())).matches(labels)


def node_affinity_matches(spec: dict[str, Any], labels: dict[str, str]) -> bool:
    """nodeSelector and requiredDuringSchedulingIgnoredDuringExecution node affinity."""
    if not labels_match([Requirement(k, "=", (v,)) for k, v in (spec.get("nodeSelector") or {}).items()], labels):
        return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    return any(all(_expr_matches(e, labels) for e in t.get("matchExpressions") or []) for t in terms)


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t["key"] == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def requests(pod: dict[str, Any]) -> dict[str, int]:
    usage = pod_usage(pod)
    out = {"cpu": usage["requests.cpu"], "memory": usage["requests.memory"], "pods": 1}
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        for name, value in {**(res.get("limits") or {}), **(res.get("requests") or {})}.items():
            if name not in ("cpu", "memory", "ephemeral-storage"):
                out[name] = out.get(name, 0) + amount(name, value)
    return out


def shape(pod: dict[str, Any]) -> Any:
    """Pods of one shape fit the same nodes (scheduling one after another cannot change that within a pass)."""
    spec = pod.get("spec") or {}
    return (tuple(sorted(requests(pod).items())), repr(spec.get("nodeSelector")), repr(spec.get("affinity")),
            repr(spec.get("tolerations")))


class Scheduler:
    """Event-driven: a pass over pending pods after any change that may make room."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.wake = asyncio.Event()
        self.last_message: dict[str, str] = {}

    def on_change(self, change: Change) -> None:
        if change.key == "nodes":
            self.wake.set()
        elif change.key == "pods":
            spec = change.obj.get("spec") or {}
            if not spec.get("nodeName") or change.type == "DELETED" or (change.obj.get("status") or {}).get(
                    "phase") in ("Succeeded", "Failed"):
                self.wake.set()
            if change.type == "DELETED":
                self.last_message.pop(change.obj["metadata"].get("uid", ""), None)

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), self.cluster.timing.scheduler_retry)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            await asyncio.sleep(0.005)  # let a burst of creates land: one pass for all of them
            try:
                self.schedule_pending()
            except Exception:  # noqa: BLE001 - keep scheduling; the model's log shows it
                self.cluster.log_exception("scheduler")

    def nodes(self) -> list[dict[str, Any]]:
        return sorted(self.cluster.store.items("nodes"), key=lambda n: n["metadata"]["name"])

    def schedule_pending(self) -> None:
        store = self.cluster.store
        pending = [p for p in store.items("pods") if not (p.get("spec") or {}).get("nodeName")
                   and not p["metadata"].get("deletionTimestamp")
                   and (p.get("spec") or {}).get("schedulerName", SCHEDULER) == SCHEDULER
                   and (p.get("status") or {}).get("phase", "Pending") == "Pending"]
        if not pending:
            return
        pending.sort(key=lambda p: (-int((p.get("spec") or {}).get("priority") or 0),
                                    p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
        nodes = self.nodes()
        used: dict[str, Counter[str]] = {n["metadata"]["name"]: Counter() for n in nodes}
        for p in store.items("pods"):
            node = (p.get("spec") or {}).get("nodeName")
            if node in used and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                used[node].update(requests(p))
        failed_shapes: dict[Any, str] = {}
        for pod in pending:
            key = shape(pod)
            message = failed_shapes.get(key)
            if message is None:
                node, message = self.fit(pod, nodes, used)
                if node is not None:
                    used[node].update(requests(pod))
                    self.bind(pod, node)
                    continue
                failed_shapes[key] = message
            self.unschedulable(pod, message)
        self.cluster.after_scheduling([p for p in pending if not (p.get("spec") or {}).get("nodeName")])

    def fit(self, pod: dict[str, Any], nodes: list[dict[str, Any]],
            used: dict[str, Counter[str]]) -> tuple[str | None, str]:
        spec = pod.get("spec") or {}
        want = requests(pod)
        reasons: Counter[str] = Counter()
        resource_short = 0
        best: tuple[float, str] | None = None
        for n in nodes:
            name = n["metadata"]["name"]
            labels = n["metadata"].get("labels") or {}
            if (n.get("spec") or {}).get("unschedulable"):
                reasons["node(s) were unschedulable"] += 1
                continue
            bad = [t for t in (n.get("spec") or {}).get("taints") or []
                   if t.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(spec.get("tolerations") or [],
                                                                                      t)]
            if bad:
                t = bad[0]
                reasons[f"node(s) had untolerated taint {{{t.get('key')}: {t.get('value') or ''}}}"] += 1
                continue
            if not node_affinity_matches(spec, labels):
                reasons["node(s) didn't match Pod's node affinity/selector"] += 1
                continue
            alloc = (n.get("status") or {}).get("allocatable") or {}
            short = []
            for resource, amount_wanted in want.items():
                capacity = amount(resource, alloc.get(resource, 0))
                if used[name][resource] + amount_wanted > capacity:
                    short.append("Too many pods" if resource == "pods" else f"Insufficient {resource}")
            if short:
                for s in short:
                    reasons[s] += 1
                resource_short += 1
                continue
            cpu_cap = amount("cpu", alloc.get("cpu", 0)) or 1
            score = used[name]["cpu"] / cpu_cap
            if best is None or score < best[0]:
                best = (score, name)
        if best is not None:
            return best[1], ""
        total = len(nodes)
        detail = ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))
        others = total - resource_short
        pre = []
        if resource_short:
            pre.append(f"{resource_short} No preemption victims found for incoming pod")
        if others:
            pre.append(f"{others} Preemption is not helpful for scheduling")
        head = f"0/{total} nodes are available"
        message = f"{head}: {detail}." if detail else f"{head}."
        return None, f"{message} preemption: {head}: {', '.join(pre)}." if pre else message

    def bind(self, pod: dict[str, Any], node: str) -> None:
        meta = pod["metadata"]
        bound = self.cluster.api.bind(meta["namespace"], meta["name"], node)
        self.last_message.pop(meta["uid"], None)
        self.cluster.recorder.new(bound, "Normal", "Scheduled",
                                  f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}", SCHEDULER,
                                  f"{SCHEDULER}-127.0.0.1", "Binding")

    def unschedulable(self, pod: dict[str, Any], message: str) -> None:
        """A failed attempt: the PodScheduled condition changes only when its message does; every attempt is
        recorded (handleSchedulingFailure), repeats as the Event's series."""
        meta = pod["metadata"]
        stored: dict[str, Any] | None = pod
        if self.last_message.get(meta["uid"]) != message:
            self.last_message[meta["uid"]] = message

            def edit(p: dict[str, Any]) -> None:
                status = p.setdefault("status", {})
                conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
                conds.append({"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                              "lastTransitionTime": stamp(), "reason": "Unschedulable", "message": message})
                status["conditions"] = conds
            stored = self.cluster.api.mutate("pods", meta["namespace"], meta["name"], edit)
        if stored is not None:
            self.cluster.recorder.new(stored, "Warning", "FailedScheduling", message, SCHEDULER,
                                      f"{SCHEDULER}-127.0.0.1", "Scheduling")


def node_object(spec: Any) -> dict[str, Any]:
    """A Node as a kubelet registers it."""
    labels = {"kubernetes.io/hostname": spec.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": spec.arch,
              "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": spec.arch, **spec.labels}
    alloc = spec.allocatable()
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": spec.name, "labels": labels},
            "spec": {"taints": copy.deepcopy(spec.taints), **({"unschedulable": True} if spec.unschedulable else {})},
            "status": {"capacity": dict(alloc), "allocatable": dict(alloc),
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "message": "kubelet is posting ready status",
                                       "lastHeartbeatTime": stamp(), "lastTransitionTime": stamp()}],
                       "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                     {"type": "Hostname", "address": spec.name}],
                       "nodeInfo": {"kubeletVersion": "v1.33.0", "kubeProxyVersion": "v1.33.0",
                                    "operatingSystem": "linux", "architecture": spec.arch,
                                    "containerRuntimeVersion": "docker://20.10.24" if spec.runtime == "docker"
                                    else "sim://1.0", "osImage": "kube-model", "kernelVersion": "",
                                    "machineID": "", "systemUUID": "", "bootID": ""}}}
