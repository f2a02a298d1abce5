"""Admission: ServiceAccount, Pod Security and ResourceQuota, in the order and words of the real plugins.

- ServiceAccount (https://kubernetes.io/docs/concepts/security/service-accounts/): a pod gets ``default``
  unless it names one; a missing ServiceAccount rejects the pod; the API token is mounted as a projected volume
  unless ``automountServiceAccountToken`` is false on the pod or its ServiceAccount.
- Pod Security (https://kubernetes.io/docs/concepts/security/pod-security-standards/ and
  https://kubernetes.io/docs/concepts/security/pod-security-admission/): the namespace labels
  ``pod-security.kubernetes.io/{enforce,warn,audit}`` pick baseline or restricted; pods that violate the enforce
  level are rejected with ``violates PodSecurity "restricted:latest": ...``; workload resources (Jobs) only get
  warnings. The checks and messages follow k8s.io/pod-security-admission/policy (ordered by check id).
- ResourceQuota (https://kubernetes.io/docs/concepts/policy/resource-quotas/): counts and requests/limits of
  non-terminal pods and object counts; ``exceeded quota: <name>, requested: ..., used: ..., limited: ...``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from kube_model.errors import Kind, Warnings, forbidden
from kube_model.meta import suffix
from kube_model.quantity import DECIMAL, decode, of
from kube_model.store import Store

LEVELS = ("privileged", "baseline", "restricted")
WORKLOADS = frozenset({"jobs.batch", "deployments.apps", "statefulsets.apps"})
CAPS_BASELINE = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                           "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
SAFE_SYSCTLS = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                          "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start",
                          "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time",
                          "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"})
ALLOWED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image",
                             "persistentVolumeClaim", "projected", "secret"})


def _plural(word: str, n: int) -> str:
    return word if n == 1 else word + "s"


def _join(items: list[str]) -> str:
    return ", ".join(f'"{i}"' for i in items)


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return (spec.get("initContainers") or []) + (spec.get("containers") or []) + (spec.get("ephemeralContainers")
                                                                                  or [])


def _sc(c: dict[str, Any]) -> dict[str, Any]:
    return c.get("securityContext") or {}


# Each check: (id, level, overridden baseline id or None, fn(spec) -> (reason, detail) | None).


def _capabilities_baseline(spec: dict[str, Any]) -> tuple[str, str] | None:
    bad, caps = [], set()
    for c in _containers(spec):
        added = [a for a in ((_sc(c).get("capabilities") or {}).get("add") or []) if a not in CAPS_BASELINE]
        if added:
            bad.append(c["name"])
            caps.update(added)
    if bad:
        return ("non-default capabilities", f"{_plural('container', len(bad))} {_join(bad)} must not include "
                                            f"{_join(sorted(caps))} in securityContext.capabilities.add")
    return None


def _host_namespaces(spec: dict[str, Any]) -> tuple[str, str] | None:
    found = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    return ("host namespaces", ", ".join(found)) if found else None


def _host_path(spec: dict[str, Any]) -> tuple[str, str] | None:
    bad = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    return ("hostPath volumes", f"{_plural('volume', len(bad))} {_join(bad)}") if bad else None


def _host_ports(spec: dict[str, Any]) -> tuple[str, str] | None:
    bad, ports = [], set()
    for c in _containers(spec):
        hp = [str(p["hostPort"]) for p in c.get("ports") or [] if p.get("hostPort")]
        if hp:
            bad.append(c["name"])
            ports.update(hp)
    if bad:
        verb = "uses" if len(bad) == 1 else "use"
        return ("hostPort", f"{_plural('container', len(bad))} {_join(bad)} {verb} "
                            f"{_plural('hostPort', len(ports))} {', '.join(sorted(ports))}")
    return None


def _privileged(spec: dict[str, Any]) -> tuple[str, str] | None:
    bad = [c["name"] for c in _containers(spec) if _sc(c).get("privileged")]
    if bad:
        return ("privileged", f"{_plural('container', len(bad))} {_join(bad)} must not set "
                              f"securityContext.privileged=true")
    return None


def _valid_seccomp(kind: str | None) -> bool:
    return kind in ("RuntimeDefault", "Localhost")


def _seccomp_baseline(spec: dict[str, Any]) -> tuple[str, str] | None:
    setters, values = [], set()
    pod = (spec.get("securityContext") or {}).get("seccompProfile")
    if pod and not _valid_seccomp(pod.get("type")):
        setters.append("pod")
        values.add(pod.get("type"))
    bad = []
    for c in _containers(spec):
        prof = _sc(c).get("seccompProfile")
        if prof and not _valid_seccomp(prof.get("type")):
            bad.append(c["name"])
            values.add(prof.get("type"))
    if bad:
        setters.append(f"{_plural('container', len(bad))} {_join(bad)}")
    if setters:
        return ("seccompProfile", f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to "
                                  f"{_join(sorted(values))}")
    return None


def _sysctls(spec: dict[str, Any]) -> tuple[str, str] | None:
    bad = [s["name"] for s in (spec.get("securityContext") or {}).get("sysctls") or [] if s["name"] not in SAFE_SYSCTLS]
    return ("forbidden sysctls", ", ".join(bad)) if bad else None


def _allow_privilege_escalation(spec: dict[str, Any]) -> tuple[str, str] | None:
    bad = [c["name"] for c in _containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False]
    if bad:
        return ("allowPrivilegeEscalation != false", f"{_plural('container', len(bad))} {_join(bad)} must set "
                                                     f"securityContext.allowPrivilegeEscalation=false")
    return None


def _capabilities_restricted(spec: dict[str, Any]) -> tuple[str, str] | None:
    missing, adding, caps = [], [], set()
    for c in _containers(spec):
        cap = _sc(c).get("capabilities")
        if cap is None:
            missing.append(c["name"])
            continue
        if "ALL" not in (cap.get("drop") or []):
            missing.append(c["name"])
        added = [a for a in cap.get("add") or [] if a != "NET_BIND_SERVICE"]
        if added:
            adding.append(c["name"])
            caps.update(added)
    details = []
    if missing:
        details.append(f'{_plural("container", len(missing))} {_join(missing)} must set '
                       f'securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_plural('container', len(adding))} {_join(adding)} must not include {_join(sorted(caps))} "
                       f"in securityContext.capabilities.add")
    return ("unrestricted capabilities", "; ".join(details)) if details else None


def _restricted_volumes(spec: dict[str, Any]) -> tuple[str, str] | None:
    bad, kinds = [], set()
    for v in spec.get("volumes") or []:
        types = [k for k in v if k != "name"]
        if types and types[0] in ALLOWED_VOLUMES:
            continue
        bad.append(v["name"])
        kinds.add(types[0] if types else "unknown")
    if bad:
        verb = "uses" if len(bad) == 1 else "use"
        return ("restricted volume types", f"{_plural('volume', len(bad))} {_join(bad)} {verb} "
                                           f"{_plural('restricted volume type', len(kinds))} {_join(sorted(kinds))}")
    return None


def _run_as_non_root(spec: dict[str, Any]) -> tuple[str, str] | None:
    setters = []
    pod_value = (spec.get("securityContext") or {}).get("runAsNonRoot")
    if pod_value is False:
        setters.append("pod")
    explicit, implicit = [], []
    for c in _containers(spec):
        value = _sc(c).get("runAsNonRoot")
        if value is False:
            explicit.append(c["name"])
        elif value is None and pod_value is not True:
            implicit.append(c["name"])
    if explicit:
        setters.append(f"{_plural('container', len(explicit))} {_join(explicit)}")
    if setters:
        return ("runAsNonRoot != true", f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false")
    if implicit:
        return ("runAsNonRoot != true", f"pod or {_plural('container', len(implicit))} {_join(implicit)} must set "
                                        f"securityContext.runAsNonRoot=true")
    return None


def _run_as_user(spec: dict[str, Any]) -> tuple[str, str] | None:
    setters = []
    if (spec.get("securityContext") or {}).get("runAsUser") == 0:
        setters.append("pod")
    bad = [c["name"] for c in _containers(spec) if _sc(c).get("runAsUser") == 0]
    if bad:
        setters.append(f"{_plural('container', len(bad))} {_join(bad)}")
    return ("runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0") if setters else None


def _seccomp_restricted(spec: dict[str, Any]) -> tuple[str, str] | None:
    found = _seccomp_baseline(spec)
    if found:
        return found
    pod = (spec.get("securityContext") or {}).get("seccompProfile")
    if pod and _valid_seccomp(pod.get("type")):
        return None
    implicit = [c["name"] for c in _containers(spec) if not _sc(c).get("seccompProfile")]
    if implicit:
        return ("seccompProfile", f'pod or {_plural("container", len(implicit))} {_join(implicit)} must set '
                                  f'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"')
    return None


Check = tuple[str, str, str | None, Callable[[dict[str, Any]], tuple[str, str] | None]]
CHECKS: list[Check] = [
    ("capabilities_baseline", "baseline", None, _capabilities_baseline),
    ("hostNamespaces", "baseline", None, _host_namespaces),
    ("hostPathVolumes", "baseline", None, _host_path),
    ("hostPorts", "baseline", None, _host_ports),
    ("privileged", "baseline", None, _privileged),
    ("seccompProfile_baseline", "baseline", None, _seccomp_baseline),
    ("sysctls", "baseline", None, _sysctls),
    ("allowPrivilegeEscalation", "restricted", None, _allow_privilege_escalation),
    ("capabilities_restricted", "restricted", "capabilities_baseline", _capabilities_restricted),
    ("restrictedVolumes", "restricted", "hostPathVolumes", _restricted_volumes),
    ("runAsNonRoot", "restricted", None, _run_as_non_root),
    ("runAsUser", "restricted", None, _run_as_user),
    ("seccompProfile_restricted", "restricted", "seccompProfile_baseline", _seccomp_restricted),
]


def evaluate(level: str, spec: dict[str, Any]) -> list[tuple[str, str]]:
    """The (reason, detail) of every check of ``level`` the pod spec fails, in the real order."""
    if level not in ("baseline", "restricted"):
        return []
    checks = [c for c in CHECKS if c[1] == "baseline" or level == "restricted"]
    overridden = {c[2] for c in checks if c[2]} if level == "restricted" else set()
    checks = [c for c in checks if c[0] not in overridden]
    order = sorted(c[0] for c in checks if c[1] == "baseline") + sorted(c[0] for c in checks if c[1] == "restricted")
    by_id = {c[0]: c for c in checks}
    out = []
    for cid in order:
        found = by_id[cid][3](spec)
        if found:
            out.append(found)
    return out


def describe(results: list[tuple[str, str]]) -> str:
    return ", ".join(f"{reason} ({detail})" if detail else reason for reason, detail in results)


def policy(namespace: dict[str, Any] | None, mode: str) -> tuple[str, str] | None:
    """(level, version) of ``mode`` (enforce, warn, audit) from the namespace labels."""
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    level = labels.get(f"pod-security.kubernetes.io/{mode}")
    if level not in ("baseline", "restricted"):
        return None
    return level, labels.get(f"pod-security.kubernetes.io/{mode}-version") or "latest"


def pod_security(key: str, obj: dict[str, Any], namespace: dict[str, Any] | None, kind: Kind, name: str,
                 warnings: Warnings) -> None:
    """Reject a violating pod (enforce); warn about violating pods and pod templates (warn, and enforce for
    workload resources)."""
    if key == "pods":
        spec = obj.get("spec") or {}
    elif key in WORKLOADS:
        spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    else:
        return
    enforce = policy(namespace, "enforce")
    if enforce and key == "pods":
        found = evaluate(enforce[0], spec)
        if found:
            raise forbidden(kind, name, f'violates PodSecurity "{enforce[0]}:{enforce[1]}": {describe(found)}')
    for mode in (("warn", "enforce") if key in WORKLOADS else ("warn",)):
        pol = policy(namespace, mode)
        if pol:
            found = evaluate(pol[0], spec)
            if found:
                warnings.add(f'would violate PodSecurity "{pol[0]}:{pol[1]}": {describe(found)}')


def service_account(store: Store, obj: dict[str, Any], kind: Kind, name: str) -> None:
    """Default the ServiceAccount, require it to exist, mount its token (mutates ``obj``)."""
    spec = obj.setdefault("spec", {})
    ns = obj["metadata"]["namespace"]
    sa_name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = spec["serviceAccount"] = sa_name
    sa = store.get("serviceaccounts", ns, sa_name)
    if sa is None:
        raise forbidden(kind, name, f'error looking up service account {ns}/{sa_name}: serviceaccount "{sa_name}" '
                                    f"not found")
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        automount = sa.get("automountServiceAccountToken", True)
    if not automount:
        return
    volume_name = f"kube-api-access-{suffix()}"
    spec.setdefault("volumes", []).append({"name": volume_name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                       "fieldPath": "metadata.namespace"}}]}}]}})
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        c.setdefault("volumeMounts", []).append({"name": volume_name, "readOnly": True,
                                                 "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})


# -- ResourceQuota ---------------------------------------------------------------------------------------

COMPUTE = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory")
COUNTED = {"pods": "pods", "configmaps": "configmaps", "secrets": "secrets", "services": "services",
           "resourcequotas": "resourcequotas", "persistentvolumeclaims": "persistentvolumeclaims"}


def pod_terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def pod_sums(pod: dict[str, Any]) -> dict[str, tuple[Decimal, str]]:
    """requests.*/limits.* of a pod, exact, each with its format, as PodRequests / PodLimits add them
    (k8s.io/component-helpers/resource: max(sum of containers, any init container)); Quantity.Add keeps the first
    one's format (a zero takes the other's), an init container's when it is larger (``1Gi`` + ``512Mi`` is
    ``1536Mi``, not ``1610612736``). No rounding: ``500u`` + ``500u`` is ``1m``."""
    spec = pod.get("spec") or {}
    out: dict[str, tuple[Decimal, str]] = {}
    for part in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            fmt, total = DECIMAL, Decimal(0)
            for c in spec.get("containers") or []:
                value = ((c.get("resources") or {}).get(part) or {}).get(resource)
                if value is not None:
                    q = decode(value)
                    fmt, total = (q.format if not total else fmt), total + q.value
            for c in spec.get("initContainers") or []:
                value = ((c.get("resources") or {}).get(part) or {}).get(resource)
                q = None if value is None else decode(value)
                if q is not None and q.value > total:
                    fmt, total = q.format, q.value
            out[f"{part}.{resource}"] = (total, fmt)
    out["cpu"], out["memory"] = out["requests.cpu"], out["requests.memory"]
    return out


def pod_usage(pod: dict[str, Any]) -> dict[str, int]:
    """:func:`pod_sums` as the scheduler and kubelet count them: cpu in millicores, memory in bytes, each sum
    rounded up (Quantity.MilliValue, Quantity.Value)."""
    return {k: int((v * 1000 if k.endswith("cpu") else v).to_integral_value(rounding="ROUND_CEILING"))
            for k, (v, _) in pod_sums(pod).items()}


def usage(store: Store, namespace: str) -> tuple[dict[str, Decimal], dict[str, str]]:
    """The namespace's usage, exact, and the format of each compute sum (quota.Add over its pods: the first
    non-zero pod's)."""
    used: dict[str, Decimal] = {}
    formats: dict[str, str] = {}
    for key, counted in COUNTED.items():
        objs = [o for o in store.items(key, namespace) if not (key == "pods" and pod_terminal(o))]
        used[counted] = Decimal(len(objs))
    for pod in store.items("pods", namespace):
        if pod_terminal(pod):
            continue
        for k, (v, fmt) in pod_sums(pod).items():
            if not used.get(k):
                formats[k] = fmt
            used[k] = used.get(k, Decimal(0)) + v
    for key in ("jobs.batch", "deployments.apps", "statefulsets.apps", "configmaps", "secrets", "pods"):
        used[f"count/{key}"] = Decimal(sum(1 for o in store.items(key, namespace)
                                           if not (key == "pods" and pod_terminal(o))))
    return used, formats


