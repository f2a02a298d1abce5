"""LimitRange: the object's defaulting and validation, and the LimitRanger admission plugin on pods.

https://kubernetes.io/docs/concepts/policy/limit-range/; the code it follows: SetDefaults_LimitRangeItem
(pkg/apis/core/v1/defaults.go: a Container item's ``default`` from ``max``, ``defaultRequest`` from ``default``
then ``min``), ValidateLimitRange (pkg/apis/core/validation), and plugin/pkg/admission/limitranger/admission.go:

- mutating, on a pod's create only (not its updates nor subresources): each LimitRange of the namespace in turn
  gives every container and init container the ``defaultRequest`` / ``default`` of its Container items for the
  resources it names none of, noted in the ``kubernetes.io/limit-ranger`` annotation (requests the pod's limits
  imply were set before, by the API's own defaulting);
- validating: each Container item's ``min`` / ``max`` / ``maxLimitRequestRatio`` against every container's and
  init container's requests and limits, each Pod item's against their sums (an init container counts as the max);
  the first LimitRange refused answers 403 ``pods "x" is forbidden: <reasons>``: one reason alone, several in
  brackets joined with ", " (utilerrors.NewAggregate), in the plugin's words ("maximum cpu usage per Container is
  1, but limit is 2").

Admission runs in the API server's order (api.Api.create): LimitRanger's defaults before the ServiceAccount's,
the pod's defaulting and validation (a request over a default limit is a 422 there); its checks before Pod
Security and ResourceQuota (which counts the defaults). The Job controller's pods meet it too (FailedCreate).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from kube_model.errors import Cause, Kind, forbidden
from kube_model.meta import quantity
from kube_model.quantity import canonical, decode, of
from kube_model.store import Store
from kube_model.validation import bad, forbidden_field, required

ANNOTATION = "kubernetes.io/limit-ranger"
TYPES = ("Pod", "Container", "PersistentVolumeClaim")
MAX_MILLI = 2**63 // 1000  # resource.MaxMilliValue: above it values compare in whole units
NO_OVERCOMMIT_PREFIXES = ("hugepages-",)


def _items(lr: dict[str, Any]) -> list[dict[str, Any]]:
    return list((lr.get("spec") or {}).get("limits") or [])


def ranges(store: Store, namespace: str) -> list[dict[str, Any]]:
    """The namespace's LimitRanges, by name (the plugin's lister gives no order)."""
    return sorted(store.items("limitranges", namespace), key=lambda lr: lr["metadata"]["name"])


# -- the object ------------------------------------------------------------------------------------------


def default(obj: dict[str, Any]) -> None:
    """SetDefaults_LimitRangeItem: a Container item's ``default`` from ``max``, then ``defaultRequest`` from
    ``default``, then from ``min``."""
    for item in _items(obj):
        if item.get("type") != "Container":
            continue
        limit = item.setdefault("default", {}) or {}
        request = item.setdefault("defaultRequest", {}) or {}
        item["default"], item["defaultRequest"] = limit, request
        for source, target in (("max", limit), ("default", request), ("min", request)):
            for name, value in (item.get(source) or {}).items():
                target.setdefault(name, value)


def _over_commit(name: str) -> bool:
    return not name.startswith(NO_OVERCOMMIT_PREFIXES) and ("/" not in name or name.startswith("kubernetes.io/"))


def causes(obj: dict[str, Any]) -> list[Cause]:
    """ValidateLimitRange's field errors (after defaulting)."""
    out: list[Cause] = []
    seen: set[str] = set()
    for i, item in enumerate(_items(obj)):
        path = f"spec.limits[{i}]"
        kind = item.get("type") or ""
        if not kind:
            out.append(required(f"{path}.type"))
        elif kind in seen:
            out.append(Cause(f"{path}.type", "FieldValueDuplicate", f'Duplicate value: "{kind}"'))
        seen.add(kind)
        parts: dict[str, dict[str, Decimal]] = {}
        for part in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"):
            values = item.get(part) or {}
            if kind == "Pod" and part in ("default", "defaultRequest") and values:
                out.append(forbidden_field(f"{path}.{part}", "may not be specified when `type` is 'Pod'"))
                continue
            for name, value in values.items():
                try:
                    parts.setdefault(part, {})[name] = quantity(value)
                except ValueError as e:
                    out.append(bad(f"{path}.{part}[{name}]", str(value), str(e)))
        if kind == "PersistentVolumeClaim" and "storage" not in parts.get("min", {}) \
                and "storage" not in parts.get("max", {}):
            out.append(required(f"{path}.limits", "either minimum or maximum storage value is required, but neither "
                                                  "was provided"))
        out += _consistent(path, item, parts)
    return out


