"""The three PATCH flavours: JSON merge patch (RFC 7386), JSON patch (RFC 6902, via ``jsonpatch``) and strategic
merge patch, which merges known lists by key and understands the ``$patch`` directives.

https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/ and
https://github.com/kubernetes/community/blob/master/contributors/devel/sig-api-machinery/strategic-merge-patch.md
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from kube_model.errors import ApiError, bad_request

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"

# Lists merged element by element, by this key (patchMergeKey in the Go types). Others are replaced whole.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
              "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
              "imagePullSecrets": "name", "conditions": "type", "ownerReferences": "uid", "hostAliases": "ip",
              "topologySpreadConstraints": "topologyKey"}
PRIMITIVE_MERGE = frozenset({"finalizers"})  # lists of strings merged as sets


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(target: dict[str, Any], ops: Any) -> dict[str, Any]:
    if not isinstance(ops, list):
        raise bad_request("the server rejected our request due to an error in our request: json: cannot "
                          "unmarshal object into Go value of type jsonpatch.Patch")
    try:
        return jsonpatch.apply_patch(target, ops)
    except jsonpatch.JsonPatchTestFailed as e:
        raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {e}") from e
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
        raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {e}") from e


def _ports_key(items: list[Any]) -> str | None:
    for item in items:
        if isinstance(item, dict):
            return "containerPort" if "containerPort" in item else "port"
    return None


def strategic_merge(target: Any, patch: Any, field: str = "") -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            name = k.split("/", 1)[1]
            out[name] = [x for x in out.get(name) or [] if x not in (v or [])]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list):
            out[k] = _merge_list(out.get(k), v, k)
        else:
            merged = strategic_merge(out.get(k), v, k)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
    if retain is not None:
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_list(current: Any, patch: list[Any], field: str) -> list[Any]:
    current = list(current or [])
    if field in PRIMITIVE_MERGE:
        return current + [x for x in patch if x not in current]
    key = MERGE_KEYS.get(field) or (_ports_key(patch) if field == "ports" else None)
    if key is None or not all(isinstance(x, dict) for x in patch):
        return [x for x in copy.deepcopy(patch) if not (isinstance(x, dict) and x.get("$patch"))]
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [x for x in copy.deepcopy(patch) if not x.get("$patch")]
    out = [copy.deepcopy(x) for x in current]
    for item in patch:
        idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append(strategic_merge({}, item, field))
        else:
            out[idx] = strategic_merge(out[idx], item, field)
    return out


def apply_patch(content_type: str, target: dict[str, Any], body: Any) -> dict[str, Any]:
    """Apply a PATCH body of ``content_type`` to ``target`` (a deep copy is returned)."""
    kind = (content_type or "").split(";")[0].strip()
    if kind == JSON_PATCH:
        return json_patch(copy.deepcopy(target), body)
    if not isinstance(body, dict):
        raise bad_request("the body of the request was in an unknown format - accepted media types include: "
                          "application/json-patch+json, application/merge-patch+json, "
                          "application/apply-patch+yaml")
    if kind == MERGE_PATCH:
        return merge_patch(target, body)
    if kind in (STRATEGIC, APPLY):  # server-side apply approximated as a strategic merge
        return strategic_merge(target, body)
    raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media "
                                                f"types include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC}, {APPLY}")
