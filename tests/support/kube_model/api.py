"""The API server's object handling below HTTP: create, get, list, update, patch, delete, with metadata,
defaulting, validation, admission, optimistic concurrency, status subresources, graceful deletion and finalizers.

Controllers inside the model call these methods too (as system users, so RBAC does not apply to them, but
admission does: a Job's pod rejected by Pod Security fails in the Job controller, as on a real cluster).

References: https://kubernetes.io/docs/reference/using-api/api-concepts/ (resourceVersion, generateName,
pagination, dry run), https://kubernetes.io/docs/concepts/overview/working-with-objects/finalizers/,
https://kubernetes.io/docs/concepts/architecture/garbage-collection/ (propagation policies; Jobs default to
orphaning their pods), https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination
(graceful deletion of bound pods).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from kube_model import admission, canonical, defaults, limitranges, validation
from kube_model.errors import (
    ApiError,
    Kind,
    Warnings,
    already_exists,
    bad_request,
    conflict,
    gone,
    invalid,
    not_found,
    stale,
)
from kube_model.events import to_new, to_old
from kube_model.meta import (
    clone,
    fields_match,
    labels_match,
    now,
    parse_field_selector,
    parse_label_selector,
    stamp,
    suffix,
)
from kube_model.patch import APPLY, apply_patch
from kube_model.rbac import User
from kube_model.resources import Registry, ResourceType
from kube_model.store import Change, Store

JOB_ORPHAN_WARNING = ("child pods are preserved by default when jobs are deleted; set propagationPolicy=Background "
                      "to remove them or set propagationPolicy=Orphan to suppress this warning")
EXPIRED_CONTINUE = ("The provided continue parameter is too old to display a consistent list result. You can start "
                    "a new list without the continue parameter, or use the continue token in this response to "
                    "retrieve the remainder of the results. Continuing with the provided token results in an "
                    "inconsistent list - objects that were created, modified, or deleted between the time the first "
                    "chunk was returned and now may show up in the list.")
ORPHAN, FOREGROUND = "orphan", "foregroundDeletion"
GENERATED_BASE = 58  # apiserver's SimpleNameGenerator: a generateName longer than 63 - 5 is cut to this
NAMESPACE_KIND = Kind("namespaces", "", "Namespace")


@dataclass
class ListOptions:
    label_selector: str | None = None
    field_selector: str | None = None
    limit: int | None = None
    continue_: str | None = None
    resource_version: str | None = None
    resource_version_match: str | None = None


@dataclass
class DeleteOptions:
    propagation: str | None = None
    grace: int | None = None
    uid: str | None = None
    resource_version: str | None = None
    dry_run: bool = False
    orphan_dependents: bool | None = None  # the deprecated field: False is the one way to a 202

    @classmethod
    def parse(cls, body: dict[str, Any] | None, query: dict[str, str]) -> DeleteOptions:
        body = body or {}
        pre = body.get("preconditions") or {}
        prop = body.get("propagationPolicy") or query.get("propagationPolicy")
        if prop is None and body.get("orphanDependents") is not None:
            prop = "Orphan" if body["orphanDependents"] else "Background"
        grace = body.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        dry = body.get("dryRun") or query.get("dryRun")
        return cls(prop, None if grace is None else int(grace), pre.get("uid"), pre.get("resourceVersion"),
                   bool(dry), body.get("orphanDependents"))


@dataclass
class Result:
    """What a request produced: the object (or Status), the HTTP code, warnings."""

    body: dict[str, Any]
    code: int = 200
    warnings: list[str] = field(default_factory=list)


def _strip_list_item(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ma = {k: v for k, v in (a.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}
    mb = {k: v for k, v in (b.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}
    return ma == mb and {k: v for k, v in a.items() if k != "metadata"} == {k: v for k, v in b.items()
                                                                           if k != "metadata"}


def field_value(obj: dict[str, Any], path: str) -> str:
    """A field selector's value in a stored object (events.k8s.io names map to the stored core/v1 ones)."""
    if path.startswith("regarding."):
        path = "involvedObject." + path.split(".", 1)[1]
    elif path == "reportingController":
        path = "reportingComponent"
    if path == "spec.hostNetwork":
        return "true" if (obj.get("spec") or {}).get("hostNetwork") else "false"
    if path == "spec.unschedulable":
        return "true" if (obj.get("spec") or {}).get("unschedulable") else "false"
    if path == "source":
        return ((obj.get("source") or {}).get("component")) or ""
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