def _consistent(path: str, item: dict[str, Any], parts: dict[str, dict[str, Decimal]]) -> list[Cause]:
    """The bounds of one item agree: min <= defaultRequest <= default <= max, a ratio of at least 1 and at most
    max/min, default == defaultRequest for resources that cannot be overcommitted."""
    out: list[Cause] = []
    names = [n for part in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio")
             for n in parts.get(part, {})]
    for name in dict.fromkeys(names):
        lo, hi = parts.get("min", {}).get(name), parts.get("max", {}).get(name)
        dflt, dreq = parts.get("default", {}).get(name), parts.get("defaultRequest", {}).get(name)
        ratio = parts.get("maxLimitRequestRatio", {}).get(name)

        def s(part: str, name: str = name) -> str:
            return canonical(item[part][name])
        if lo is not None and hi is not None and lo > hi:
            out.append(bad(f"{path}.min[{name}]", s("min"), f"min value {s('min')} is greater than max value "
                                                            f"{s('max')}"))
        if dreq is not None and lo is not None and lo > dreq:
            out.append(bad(f"{path}.defaultRequest[{name}]", s("defaultRequest"),
                           f"min value {s('min')} is greater than default request value {s('defaultRequest')}"))
        if dreq is not None and hi is not None and dreq > hi:
            out.append(bad(f"{path}.defaultRequest[{name}]", s("defaultRequest"),
                           f"default request value {s('defaultRequest')} is greater than max value {s('max')}"))
        if dreq is not None and dflt is not None and dreq > dflt:
            out.append(bad(f"{path}.defaultRequest[{name}]", s("defaultRequest"),
                           f"default request value {s('defaultRequest')} is greater than default limit value "
                           f"{s('default')}"))
        if dflt is not None and lo is not None and lo > dflt:
            out.append(bad(f"{path}.default[{name}]", s("min"), f"min value {s('min')} is greater than default value "
                                                                f"{s('default')}"))
        if dflt is not None and hi is not None and dflt > hi:
            out.append(bad(f"{path}.default[{name}]", s("max"), f"default value {s('default')} is greater than max "
                                                                f"value {s('max')}"))
        if ratio is not None and ratio < 1:
            out.append(bad(f"{path}.maxLimitRequestRatio[{name}]", s("maxLimitRequestRatio"),
                           f"ratio {s('maxLimitRequestRatio')} is less than 1"))
        if ratio is not None and lo and hi is not None and ratio > hi / lo:
            out.append(bad(f"{path}.maxLimitRequestRatio[{name}]", s("maxLimitRequestRatio"),
                           f"ratio {s('maxLimitRequestRatio')} is greater than max/min = {float(hi / lo):f}"))
        if not _over_commit(name) and dflt is not None and dreq is not None and dflt != dreq:
            out.append(bad(f"{path}.defaultRequest[{name}]", s("defaultRequest"),
                           f"default value {s('default')} must equal to defaultRequest value {s('defaultRequest')} "
                           f"in {name}"))
    return out


# -- admission: defaults ---------------------------------------------------------------------------------


def _containers(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("container", c) for c in spec.get("containers") or []] + [
        ("init container", c) for c in spec.get("initContainers") or []]


def _merge(container: dict[str, Any], requests: dict[str, Any], limits: dict[str, Any], prefix: str,
           notes: list[str]) -> None:
    """mergeContainerResources: the defaults the container names none of, noted."""
    res = container.setdefault("resources", {}) or {}
    container["resources"] = res
    have_limits = res.setdefault("limits", {}) or {}
    have_requests = res.setdefault("requests", {}) or {}
    res["limits"], res["requests"] = have_limits, have_requests
    for name, value in have_limits.items():  # the API's defaulting ran first: requests default to limits
        have_requests.setdefault(name, value)
    set_limits = sorted(n for n in limits if n not in have_limits)
    set_requests = sorted(n for n in requests if n not in have_requests)
    for n in set_limits:
        have_limits[n] = limits[n]
    for n in set_requests:
        have_requests[n] = requests[n]
    if set_requests:
        notes.append(f"{', '.join(set_requests)} request for {prefix} {container.get('name')}")
    if set_limits:
        notes.append(f"{', '.join(set_limits)} limit for {prefix} {container.get('name')}")
    if not have_limits:
        res.pop("limits")
    if not have_requests:
        res.pop("requests")


def admit(store: Store, pod: dict[str, Any]) -> None:
    """The plugin's mutation of a new pod (``pod`` changed in place): each LimitRange's container defaults."""
    spec = pod.get("spec") or {}
    for lr in ranges(store, pod["metadata"].get("namespace") or ""):
        requests: dict[str, Any] = {}
        limits: dict[str, Any] = {}
        for item in _items(lr):
            if item.get("type") == "Container":
                requests.update(item.get("defaultRequest") or {})
                limits.update(item.get("default") or {})
        notes: list[str] = []
        for prefix, c in _containers(spec):
            _merge(c, requests, limits, prefix, notes)
        if notes:
            annotations = pod["metadata"].setdefault("annotations", {}) or {}
            pod["metadata"]["annotations"] = annotations
            annotations[ANNOTATION] = "LimitRanger plugin set: " + "; ".join(notes)


