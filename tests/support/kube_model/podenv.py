"""What the kubelet computes for a container before starting it: its environment (values, Secret and ConfigMap
keys, downward API fields, ``$(VAR)`` expansion), the user it runs as (and the runAsNonRoot check), and its
volumes written out as host files to bind-mount.

https://kubernetes.io/docs/tasks/inject-data-application/define-environment-variable-container/,
https://kubernetes.io/docs/concepts/workloads/pods/downward-api/,
https://kubernetes.io/docs/tasks/configure-pod-container/security-context/ (runAsNonRoot: the kubelet refuses to
start a container whose image runs as root), https://kubernetes.io/docs/concepts/storage/volumes/.
"""

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Callable
from typing import Any

from kube_model.meta import quantity

Lookup = Callable[[str, str], dict[str, Any] | None]  # (kind: secrets|configmaps, name) -> object


class ConfigError(Exception):
    """CreateContainerConfigError: the container cannot be configured (yet)."""


class MountError(Exception):
    """FailedMount: a volume's source is missing."""


def pod_ref(pod: dict[str, Any]) -> str:
    """format.Pod: ``name_namespace(uid)``."""
    meta = pod["metadata"]
    return f"{meta['name']}_{meta.get('namespace', '')}({meta.get('uid', '')})"


def _data(obj: dict[str, Any], secret: bool) -> dict[str, str]:
    out = {}
    for k, v in (obj.get("data") or {}).items():
        out[k] = base64.b64decode(v).decode(errors="replace") if secret else str(v)
    if not secret:
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v).decode(errors="replace")
    return out


def field_ref(pod: dict[str, Any], path: str) -> str:
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    simple = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
              "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
              "spec.serviceAccountName": spec.get("serviceAccountName"), "status.hostIP": status.get("hostIP"),
              "status.podIP": status.get("podIP"), "status.podIPs": status.get("podIP"),
              "status.hostIPs": status.get("hostIP")}
    if path not in simple:
        raise ConfigError(f"unsupported fieldPath: {path}")
    return str(simple[path] or "")


def resource_ref(container: dict[str, Any], ref: dict[str, Any], node_allocatable: dict[str, Any]) -> str:
    part, _, resource = ref["resource"].partition(".")
    value = ((container.get("resources") or {}).get(part) or {}).get(resource)
    if value is None:
        value = node_allocatable.get(resource, 0)
    divisor = quantity(ref.get("divisor") or "1")
    return str(math.ceil(quantity(value) / divisor))


