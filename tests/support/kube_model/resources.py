"""The resource types the model serves, and the discovery documents that list them.

Discovery shapes: https://kubernetes.io/docs/concepts/overview/kubernetes-api/#discovery-api
(``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>/<version>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kube_model.errors import Kind

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
BASE_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()  # "status" means a status subresource (status ignored on the main one)
    fields: frozenset[str] = BASE_FIELDS
    short_names: tuple[str, ...] = ()
    storage: str = ""  # resources that share storage (events.k8s.io events are core events)
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Where objects live in the store (shared by two views of the same resource)."""
        return self.storage or (f"{self.plural}.{self.group}" if self.group else self.plural)

    @property
    def err(self) -> Kind:
        return Kind(self.plural, self.group, self.kind)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def discovery(self) -> list[dict[str, Any]]:
        out = [{"name": self.plural, "singularName": self.kind.lower(), "namespaced": self.namespaced,
                "kind": self.kind, "verbs": list(self.verbs), **({"shortNames": list(self.short_names)}
                                                                 if self.short_names else {})}]
        for sub in self.subresources:
            kind = {"log": "Pod", "eviction": "Eviction", "binding": "Binding", "token": "TokenRequest"}.get(
                sub, self.kind)
            verbs = {"status": ["get", "patch", "update"], "log": ["get"], "eviction": ["create"],
                     "binding": ["create"], "token": ["create"]}[sub]
            out.append({"name": f"{self.plural}/{sub}", "singularName": "", "namespaced": self.namespaced,
                        "kind": kind, "verbs": verbs})
        return out


POD_FIELDS = BASE_FIELDS | {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                            "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"}
EVENT_FIELDS = BASE_FIELDS | {f"involvedObject.{f}" for f in ("kind", "namespace", "name", "uid", "apiVersion",
                                                              "resourceVersion", "fieldPath")} | {
    "reason", "reportingComponent", "source", "type"}
NEW_EVENT_FIELDS = BASE_FIELDS | {f"regarding.{f}" for f in ("kind", "namespace", "name", "uid", "apiVersion",
                                                             "resourceVersion", "fieldPath")} | {
    "reason", "reportingController", "type"}

TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, subresources=("status",),
                 fields=BASE_FIELDS | {"status.phase"}, short_names=("ns",)),
    ResourceType("", "v1", "nodes", "Node", namespaced=False, subresources=("status",),
                 fields=BASE_FIELDS | {"spec.unschedulable"}, short_names=("no",)),
    ResourceType("", "v1", "pods", "Pod", subresources=("status", "log", "eviction", "binding"), fields=POD_FIELDS,
                 short_names=("po",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    ResourceType("", "v1", "secrets", "Secret", fields=BASE_FIELDS | {"type"}),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", subresources=("token",), short_names=("sa",)),
    ResourceType("", "v1", "events", "Event", fields=EVENT_FIELDS, short_names=("ev",)),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota", subresources=("status",), short_names=("quota",)),
    ResourceType("", "v1", "limitranges", "LimitRange", short_names=("limits",)),
    ResourceType("", "v1", "services", "Service", subresources=("status",), short_names=("svc",)),
    ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", subresources=("status",),
                 short_names=("pvc",)),
    ResourceType("batch", "v1", "jobs", "Job", subresources=("status",), fields=BASE_FIELDS | {"status.successful"}),
    ResourceType("events.k8s.io", "v1", "events", "Event", fields=NEW_EVENT_FIELDS, short_names=("ev",),
                 storage="events"),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    ResourceType("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview",
                 namespaced=False, verbs=("create",)),
    ResourceType("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", namespaced=False,
                 verbs=("create",)),
    ResourceType("apps", "v1", "deployments", "Deployment", subresources=("status",), short_names=("deploy",)),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", subresources=("status",), short_names=("sts",)),
    ResourceType("networking.k8s.io", "v1", "ingresses", "Ingress", subresources=("status",), short_names=("ing",)),
)

REVIEWS = frozenset({"selfsubjectaccessreviews.authorization.k8s.io", "subjectaccessreviews.authorization.k8s.io"})


@dataclass
class Registry:
    """Look-ups by (group, version, plural) and by kind."""

    types: tuple[ResourceType, ...] = TYPES
    by_path: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)
    by_kind: dict[tuple[str, str], ResourceType] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for t in self.types:
            self.by_path[(t.group, t.version, t.plural)] = t
            self.by_kind.setdefault((t.api_version, t.kind), t)

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.by_path.get((group, version, plural))

    def of(self, api_version: str, kind: str) -> ResourceType | None:
        return self.by_kind.get((api_version, kind))

    def core(self, plural: str) -> ResourceType:
        return self.by_path[("", "v1", plural)]

    def get(self, key: str) -> ResourceType:
        """By store key (``pods``, ``jobs.batch``)."""
        for t in self.types:
            if t.key == key and not t.storage:
                return t
        raise KeyError(key)

    # -- discovery documents ------------------------------------------------------------------------

    def api_versions(self) -> dict[str, Any]:
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}

    def groups(self) -> list[str]:
        seen: list[str] = []
        for t in self.types:
            if t.group and t.group not in seen:
                seen.append(t.group)
        return seen

    def group_doc(self, group: str) -> dict[str, Any]:
        gv = {"groupVersion": f"{group}/v1", "version": "v1"}
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv], "preferredVersion": gv}

    def group_list(self) -> dict[str, Any]:
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [{k: v for k, v in self.group_doc(g).items() if k not in ("kind", "apiVersion")}
                           for g in self.groups()]}

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        found = [t for t in self.types if t.group == group and t.version == version]
        if not found:
            return None
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": found[0].api_version,
                "resources": [r for t in found for r in t.discovery()]}
