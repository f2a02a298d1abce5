"""Validation as the API server does it on create and update: 422 Invalid with field causes.

Names: https://kubernetes.io/docs/concepts/overview/working-with-objects/names/ (DNS-1123 subdomain for most
objects, DNS-1123 label for namespaces and container names). Labels:
https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set. Job rules:
https://kubernetes.io/docs/concepts/workloads/controllers/job/ (restartPolicy Never/OnFailure, podFailurePolicy
needs Never, the selector must match the template, the template is immutable). Secrets and ConfigMaps hold at most
1 MiB of values (ValidateSecret, ValidateConfigMap in pkg/apis/core/validation: core.MaxSecretSize). Messages follow
k8s.io/apimachinery/pkg/util/validation.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from kube_model.errors import ApiError, Cause, Kind, bad_request, invalid
from kube_model.meta import Requirement, parse_label_selector, quantity
from kube_model.resources import ResourceType

SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
             "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
QUALIFIED_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                 "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
                 "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
             "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex "
             "used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
ENV_MSG = ("a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and "
           "must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for "
           "validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')")
LABEL_NAMED = frozenset({"namespaces"})  # names that must be DNS labels
PATH_NAMED = frozenset({"roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io",
                        "clusterroles.rbac.authorization.k8s.io", "clusterrolebindings.rbac.authorization.k8s.io"})
POD_UPDATE_MSG = ("pod updates may not change fields other than `spec.containers[*].image`,"
                  "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                  "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                  "previously negative)")


def _q(value: Any) -> str:
    return '"' + str(value).replace('"', '\\"') + '"'


def bad(path: str, value: Any, message: str) -> Cause:
    return Cause(path, "FieldValueInvalid", f"Invalid value: {_q(value) if isinstance(value, str) else value}: "
                                            f"{message}")


def required(path: str, message: str = "") -> Cause:
    return Cause(path, "FieldValueRequired", "Required value" + (f": {message}" if message else ""))


def unsupported(path: str, value: Any, allowed: list[str]) -> Cause:
    return Cause(path, "FieldValueNotSupported",
                 f"Unsupported value: {_q(value)}: supported values: " + ", ".join(_q(a) for a in allowed))


def forbidden_field(path: str, message: str) -> Cause:
    return Cause(path, "FieldValueForbidden", f"Forbidden: {message}")


def dns_subdomain(path: str, name: str) -> list[Cause]:
    out = []
    if len(name) > 253:
        out.append(bad(path, name, "must be no more than 253 characters"))
    if not SUBDOMAIN.match(name):
        out.append(bad(path, name, SUBDOMAIN_MSG))
    return out


def dns_label(path: str, name: str) -> list[Cause]:
    out = []
    if len(name) > 63:
        out.append(bad(path, name, "must be no more than 63 characters"))
    if not LABEL.match(name):
        out.append(bad(path, name, LABEL_MSG))
    return out


def qualified_name_errors(key: str) -> list[str]:
    """What apimachinery's IsQualifiedName says of a label or annotation key (empty: valid)."""
    prefix, _, name = key.rpartition("/")
    out = []
    if key.count("/") > 1:
        return ["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and "
                "'/' (e.g. 'example.com/MyName')"]
    if "/" in key:
        if not prefix:
            out.append("prefix part must be non-empty")
        elif len(prefix) > 253 or not SUBDOMAIN.match(prefix):
            out.append("prefix part " + SUBDOMAIN_MSG)
    if not name:
        out.append("name part must be non-empty")
    else:
        if len(name) > 63:
            out.append("name part must be no more than 63 characters")
        if not QUALIFIED.match(name):
            out.append(QUALIFIED_MSG)
    return out


def qualified_name(path: str, key: str) -> list[Cause]:
    return [bad(path, key, e) for e in qualified_name_errors(key)]


def label_value_errors(value: str) -> list[str]:
    """What apimachinery's IsValidLabelValue says of a label value (empty: valid)."""
    out = []
    if len(value) > 63:
        out.append("must be no more than 63 characters")
    if not LABEL_VALUE.match(value):
        out.append(VALUE_MSG)
    return out


def labels(path: str, values: dict[str, Any] | None) -> list[Cause]:
    out = []
    for key, value in (values or {}).items():
        out += qualified_name(path, key)
        if not isinstance(value, str):
            out.append(bad(f"{path}", value, "label values must be strings"))
            continue
        out += [bad(path, value, e) for e in label_value_errors(value)]
    return out