# -- admission: checks -----------------------------------------------------------------------------------


def _scaled(*values: Decimal) -> list[int]:
    """requestLimitEnforcedValues: milli-units when every value fits, else whole ones (each rounded up)."""
    whole = [int(v.to_integral_value(rounding="ROUND_CEILING")) for v in values]
    if all(w <= MAX_MILLI for w in whole):
        return [int((v * 1000).to_integral_value(rounding="ROUND_CEILING")) for v in values]
    return whole


def _check(kind: str, name: str, bound: str, enforced: Any, requests: dict[str, Any],
           limits: dict[str, Any]) -> str | None:
    """minConstraint, maxConstraint, limitRequestRatioConstraint: the reason ``bound`` refuses, or None."""
    req, lim = requests.get(name), limits.get(name)
    want = canonical(enforced)
    observed_req, observed_lim, enforced_v = _scaled(quantity(req or 0), quantity(lim or 0), quantity(enforced))
    if bound == "min":
        if req is None:
            return f"minimum {name} usage per {kind} is {want}.  No request is specified"
        if observed_req < enforced_v:
            return f"minimum {name} usage per {kind} is {want}, but request is {canonical(req)}"
        if lim is not None and observed_lim < enforced_v:
            return f"minimum {name} usage per {kind} is {want}, but limit is {canonical(lim)}"
        return None
    if bound == "max":
        if lim is None:
            return f"maximum {name} usage per {kind} is {want}.  No limit is specified"
        if observed_lim > enforced_v:
            return f"maximum {name} usage per {kind} is {want}, but limit is {canonical(lim)}"
        if req is not None and observed_req > enforced_v:
            return f"maximum {name} usage per {kind} is {want}, but request is {canonical(req)}"
        return None
    if req is None or observed_req == 0:
        return f"{name} max limit to request ratio per {kind} is {want}, but no request is specified or request is 0"
    if lim is None or observed_lim == 0:
        return f"{name} max limit to request ratio per {kind} is {want}, but no limit is specified or limit is 0"
    ratio = observed_lim / observed_req
    if ratio * 1000 > int((quantity(enforced) * 1000).to_integral_value(rounding="ROUND_CEILING")):
        return f"{name} max limit to request ratio per {kind} is {want}, but provided ratio is {ratio:f}"
    return None


def _total(spec: dict[str, Any], part: str) -> dict[str, str]:
    """podRequests / podLimits: the containers' sum, or an init container's if larger (per resource)."""
    sums: dict[str, Decimal] = {}
    formats: dict[str, str] = {}  # Quantity.Add keeps the first one's format (a zero takes the other's)
    for c in spec.get("containers") or []:
        for name, value in ((c.get("resources") or {}).get(part) or {}).items():
            q = decode(value)
            if not sums.get(name):
                formats[name] = q.format
            sums[name] = sums.get(name, Decimal(0)) + q.value
    for c in spec.get("initContainers") or []:
        for name, value in ((c.get("resources") or {}).get(part) or {}).items():
            q = decode(value)
            if name not in sums or q.value > sums[name]:
                sums[name], formats[name] = q.value, q.format
    return {name: of(v, formats[name]) for name, v in sums.items()}


def reasons(lr: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """PodValidateLimitFunc: why ``lr`` refuses ``pod`` (none: it admits it)."""
    spec = pod.get("spec") or {}
    out: list[str] = []
    for item in _items(lr):
        kind = item.get("type")
        if kind == "Container":
            targets = [((c.get("resources") or {}).get("requests") or {}, (c.get("resources") or {}).get("limits")
                        or {}) for _, c in _containers(spec)]
        elif kind == "Pod":
            targets = [(_total(spec, "requests"), _total(spec, "limits"))]
        else:
            continue
        for requests, limits in targets:
            for bound in ("min", "max", "maxLimitRequestRatio"):
                for name, enforced in (item.get(bound) or {}).items():
                    why = _check(kind, name, bound, enforced, requests, limits)
                    if why is not None:
                        out.append(why)
    return out


def aggregate(texts: list[str]) -> str:
    """utilerrors.NewAggregate's Error(): one alone as it is; several (duplicates dropped) in brackets."""
    unique = list(dict.fromkeys(texts))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


def check(store: Store, pod: dict[str, Any], kind: Kind, name: str) -> None:
    """The plugin's validation of a new pod: 403 naming the reasons of the first LimitRange that refuses it."""
    for lr in ranges(store, pod["metadata"].get("namespace") or ""):
        found = reasons(lr, pod)
        if found:
            raise forbidden(kind, name, aggregate(found))
