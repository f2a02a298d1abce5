"""Every resource quantity an object holds, in the canonical form the API server stores and answers with
(:mod:`kube_model.quantity`): a real one decodes each into a resource.Quantity and writes it back with String(),
so a pod created with ``cpu: 1000m`` reads back ``cpu: "1"``, ``memory: 1024Mi`` as ``1Gi``.

The fields (k8s.io/api/core/v1 and apps/batch types of ``resource.Quantity``): a pod spec's containers' (init,
ephemeral) ``resources.requests`` / ``limits``, its ``overhead``, pod-level ``resources``, an ``emptyDir``'s
``sizeLimit`` and an ephemeral volume's claim template; a pod status's ``allocatedResources`` and ``resources``;
the pod templates of Jobs, Deployments and StatefulSets (and a StatefulSet's claim templates); a LimitRange's
bounds; a ResourceQuota's ``hard`` and ``used``; a Node's ``capacity`` and ``allocatable``; a claim's requests,
limits and capacity. A malformed value is left for validation to refuse; a JSON number is written as a string.
"""

from __future__ import annotations

from typing import Any

from kube_model.quantity import canonical

_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
_STATUS_LISTS = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")
_LIMIT_PARTS = ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio")


def _one(holder: Any, key: str) -> None:
    """``holder[key]``, a quantity, made canonical in place (written only when it changes)."""
    value = holder.get(key) if isinstance(holder, dict) else None
    if value is None or isinstance(value, (bool, dict, list)):
        return
    try:
        text = canonical(value)
    except ValueError:
        return
    if text != value:
        holder[key] = text


def _map(holder: Any, key: str) -> None:
    """``holder[key]``, a map of quantities, made canonical in place."""
    values = holder.get(key) if isinstance(holder, dict) else None
    if isinstance(values, dict):
        for name in values:
            _one(values, name)


def _requirements(res: Any) -> None:
    """ResourceRequirements (and VolumeResourceRequirements): requests and limits."""
    _map(res, "requests")
    _map(res, "limits")


def _dict(obj: Any, *path: str) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj if isinstance(obj, dict) else None


def _list(obj: Any, key: str) -> list[Any]:
    items = obj.get(key) if isinstance(obj, dict) else None
    return items if isinstance(items, list) else []


def pod_spec(spec: Any) -> None:
    for kind in _CONTAINER_LISTS:
        for c in _list(spec, kind):
            _requirements(_dict(c, "resources"))
    _map(spec, "overhead")
    _requirements(_dict(spec, "resources"))
    for v in _list(spec, "volumes"):
        _one(_dict(v, "emptyDir"), "sizeLimit")
        _requirements(_dict(v, "ephemeral", "volumeClaimTemplate", "spec", "resources"))


def _pod_status(status: Any) -> None:
    for kind in _STATUS_LISTS:
        for s in _list(status, kind):
            _map(s, "allocatedResources")
            _requirements(_dict(s, "resources"))


def _template(obj: Any, *path: str) -> None:
    pod_spec(_dict(obj, *path, "template", "spec"))


def apply(key: str, obj: dict[str, Any]) -> None:
    """Make every quantity of ``obj`` (a stored object of resource ``key``) canonical, in place."""
    if key == "pods":
        pod_spec(_dict(obj, "spec"))
        _pod_status(_dict(obj, "status"))
    elif key in ("jobs.batch", "deployments.apps"):
        _template(obj, "spec")
    elif key == "statefulsets.apps":
        _template(obj, "spec")
        for claim in _list(_dict(obj, "spec"), "volumeClaimTemplates"):
            _requirements(_dict(claim, "spec", "resources"))
    elif key == "limitranges":
        for item in _list(_dict(obj, "spec"), "limits"):
            for part in _LIMIT_PARTS:
                _map(item, part)
    elif key == "resourcequotas":
        _map(_dict(obj, "spec"), "hard")
        _map(_dict(obj, "status"), "hard")
        _map(_dict(obj, "status"), "used")
    elif key == "nodes":
        _map(_dict(obj, "status"), "capacity")
        _map(_dict(obj, "status"), "allocatable")
    elif key == "persistentvolumeclaims":
        _requirements(_dict(obj, "spec", "resources"))
        _map(_dict(obj, "status"), "capacity")
        _map(_dict(obj, "status"), "allocatedResources")