def selector_requirement(req: Requirement) -> list[str]:
    """The field errors apimachinery's labels.NewRequirement finds in one parsed requirement of a label selector
    (``key: Invalid value: ...``, ``values[0][key]: Invalid value: ...``); each one's reasons joined by "; "."""
    out = []
    key_errors = qualified_name_errors(req.key)
    if key_errors:
        out.append(f"key: Invalid value: {_q(req.key)}: {'; '.join(key_errors)}")
    if req.op in ("gt", "lt"):
        out += [f"values[{i}]: Invalid value: {_q(v)}: for 'Gt', 'Lt' operators, the value must be an integer"
                for i, v in enumerate(req.values) if not re.fullmatch(r"[+-]?[0-9]+", v)]
    for i, v in enumerate(req.values):
        value_errors = label_value_errors(v)
        if value_errors:
            out.append(f"values[{i}][{req.key}]: Invalid value: {_q(v)}: {'; '.join(value_errors)}")
    return out


def annotations(path: str, values: dict[str, Any] | None) -> list[Cause]:
    out = []
    total = 0
    for key, value in (values or {}).items():
        out += qualified_name(path, key)
        total += len(key) + len(str(value))
    if total > 256 * 1024:
        out.append(Cause(path, "FieldValueTooLong", "Too long: must have at most 262144 bytes"))
    return out


def metadata(rt: ResourceType, meta: dict[str, Any]) -> list[Cause]:
    out: list[Cause] = []
    name = meta.get("name") or ""
    if not name:
        out.append(required("metadata.name", "name or generateName is required"))
    elif rt.key in PATH_NAMED:
        if name in (".", "..") or "/" in name or "%" in name:
            out.append(bad("metadata.name", name, 'may not contain "/" or "%"'))
    elif rt.plural in LABEL_NAMED:
        out += dns_label("metadata.name", name)
    else:
        out += dns_subdomain("metadata.name", name)
    out += labels("metadata.labels", meta.get("labels"))
    out += annotations("metadata.annotations", meta.get("annotations"))
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        for f in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(f):
                out.append(required(f"metadata.ownerReferences[{i}].{f}"))
    if sum(1 for r in meta.get("ownerReferences") or [] if r.get("controller")) > 1:
        out.append(bad("metadata.ownerReferences", "", "Only one reference can have Controller set to true"))
    return out


def _resources(path: str, res: dict[str, Any] | None) -> list[Cause]:
    out: list[Cause] = []
    parsed: dict[str, dict[str, Any]] = {}
    for part in ("requests", "limits"):
        for name, value in ((res or {}).get(part) or {}).items():
            try:
                parsed.setdefault(part, {})[name] = quantity(value)
            except ValueError as e:
                out.append(bad(f"{path}.{part}[{name}]", value, str(e)))
    for part, values in parsed.items():
        for name, value in values.items():
            if extended(name) and value != value.to_integral_value():
                out.append(bad(f"{path}.{part}[{name}]", res[part][name], "must be an integer"))  # type: ignore
    for name, req in (parsed.get("requests") or {}).items():
        limit = (parsed.get("limits") or {}).get(name)
        if limit is None:
            if extended(name):  # GPUs and other device plugin resources cannot be overcommitted
                out.append(required(f"{path}.limits", "Limit must be set for non overcommitable resources"))
        elif extended(name) and req != limit:
            out.append(bad(f"{path}.requests", res["requests"][name],  # type: ignore[index]
                           f"must be equal to {name} limit of {res['limits'][name]}"))  # type: ignore[index]
        elif req > limit:
            out.append(bad(f"{path}.requests", res["requests"][name],  # type: ignore[index]
                           f"must be less than or equal to {name} limit of {res['limits'][name]}"))  # type: ignore
    return out


def extended(name: str) -> bool:
    """A device plugin's resource (``nvidia.com/gpu``): whole units, requests equal to limits."""
    return "/" in name and not name.startswith(("kubernetes.io/", "requests."))


def warnings(key: str, obj: dict[str, Any]) -> list[str]:
    """The API server's warnings about a pod spec (k8s.io/kubernetes/pkg/api/pod/warnings.go): a memory amount
    in fractions of a byte ("512m" is 0.512 bytes) is accepted, with a warning."""
    if key == "pods":
        path, spec = "spec", obj.get("spec") or {}
    elif key == "jobs.batch":
        path, spec = "spec.template.spec", ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    else:
        return []
    out = []
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            for part in ("limits", "requests"):
                for name in ("memory", "ephemeral-storage"):
                    value = ((c.get("resources") or {}).get(part) or {}).get(name)
                    try:
                        fractional = value is not None and quantity(value) != quantity(value).to_integral_value()
                    except ValueError:
                        continue
                    if fractional:
                        out.append(f"{path}.{kind}[{i}].resources.{part}[{name}]: fractional byte value "
                                   f'"{value}" is invalid, must be an integer')
    return out