class Api:
    """Object semantics over a :class:`Store`. All methods run on the model's event loop thread."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self.default_job_propagation = "Orphan"
        # mutating admission webhooks: fn(pod, namespace object) may change a new pod (e.g. inject a sidecar)
        self.pod_mutations: list[Any] = []

    # -- helpers ----------------------------------------------------------------------------------------

    def _stored_type(self, rt: ResourceType) -> ResourceType:
        return self.registry.get(rt.key) if rt.storage else rt

    def view(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """An object as clients of ``rt`` see it (events.k8s.io shows stored core/v1 Events converted)."""
        return to_new(obj) if rt.group == "events.k8s.io" else obj

    def _existing(self, rt: ResourceType, ns: str, name: str) -> dict[str, Any]:
        obj = self.store.get(rt.key, ns, name)
        if obj is None:
            raise not_found(rt.err, name)
        return obj

    def _check_namespace(self, rt: ResourceType, ns: str) -> None:
        if not rt.namespaced:
            return
        nso = self.store.get("namespaces", "", ns)
        if nso is None:
            raise not_found(NAMESPACE_KIND, ns)
        if (nso.get("status") or {}).get("phase") == "Terminating":
            raise ApiError(403, "Forbidden", f"{rt.err.qualified_resource} \"\" is forbidden: unable to create new "
                                             f"content in namespace {ns} because it is being terminated",
                           details={"group": rt.group, "kind": rt.plural, "causes": [
                               {"reason": "NamespaceTerminating", "message": f"namespace {ns} is being terminated",
                                "field": "metadata.namespace"}]})

    def _commit(self, type_: str, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> Change:
        obj["metadata"]["resourceVersion"] = str(self.store.next_rv())
        return self.store.commit(type_, rt.key, obj, old)

    # -- create -----------------------------------------------------------------------------------------

    def create(self, rt: ResourceType, ns: str, body: Any, user: User, *, dry_run: bool = False,
               warnings: Warnings | None = None) -> Result:
        warnings = warnings or Warnings()
        body = validation.require_valid_json(body)
        obj = clone(body)
        if rt.group == "events.k8s.io":
            obj = to_old(obj)
        srt = self._stored_type(rt)
        canonical.apply(srt.key, obj)  # decoded: its quantities as the server writes them back
        given = body.get("apiVersion")
        if given and given != rt.api_version:
            raise bad_request(f"the API version in the data ({given}) does not match the expected API version "
                              f"({rt.api_version})")
        obj["apiVersion"], obj["kind"] = srt.api_version, srt.kind
        meta = obj.setdefault("metadata", {}) or {}
        obj["metadata"] = meta
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  "request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        for k in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation", "selfLink", "managedFields"):
            meta.pop(k, None)
        if rt.has_status and rt.key != "nodes":
            obj["status"] = {}
        if srt.key == "namespaces":
            obj.pop("status", None)
        if not meta.get("name") and not meta.get("generateName"):
            validation.validate(srt, obj)  # "name or generateName is required"
        self._check_namespace(rt, ns)
        name_for_errors = meta.get("name") or meta.get("generateName") or ""
        if srt.key == "pods":  # mutating admission, before the name: LimitRanger, ServiceAccount, webhooks
            limitranges.admit(self.store, obj)
            admission.service_account(self.store, obj, srt.err, name_for_errors)
            for mutate in self.pod_mutations:
                mutate(obj, self.store.get("namespaces", "", ns))
        if not meta.get("name"):
            for _ in range(10):
                meta["name"] = meta["generateName"][:GENERATED_BASE] + suffix()
                if self.store.get(srt.key, ns if rt.namespaced else "", meta["name"]) is None:
                    break
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = stamp()
        if "spec" in obj or srt.key in ("jobs.batch", "pods"):
            meta["generation"] = 1
        defaults.apply(srt.key, obj)
        if srt.key == "jobs.batch":
            defaults.job_selector(obj)
        validation.validate(srt, obj)
        self._validate_limit_range(srt, obj)
        for text in validation.warnings(srt.key, obj):
            warnings.add(text)
        namespace_obj = self.store.get("namespaces", "", ns) if rt.namespaced else None
        if srt.key == "pods":
            limitranges.check(self.store, obj, srt.err, meta["name"])
        admission.pod_security(srt.key, obj, namespace_obj, srt.err, meta["name"], warnings)
        if rt.namespaced:
            admission.quota(self.store, srt.key, obj, srt.err, meta["name"])
        there = self.store.get(srt.key, ns if rt.namespaced else "", meta["name"])
        if there is not None:
            raise already_exists(rt.err, meta["name"], bool(there["metadata"].get("deletionTimestamp")))
        if dry_run:
            meta["resourceVersion"] = ""
            return Result(self.view(rt, obj), 201, warnings.items)
        self._commit("ADDED", srt, obj, None)
        return Result(self.view(rt, obj), 201, warnings.items)

    @staticmethod
    def _validate_limit_range(rt: ResourceType, obj: dict[str, Any]) -> None:
        """A LimitRange's defaults (SetDefaults_LimitRangeItem), then 422 when its bounds disagree."""
        if rt.key != "limitranges":
            return
        limitranges.default(obj)
        causes = limitranges.causes(obj)
        if causes:
            raise invalid(rt.err, obj["metadata"].get("name") or "", causes)

    # -- reads ------------------------------------------------------------------------------------------

    def get(self, rt: ResourceType, ns: str, name: str) -> Result:
        return Result(self.view(rt, self._existing(rt, ns, name)))

    def list(self, rt: ResourceType, ns: str | None, opts: ListOptions) -> Result:
        if opts.limit is not None and opts.limit <= 0:  # as etcd3's GetList: only a positive limit pages
            opts = dataclasses.replace(opts, limit=None)
        labels = parse_label_selector(opts.label_selector)
        fields = parse_field_selector(opts.field_selector, set(rt.fields))
        start = ""
        if opts.continue_:
            try:
                token = json.loads(base64.urlsafe_b64decode(opts.continue_ + "=" * (-len(opts.continue_) % 4)))
                rv, start = int(token["rv"]), token["start"]
            except (ValueError, KeyError, TypeError) as e:
                raise bad_request(f"invalid continue token: continue key is not valid: {e}") from e
            if rv < self.store.compacted:
                raise gone(EXPIRED_CONTINUE)
            items = self.store.snapshot(rt.key, ns, rv)
        else:
            rv, items = self._list_version(rt, ns, opts)
        keys = sorted(items)
        out: list[dict[str, Any]] = []
        more = None
        remaining = 0
        for i, k in enumerate(keys):
            if start and f"{k[0]}/{k[1]}" <= start.rstrip("\x00"):
                continue
            obj = items[k]
            if not labels_match(labels, (obj.get("metadata") or {}).get("labels")):
                continue
            if fields and not fields_match(fields, obj, field_value):
                continue
            if opts.limit and len(out) >= opts.limit:
                more = out[-1]["metadata"]
                remaining = sum(1 for k2 in keys[i:]
                                if labels_match(labels, (items[k2].get("metadata") or {}).get("labels"))
                                and (not fields or fields_match(fields, items[k2], field_value)))
                break
            out.append(_strip_list_item(self.view(rt, obj)))
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if more is not None:
            start_key = f"{more.get('namespace') or ''}/{more['name']}\x00"
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"v": "meta.k8s.io/v1", "rv": rv, "start": start_key}).encode()).decode().rstrip("=")
            if not labels and not fields:
                meta["remainingItemCount"] = remaining
        return Result({"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": out})

    def _list_version(self, rt: ResourceType, ns: str | None,
                      opts: ListOptions) -> tuple[int, dict[tuple[str, str], dict[str, Any]]]:
        wanted = opts.resource_version
        match = opts.resource_version_match
        exact = match == "Exact" or (match is None and opts.limit and wanted not in (None, "", "0"))
        if wanted in (None, "", "0") or not exact:
            if wanted not in (None, "", "0") and int(wanted) > self.store.rv:
                raise ApiError(504, "Timeout", f"Too large resource version: {wanted}, current: {self.store.rv}",
                               details={"causes": [{"reason": "ResourceVersionTooLarge",
                                                    "message": "Too large resource version"}],
                                        "retryAfterSeconds": 1})
            current = {k: o for k, o in self.store.objects.get(rt.key, {}).items() if ns is None or k[0] == ns}
            return self.store.rv, current
        rv = int(wanted)  # type: ignore[arg-type]
        if rv < self.store.compacted:
            raise gone(f"too old resource version: {rv} ({self.store.compacted})")
        return rv, self.store.snapshot(rt.key, ns, rv)

    # -- update and patch -------------------------------------------------------------------------------

    def update(self, rt: ResourceType, ns: str, name: str, body: Any, user: User, *, subresource: str = "",
               dry_run: bool = False, warnings: Warnings | None = None) -> Result:
        body = validation.require_valid_json(body)
        old = self._existing(rt, ns, name)
        new = clone(body)
        if rt.group == "events.k8s.io":
            new = to_old(new)
        meta = new.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        given_rv = meta.get("resourceVersion")
        if given_rv and given_rv != old["metadata"]["resourceVersion"]:
            raise stale(rt.err, name)
        return self._write(rt, old, new, subresource, dry_run, warnings or Warnings())

    def patch(self, rt: ResourceType, ns: str, name: str, content_type: str, body: Any, user: User, *,
              subresource: str = "", dry_run: bool = False, warnings: Warnings | None = None) -> Result:
        old = self.store.get(rt.key, ns, name)
        if old is None:
            if content_type.startswith(APPLY) and not subresource:
                return self.create(rt, ns, {**body, "metadata": {**(body.get("metadata") or {}), "name": name}},
                                   user, dry_run=dry_run, warnings=warnings)
            raise not_found(rt.err, name)
        current = self.view(rt, old)
        patched = apply_patch(content_type, current, body)
        if rt.group == "events.k8s.io":
            patched = to_old(patched)
        given_rv = (patched.get("metadata") or {}).get("resourceVersion")
        if given_rv and given_rv != old["metadata"]["resourceVersion"]:
            raise stale(rt.err, name)
        return self._write(rt, old, patched, subresource, dry_run, warnings or Warnings())

    def _write(self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any], subresource: str, dry_run: bool,
               warnings: Warnings) -> Result:
        srt = self._stored_type(rt)
        name = old["metadata"]["name"]
        canonical.apply(srt.key, new)  # decoded: "1000m" sent again is the "1" stored, no change
        if subresource == "status":
            merged = clone(old)
            merged["status"] = new.get("status") or {}
            new = merged
        else:
            if srt.has_status:
                new["status"] = clone(old.get("status"))
                if new["status"] is None:
                    new.pop("status")
            meta = new.setdefault("metadata", {})
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace",
                      "generation", "name"):
                if k in old["metadata"]:
                    meta[k] = old["metadata"][k]
                else:
                    meta.pop(k, None)
            if old["metadata"].get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
                if added:
                    raise invalid(srt.err, name, [validation.forbidden_field(
                        "metadata.finalizers", "no new finalizers can be added if the object is being deleted")])
            if srt.key == "secrets":
                defaults.secret(new)
            if srt.key == "pods":
                defaults.pod_spec(new.setdefault("spec", {}))
            new["apiVersion"], new["kind"] = srt.api_version, srt.kind
            if _spec_part(new) != _spec_part(old) and "generation" in old["metadata"]:
                meta["generation"] = int(old["metadata"]["generation"]) + 1
            validation.validate_update(srt, old, new)
            validation.validate(srt, new)
            self._validate_limit_range(srt, new)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if _same(old, new):
            return Result(self.view(rt, old), 200, warnings.items)
        if dry_run:
            return Result(self.view(rt, new), 200, warnings.items)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers") and not (
                srt.key == "pods" and self._awaits_kubelet(new)):
            self._commit("DELETED", srt, new, old)
            return Result(self.view(rt, new), 200, warnings.items)
        self._commit("MODIFIED", srt, new, old)
        return Result(self.view(rt, new), 200, warnings.items)

    @staticmethod
    def _awaits_kubelet(pod: dict[str, Any]) -> bool:
        """A bound, non-terminal pod being deleted gracefully: removed by its kubelet, not by the API."""
        meta = pod["metadata"]
        return bool((pod.get("spec") or {}).get("nodeName")) and int(meta.get("deletionGracePeriodSeconds") or 0) > 0 \
            and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")

    # -- delete -----------------------------------------------------------------------------------------

    def delete(self, rt: ResourceType, ns: str, name: str, opts: DeleteOptions, user: User,
               warnings: Warnings | None = None) -> Result:
        warnings = warnings or Warnings()
        srt = self._stored_type(rt)
        obj = self._existing(rt, ns, name)
        meta = obj["metadata"]
        if opts.uid and opts.uid != meta.get("uid"):
            raise conflict(rt.err, name, f"Precondition failed: UID in precondition: {opts.uid}, UID in object "
                                         f"meta: {meta.get('uid')}")
        if opts.resource_version and opts.resource_version != meta.get("resourceVersion"):
            raise conflict(rt.err, name, f"Precondition failed: ResourceVersion in precondition: "
                                         f"{opts.resource_version}, ResourceVersion in object meta: "
                                         f"{meta.get('resourceVersion')}")
        propagation = opts.propagation
        if propagation is None:
            if srt.key == "jobs.batch":
                propagation = self.default_job_propagation
                if propagation == "Orphan":
                    warnings.add(JOB_ORPHAN_WARNING)
            else:
                propagation = "Background"
        if propagation not in ("Orphan", "Background", "Foreground"):
            raise ApiError(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported '
                                           f'value: "{propagation}": supported values: "Foreground", "Background", '
                                           f'"Orphan", "nil"')
        new = clone(obj)
        nmeta = new["metadata"]
        finalizers = list(nmeta.get("finalizers") or [])
        if propagation == "Orphan" and ORPHAN not in finalizers and srt.key != "events":
            finalizers.append(ORPHAN)
        if propagation == "Foreground" and FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
        grace = 0
        if srt.key == "pods" and (new.get("spec") or {}).get("nodeName") and (new.get("status") or {}).get(
                "phase") not in ("Succeeded", "Failed"):
            grace = opts.grace if opts.grace is not None else int((new.get("spec") or {}).get(
                "terminationGracePeriodSeconds", 30))
            grace = max(grace, 0)
            current = nmeta.get("deletionGracePeriodSeconds")
            if current is not None and grace >= int(current) and grace != 0:
                return Result(self.view(rt, obj), 200, warnings.items)
        if opts.dry_run:
            return Result(self.view(rt, obj), 200, warnings.items)
        pending = bool(finalizers) or grace > 0 or srt.key == "namespaces"
        if srt.key == "namespaces":
            new.setdefault("status", {})["phase"] = "Terminating"
        if not nmeta.get("deletionTimestamp") or grace < int(nmeta.get("deletionGracePeriodSeconds") or 0):
            nmeta["deletionTimestamp"] = stamp(now() + timedelta(seconds=grace))
            nmeta["deletionGracePeriodSeconds"] = grace
        if finalizers:
            nmeta["finalizers"] = finalizers
        if not pending:
            self._commit("DELETED", srt, new, obj)
            return Result(self._deleted_body(rt, new), 200, warnings.items)
        if not _same(obj, new):
            self._commit("MODIFIED", srt, new, obj)
        # the API server's DeleteResource: 200 for an object not deleted at once (finalizers, grace, a namespace),
        # 202 only when the request set orphanDependents=false
        code = 202 if opts.orphan_dependents is False else 200
        return Result(self.view(rt, new), code, warnings.items)

    def _deleted_body(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        if rt.key in ("pods", "namespaces", "events"):
            return self.view(rt, obj)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": obj["metadata"]["name"], "group": rt.group, "kind": rt.plural,
                            "uid": obj["metadata"].get("uid")}}

    def delete_collection(self, rt: ResourceType, ns: str | None, list_opts: ListOptions, opts: DeleteOptions,
                          user: User) -> Result:
        listed = self.list(rt, ns, ListOptions(list_opts.label_selector, list_opts.field_selector)).body
        for item in listed["items"]:
            meta = item["metadata"]
            try:
                self.delete(rt, meta.get("namespace") or "", meta["name"], opts, user)
            except ApiError as e:
                if e.code != 404:
                    raise
        return Result({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    # -- subresources -----------------------------------------------------------------------------------

    def bind(self, ns: str, name: str, node: str) -> dict[str, Any]:
        rt = self.registry.core("pods")
        pod = self._existing(rt, ns, name)
        if (pod.get("spec") or {}).get("nodeName"):
            raise conflict(rt.err, name, f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"')
        if pod["metadata"].get("deletionTimestamp"):
            raise conflict(rt.err, name, "pod is being deleted, cannot be assigned to a host")
        new = clone(pod)
        new["spec"]["nodeName"] = node
        conds = [c for c in (new.get("status") or {}).get("conditions") or [] if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": stamp()})
        new.setdefault("status", {})["conditions"] = conds
        self._commit("MODIFIED", rt, new, pod)
        return new

    def mutate(self, key: str, ns: str, name: str, fn: Any, share_spec: bool = False) -> dict[str, Any] | None:
        """Controllers' read-modify-write: ``fn(copy)`` edits a copy; committed when it changed (finalizers
        emptied on a deleted object remove it). Returns the stored object, or None when it is gone.
        ``share_spec``: ``fn`` leaves ``spec`` alone, so the copy may share it (status writes)."""
        old = self.store.get(key, ns, name)
        if old is None:
            return None
        if share_spec:  # stored objects are never changed in place: an unchanged spec can be shared
            new = {k: v if k == "spec" else clone(v) for k, v in old.items()}
        else:
            new = clone(old)
        fn(new)
        canonical.apply(key, new)
        if _same(old, new):
            return old
        rt = self.registry.get(key)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers") and not (
                key == "pods" and self._awaits_kubelet(new)):
            self._commit("DELETED", rt, new, old)
            return None
        self._commit("MODIFIED", rt, new, old)
        return new

    def remove(self, key: str, ns: str, name: str) -> None:
        """Delete now (grace 0), as a kubelet does once a pod's containers are gone; finalizers still hold it."""
        old = self.store.get(key, ns, name)
        if old is None:
            return
        new = clone(old)
        meta = new["metadata"]
        meta.setdefault("deletionTimestamp", stamp())
        meta["deletionGracePeriodSeconds"] = 0
        if meta.get("finalizers"):
            if not _same(old, new):
                self._commit("MODIFIED", self.registry.get(key), new, old)
            return
        self._commit("DELETED", self.registry.get(key), new, old)