def _fmt(resource: str, value: Decimal, formats: dict[str, str]) -> str:
    """A usage as Quantity.String writes it, in its sum's format."""
    return of(value, formats.get(resource, DECIMAL))


def quota(store: Store, key: str, obj: dict[str, Any], kind: Kind, name: str) -> None:
    """Reject ``obj`` when it would take a namespace's usage over any ResourceQuota's hard limit."""
    ns = obj["metadata"].get("namespace") or ""
    quotas = list(store.items("resourcequotas", ns))
    if not quotas:
        return
    requested: dict[str, Decimal] = {f"count/{key}": Decimal(1)}
    if key in COUNTED:
        requested[COUNTED[key]] = Decimal(1)
    requested_formats: dict[str, str] = {}
    if key == "pods":
        for k, (v, fmt) in pod_sums(obj).items():
            requested[k], requested_formats[k] = v, fmt
    used, used_formats = usage(store, ns)
    for q in sorted(quotas, key=lambda q: q["metadata"]["name"]):
        hard = (q.get("spec") or {}).get("hard") or {}
        qname = q["metadata"]["name"]
        if key == "pods":
            missing = []
            for resource in hard:
                if resource in COMPUTE:
                    part, _, res = resource.rpartition(".")
                    part = part or "requests"
                    lacking = [c["name"] for c in (obj.get("spec") or {}).get("containers") or []
                               if res not in ((c.get("resources") or {}).get(part) or {})]
                    if lacking:
                        missing.append(f"{resource} for: {','.join(lacking)}")
            if missing:
                raise forbidden(kind, name, f"failed quota: {qname}: must specify {'; '.join(sorted(missing))}")
        over = []
        for resource, limit in sorted(hard.items()):
            want = requested.get(resource)
            if not want:
                continue
            # quota.LessThanOrEqual: Quantity.Cmp of the exact sum with the hard limit, no rounding
            if used.get(resource, Decimal(0)) + want > decode(limit).value:
                over.append(resource)
        if over:
            req = ",".join(f"{r}={_fmt(r, requested[r], requested_formats)}" for r in over)
            use = ",".join(f"{r}={_fmt(r, used.get(r, Decimal(0)), used_formats)}" for r in over)
            lim = ",".join(f"{r}={hard[r]}" for r in over)
            raise forbidden(kind, name, f"exceeded quota: {qname}, requested: {req}, used: {use}, limited: {lim}")


def quota_status(store: Store, q: dict[str, Any]) -> dict[str, Any]:
    hard = (q.get("spec") or {}).get("hard") or {}
    used, formats = usage(store, q["metadata"]["namespace"])
    return {"hard": dict(hard), "used": {r: _fmt(r, used.get(r, Decimal(0)), formats) for r in hard}}