def expand(text: str, env: dict[str, str]) -> str:
    """``$(VAR)`` from earlier variables; ``$$(VAR)`` stays literal."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0).startswith("$$"):
            return m.group(0)[1:]
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$?\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)", sub, text)


def _referenced(lookup: Lookup, kind: str, ref: dict[str, Any]) -> dict[str, Any] | None:
    """The ConfigMap or Secret (``kind``) a reference names; None if missing and the reference is optional,
    ConfigError if missing and not."""
    obj = lookup(kind, ref["name"])
    if obj is None and not ref.get("optional"):
        raise ConfigError(f'{"configmap" if kind == "configmaps" else "secret"} "{ref["name"]}" not found')
    return obj


def environment(pod: dict[str, Any], container: dict[str, Any], lookup: Lookup,
                service_env: dict[str, str], node_allocatable: dict[str, Any]) -> dict[str, str]:
    """The container's environment; ConfigError names what is missing."""
    ns = pod["metadata"].get("namespace", "")
    env: dict[str, str] = dict(service_env)
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        for kind, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            if key not in src:
                continue
            ref = src[key]
            obj = _referenced(lookup, kind, ref)
            if obj is None:
                continue
            for k, v in _data(obj, kind == "secrets").items():
                env[prefix + k] = v
    for var in container.get("env") or []:
        name = var["name"]
        src = var.get("valueFrom")
        if src is None:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        for kind, key, label in (("secrets", "secretKeyRef", "Secret"), ("configmaps", "configMapKeyRef",
                                                                           "ConfigMap")):
            if key not in src:
                continue
            ref = src[key]
            obj = _referenced(lookup, kind, ref)
            if obj is None:
                break
            data = _data(obj, kind == "secrets")
            if ref["key"] not in data:
                if ref.get("optional"):
                    break
                raise ConfigError(f"couldn't find key {ref['key']} in {label} {ns}/{ref['name']}")
            env[name] = data[ref["key"]]
            break
        else:
            if "fieldRef" in src:
                env[name] = field_ref(pod, src["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in src:
                env[name] = resource_ref(container, src["resourceFieldRef"], node_allocatable)
    return env


def run_as(pod: dict[str, Any], container: dict[str, Any], image_user: str) -> str | None:
    """The ``uid[:gid]`` to run as (None: the image's user); ConfigError when runAsNonRoot cannot hold."""
    psc, csc = (pod.get("spec") or {}).get("securityContext") or {}, container.get("securityContext") or {}
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gid = csc.get("runAsGroup", psc.get("runAsGroup"))
    non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    who = f'(pod: "{pod_ref(pod)}", container: {container["name"]})'
    if non_root:
        if uid is not None:
            if int(uid) == 0:
                raise ConfigError(f"container's runAsUser breaks non-root policy {who}")
        else:
            user = (image_user or "").split(":")[0]
            if user in ("", "root", "0"):
                raise ConfigError(f"container has runAsNonRoot and image will run as root {who}")
            if not user.isdigit():
                raise ConfigError(f"container has runAsNonRoot and image has non-numeric user ({user}), cannot verify "
                                  f"user is non-root {who}")
    if uid is None and gid is None:
        return None
    if uid is None:
        uid = (image_user or "0").split(":")[0] or "0"
    return f"{uid}:{gid}" if gid is not None else str(uid)


def missing_sources(pod: dict[str, Any], lookup: Lookup) -> list[tuple[str, str]]:
    """(volume, why) for every Secret or ConfigMap volume source that does not exist (and is not optional)."""
    out = []
    for v in (pod.get("spec") or {}).get("volumes") or []:
        sources = []
        if "secret" in v:
            sources.append(("secrets", v["secret"].get("secretName"), v["secret"].get("optional")))
        if "configMap" in v:
            sources.append(("configmaps", v["configMap"].get("name"), v["configMap"].get("optional")))
        for s in (v.get("projected") or {}).get("sources") or []:
            if "secret" in s:
                sources.append(("secrets", s["secret"].get("name"), s["secret"].get("optional")))
            if "configMap" in s:
                sources.append(("configmaps", s["configMap"].get("name"), s["configMap"].get("optional")))
        for kind, name, optional in sources:
            if not optional and lookup(kind, name or "") is None:
                out.append((v["name"], f'{"secret" if kind == "secrets" else "configmap"} "{name}" not found'))
    return out


# Volumes the kubelet writes from API objects: always mounted read-only, whatever the volumeMount says
# (https://github.com/kubernetes/kubernetes/pull/58720, CVE-2017-1002102), and their files root-owned.
WRITTEN = ("secret", "configMap", "downwardAPI", "projected")


def _write(path: str, text: str, mode: int, gid: int) -> None:
    """A file as the kubelet (root) writes a volume's: owned by root, of group ``gid`` (the pod's fsGroup, else 0)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, 0, gid)
    os.chmod(path, mode)


def fs_group(pod: dict[str, Any]) -> int | None:
    """The pod's fsGroup, if it has one."""
    value = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
    return int(value) if value is not None else None


def groups(pod: dict[str, Any]) -> list[int]:
    """The supplementary groups of the pod's containers: its fsGroup and supplementalGroups."""
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    fs = fs_group(pod)
    return [*([fs] if fs is not None else []), *(int(g) for g in psc.get("supplementalGroups") or [])]


def read_only_volumes(pod: dict[str, Any]) -> set[str]:
    """The pod's volumes that are mounted read-only whatever their mounts say (:data:`WRITTEN`)."""
    return {v["name"] for v in (pod.get("spec") or {}).get("volumes") or [] if any(k in v for k in WRITTEN)}


def _items(data: dict[str, str], items: list[dict[str, Any]] | None) -> dict[str, str]:
    if not items:
        return data
    return {i["path"]: data[i["key"]] for i in items if i["key"] in data}


def write_volumes(pod: dict[str, Any], root: str, lookup: Lookup, token: Callable[[], str], ca_cert: str,
                  shared: Callable[[str], str]) -> dict[str, str]:
    """Write each volume's files under ``root``; returns volume name -> host path to bind-mount.

    As a kubelet does (pkg/volume/util AtomicWriter, SetVolumeOwnership): the files of a Secret, ConfigMap,
    downward API or projected volume are root's, with the volume's ``defaultMode`` (0644 unless set); with an
    fsGroup they are of that group, and readable by it (mode | 0440, these volumes being read-only)."""
    paths: dict[str, str] = {}
    ns = pod["metadata"].get("namespace", "")
    fs = fs_group(pod)
    for v in (pod.get("spec") or {}).get("volumes") or []:
        path = os.path.join(root, "volumes", v["name"])
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o755)
        if "hostPath" in v:
            paths[v["name"]] = v["hostPath"]["path"]
            continue
        if "persistentVolumeClaim" in v:
            paths[v["name"]] = shared(f"{ns}-{v['persistentVolumeClaim']['claimName']}")
            continue
        if "emptyDir" in v:
            os.chmod(path, 0o777)
        files: dict[str, str] = {}
        mode = 0o644
        if "secret" in v:
            obj = lookup("secrets", v["secret"].get("secretName") or "")
            files = _items(_data(obj, True), v["secret"].get("items")) if obj else {}
            mode = v["secret"].get("defaultMode", 420)
        if "configMap" in v:
            obj = lookup("configmaps", v["configMap"].get("name") or "")
            files = _items(_data(obj, False), v["configMap"].get("items")) if obj else {}
            mode = v["configMap"].get("defaultMode", 420)
        for item in (v.get("downwardAPI") or {}).get("items") or []:
            if "fieldRef" in item:
                files[item["path"]] = field_ref(pod, item["fieldRef"]["fieldPath"])
        for s in (v.get("projected") or {}).get("sources") or []:
            if "serviceAccountToken" in s:
                files[s["serviceAccountToken"].get("path", "token")] = token()
            if "configMap" in s:
                name = s["configMap"].get("name") or ""
                obj = lookup("configmaps", name)
                data = _data(obj, False) if obj else {}
                if name == "kube-root-ca.crt":
                    data = {"ca.crt": ca_cert}
                files.update(_items(data, s["configMap"].get("items")))
            if "secret" in s:
                obj = lookup("secrets", s["secret"].get("name") or "")
                files.update(_items(_data(obj, True), s["secret"].get("items")) if obj else {})
            for item in (s.get("downwardAPI") or {}).get("items") or []:
                if "fieldRef" in item:
                    files[item["path"]] = field_ref(pod, item["fieldRef"]["fieldPath"])
            mode = (v.get("projected") or {}).get("defaultMode", 420)
        if any(k in v for k in WRITTEN):
            if fs is not None:
                mode |= 0o440
            os.chown(path, 0, fs if fs is not None else 0)
            os.chmod(path, 0o1777)  # a tmpfs's root, as ls shows a Secret volume's mount point
        for rel, text in files.items():
            _write(os.path.join(path, rel), text, mode, fs if fs is not None else 0)
        paths[v["name"]] = path
    return paths


def mounts(container: dict[str, Any], volumes: dict[str, str], read_only: set[str] | None = None
           ) -> list[tuple[str, str, bool]]:
    """(host path, container path, read-only) of the container's mounts; those of ``read_only`` volumes read-only."""
    out = []
    for m in container.get("volumeMounts") or []:
        host = volumes.get(m["name"])
        if host is None:
            continue
        if m.get("subPath"):
            host = os.path.join(host, m["subPath"])
        out.append((host, m["mountPath"], bool(m.get("readOnly")) or m["name"] in (read_only or set())))
    return out