def _container(path: str, c: dict[str, Any], init: bool) -> list[Cause]:
    out: list[Cause] = []
    if not c.get("name"):
        out.append(required(f"{path}.name"))
    else:
        out += dns_label(f"{path}.name", c["name"])
    if not c.get("image"):
        out.append(required(f"{path}.image"))
    for i, env in enumerate(c.get("env") or []):
        if not env.get("name"):
            out.append(required(f"{path}.env[{i}].name"))
        elif not ENV_NAME.match(env["name"]):
            out.append(bad(f"{path}.env[{i}].name", env["name"], ENV_MSG))
    out += _resources(f"{path}.resources", c.get("resources"))
    policy = c.get("imagePullPolicy")
    if policy and policy not in ("Always", "IfNotPresent", "Never"):
        out.append(unsupported(f"{path}.imagePullPolicy", policy, ["Always", "IfNotPresent", "Never"]))
    if c.get("restartPolicy") is not None:
        if not init:
            out.append(forbidden_field(f"{path}.restartPolicy", "may not be set for non-init containers"))
        elif c["restartPolicy"] != "Always":
            out.append(unsupported(f"{path}.restartPolicy", c["restartPolicy"], ["Always"]))
    tmp = c.get("terminationMessagePolicy")
    if tmp and tmp not in ("File", "FallbackToLogsOnError"):
        out.append(unsupported(f"{path}.terminationMessagePolicy", tmp, ["File", "FallbackToLogsOnError"]))
    return out


def pod_spec(path: str, spec: dict[str, Any]) -> list[Cause]:
    out: list[Cause] = []
    containers = spec.get("containers") or []
    if not containers:
        out.append(required(f"{path}.containers"))
    names: set[str] = set()
    for kind, items in (("initContainers", spec.get("initContainers") or []), ("containers", containers)):
        for i, c in enumerate(items):
            out += _container(f"{path}.{kind}[{i}]", c, kind == "initContainers")
            if c.get("name") in names:
                out.append(Cause(f"{path}.{kind}[{i}].name", "FieldValueDuplicate", f'Duplicate value: "{c["name"]}"'))
            names.add(c.get("name"))
    policy = spec.get("restartPolicy", "Always")
    if policy not in ("Always", "OnFailure", "Never"):
        out.append(unsupported(f"{path}.restartPolicy", policy, ["Always", "OnFailure", "Never"]))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not isinstance(deadline, int) or deadline <= 0):
        out.append(bad(f"{path}.activeDeadlineSeconds", deadline, "must be between 1 and 2147483647, inclusive"))
    out += labels(f"{path}.nodeSelector", spec.get("nodeSelector"))
    volumes = set()
    for i, v in enumerate(spec.get("volumes") or []):
        if v.get("name") in volumes:
            out.append(Cause(f"{path}.volumes[{i}].name", "FieldValueDuplicate", f'Duplicate value: "{v["name"]}"'))
        volumes.add(v.get("name"))
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            for j, m in enumerate(c.get("volumeMounts") or []):
                if m.get("name") not in volumes:
                    out.append(Cause(f"{path}.{kind}[{i}].volumeMounts[{j}].name", "FieldValueNotFound",
                                     f'Not found: "{m.get("name")}"'))
    for i, t in enumerate(spec.get("tolerations") or []):
        op = t.get("operator", "Equal")
        if op not in ("Equal", "Exists"):
            out.append(unsupported(f"{path}.tolerations[{i}].operator", op, ["Equal", "Exists"]))
        if op == "Exists" and t.get("value"):
            out.append(bad(f"{path}.tolerations[{i}].operator", t["value"],
                           "value must be empty when `operator` is 'Exists'"))
        effect = t.get("effect")
        if effect and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            out.append(unsupported(f"{path}.tolerations[{i}].effect", effect,
                                   ["NoSchedule", "PreferNoSchedule", "NoExecute"]))
    return out


def job(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    out: list[Cause] = []
    template = spec.get("template") or {}
    tmeta = template.get("metadata") or {}
    out += labels("spec.template.metadata.labels", tmeta.get("labels"))
    pod = template.get("spec") or {}
    out += pod_spec("spec.template.spec", pod)
    policy = pod.get("restartPolicy")
    if policy not in ("OnFailure", "Never"):
        if policy is None:
            out.append(required("spec.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"'))
        else:
            out.append(unsupported("spec.template.spec.restartPolicy", policy, ["OnFailure", "Never"]))
    for f in ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"):
        value = spec.get(f)
        if value is not None and (not isinstance(value, int) or value < 0):
            out.append(bad(f"spec.{f}", value, "must be greater than or equal to 0"))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not isinstance(deadline, int) or deadline <= 0):
        out.append(bad("spec.activeDeadlineSeconds", deadline, "must be greater than or equal to 1"))
    pfp = spec.get("podFailurePolicy")
    if pfp is not None:
        if policy != "Never":
            out.append(bad("spec.template.spec.restartPolicy", policy,
                           'only "Never" is supported when podFailurePolicy is specified'))
        containers = {c.get("name") for c in pod.get("containers") or []} | {
            c.get("name") for c in pod.get("initContainers") or []}
        for i, rule in enumerate(pfp.get("rules") or []):
            at = f"spec.podFailurePolicy.rules[{i}]"
            action = rule.get("action")
            if action not in ("FailJob", "FailIndex", "Ignore", "Count"):
                out.append(unsupported(f"{at}.action", action, ["Count", "FailIndex", "FailJob", "Ignore"]))
            codes, conds = rule.get("onExitCodes"), rule.get("onPodConditions")
            if (codes is None) == (conds is None):
                out.append(bad(at, "", "specifying one of OnExitCodes and OnPodConditions is required"))
            if codes is not None:
                name = codes.get("containerName")
                if name is not None and name not in containers:
                    out.append(bad(f"{at}.onExitCodes.containerName", name,
                                   "must be one of the container or initContainer names in the pod template"))
                op = codes.get("operator")
                if op not in ("In", "NotIn"):
                    out.append(unsupported(f"{at}.onExitCodes.operator", op, ["In", "NotIn"]))
                for j, v in enumerate(codes.get("values") or []):
                    if v == 0 and op == "In":
                        out.append(bad(f"{at}.onExitCodes.values[{j}]", 0, "must not be 0 for the In operator"))
    selector = spec.get("selector")
    tlabels = tmeta.get("labels") or {}
    if selector and spec.get("manualSelector") is not True:
        for k, v in (selector.get("matchLabels") or {}).items():
            if tlabels.get(k) != v:
                out.append(bad("spec.template.metadata.labels", tlabels,
                               "`selector` does not match template `labels`"))
                break
    return out


def validate(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Raise 422 when ``obj`` (after defaulting) is invalid."""
    meta = obj.get("metadata") or {}
    causes = metadata(rt, meta)
    if rt.key == "pods":
        causes += pod_spec("spec", obj.get("spec") or {})
    elif rt.key == "jobs.batch":
        causes += job(obj)
    elif rt.key in ("configmaps", "secrets"):
        for field in ("data", "binaryData", "stringData"):
            for key in (obj.get(field) or {}):
                if not re.match(r"^[-._a-zA-Z0-9]+$", key) or len(key) > 253:
                    causes.append(bad(f"{field}[{key}]", key, "a valid config key must consist of alphanumeric "
                                                             "characters, '-', '_' or '.' (e.g. 'key.name',  or "
                                                             "'KEY_NAME',  or 'key-name', regex used for validation "
                                                             "is '[-._a-zA-Z0-9]+')"))
        causes += _data_size(rt.key, obj)
    if causes:
        raise invalid(rt.err, meta.get("name") or meta.get("generateName") or "", causes)


def _decoded_size(value: Any) -> int:
    try:
        return len(base64.b64decode(value or ""))
    except ValueError:  # not base64 (a real server refuses it as it decodes the body): its length, then
        return len(str(value))


MAX_SECRET_SIZE = 1024 * 1024  # core.MaxSecretSize: a Secret's data, a ConfigMap's data and binaryData, at most


def _data_size(key: str, obj: dict[str, Any]) -> list[Cause]:
    """ValidateSecret and ValidateConfigMap: the bytes of the values (a Secret's decoded, after stringData was merged
    into data) total at most MAX_SECRET_SIZE; more is ``field.TooLong``, on ``data`` for a Secret and on the whole
    object (the root path, rendered ``[]``) for a ConfigMap."""
    binary = obj.get("data") if key == "secrets" else obj.get("binaryData")
    total = sum(_decoded_size(v) for v in (binary or {}).values())
    if key == "configmaps":
        total += sum(len(str(v).encode()) for v in (obj.get("data") or {}).values())
    if total <= MAX_SECRET_SIZE:
        return []
    return [Cause("data" if key == "secrets" else "[]", "FieldValueTooLong",
                  f"Too long: must have at most {MAX_SECRET_SIZE} bytes")]


# Job spec fields an update may not change (ValidateJobSpecUpdate in pkg/apis/batch/validation; the selector and
# the template are checked on their own).
JOB_IMMUTABLE = ("completions", "completionMode", "podFailurePolicy", "backoffLimitPerIndex")


def validate_update(rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> None:
    """The immutability rules the executor may run into (Job selector, template and the spec fields of
    ``JOB_IMMUTABLE``, pod spec)."""
    name = new["metadata"]["name"]
    causes: list[Cause] = []
    if rt.key == "jobs.batch":
        o, n = old.get("spec") or {}, new.get("spec") or {}
        if o.get("selector") != n.get("selector"):
            causes.append(bad("spec.selector", n.get("selector"), "field is immutable"))
        if _template_core(o) != _template_core(n):
            causes.append(bad("spec.template", n.get("template"), "field is immutable"))
        for f in JOB_IMMUTABLE:  # the rest of the spec (parallelism, backoffLimit, suspend, ...) may change
            if o.get(f) != n.get(f):
                causes.append(bad(f"spec.{f}", n.get(f), "field is immutable"))
    elif rt.key == "pods":
        o, n = _pod_mutable_stripped(old.get("spec") or {}), _pod_mutable_stripped(new.get("spec") or {})
        if o != n:
            causes.append(forbidden_field("spec", POD_UPDATE_MSG))
    if causes:
        raise invalid(rt.err, name, causes)


def _template_core(spec: dict[str, Any]) -> Any:
    t = dict(spec.get("template") or {})
    meta = dict(t.get("metadata") or {})
    return {"metadata": {k: v for k, v in meta.items() if k in ("labels", "annotations")}, "spec": t.get("spec")}


def _pod_mutable_stripped(spec: dict[str, Any]) -> dict[str, Any]:
    s = {k: v for k, v in spec.items() if k not in ("activeDeadlineSeconds", "tolerations",
                                                     "terminationGracePeriodSeconds", "nodeName")}
    for kind in ("containers", "initContainers"):
        if kind in s:
            s[kind] = [{k: v for k, v in c.items() if k != "image"} for c in s[kind]]
    return s


LIST_OPTIONS = Kind("listoptions", "meta.k8s.io", "ListOptions")


def list_options(query: dict[str, str], watch: bool) -> None:
    """The query of a list or watch, as the API server decodes it (400: a label selector whose keys or values are
    no valid label keys or values), ``ValidateListOptions`` (apimachinery, 422 ``ListOptions.meta.k8s.io``) and the
    storage layer (400: a ``continue`` token fixes the version it reads) check it."""
    parse_label_selector(query.get("labelSelector"), selector_requirement)  # decoded (400) before validated (422)
    rv, match = query.get("resourceVersion") or "", query.get("resourceVersionMatch") or ""
    token, initial = query.get("continue") or "", query.get("sendInitialEvents")
    path = "resourceVersionMatch"
    causes: list[Cause] = []
    if watch:
        if initial is not None and match != "NotOlderThan":
            causes.append(forbidden_field(path, "sendInitialEvents requires setting resourceVersionMatch to "
                                                "NotOlderThan"))
        if match:
            if initial is None:
                causes.append(forbidden_field(path, "resourceVersionMatch is forbidden for watch unless "
                                                    "sendInitialEvents is provided"))
            if match != "NotOlderThan":
                causes.append(unsupported(path, match, ["NotOlderThan"]))
            if token:
                causes.append(forbidden_field(path, "resourceVersionMatch is forbidden when continue is provided"))
    elif match:
        if not rv:
            causes.append(forbidden_field(path, "resourceVersionMatch is forbidden unless resourceVersion is provided"))
        if token:
            causes.append(forbidden_field(path, "resourceVersionMatch is forbidden when continue is provided"))
        if match not in ("Exact", "NotOlderThan"):
            causes.append(unsupported(path, match, ["Exact", "NotOlderThan", ""]))
        if match == "Exact" and rv == "0":
            causes.append(forbidden_field(path, 'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'))
    if not watch and initial is not None:
        causes.append(forbidden_field("sendInitialEvents", "sendInitialEvents is forbidden for list"))
    if causes:
        raise invalid(LIST_OPTIONS, "", causes)
    if token and rv not in ("", "0"):
        raise bad_request("specifying resource version is not allowed when using continue")


def require_valid_json(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the object provided is unrecognized (must be of type object)")
    return body
