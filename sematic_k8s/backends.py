"""Backends by name: where each executor, storage and driver launcher lives, as ``"module:attribute"``.

A backend's module is imported only when it is asked for (so its extra dependencies, like boto3 or the
kubernetes client, are needed only when it is used). Adding a backend is one line in a table here.

- ``EXECUTORS``: where runs execute, by the name a DriverSpec gives (``executor="kubernetes"``); each is a
  class with ``from_spec(spec, storage, secret)`` (``secret``: what its workers' outcome keys derive from).
- ``STORAGES``: artifact storage by URL scheme (``s3://bucket/prefix``); each is a class with ``from_url(url)``.
- ``LAUNCHERS``: how a driver is started for a DriverSpec's executor; each is a function ``(spec, env, *,
  progress)`` (``progress``: told, in a line, what the start waits for; None: nothing to tell).
  Executors without a launcher of their own run their driver in a Docker container.
- ``DRIVER_WATCHES``: how a started driver is followed, by the same names; each is a class taking the spec.
"""

from __future__ import annotations

import importlib
from typing import Any

EXECUTORS = {
    "inline": "sematic_k8s.executors.inline:InlineExecutor",
    "process": "sematic_k8s.executors.process:ProcessExecutor",
    "docker": "sematic_k8s.executors.docker:DockerExecutor",
    "kubernetes": "sematic_k8s.executors.kubernetes:KubernetesExecutor",
}
STORAGES = {
    "file": "sematic_k8s.storage.local:LocalStorage",
    "s3": "sematic_k8s.storage.s3:S3Storage",
}
LAUNCHERS = {
    "docker": "sematic_k8s.launchers.docker:start_driver",
    "kubernetes": "sematic_k8s.launchers.kubernetes:start_driver",
}
DRIVER_WATCHES = {
    "docker": "sematic_k8s.launchers.docker:DriverContainer",
    "kubernetes": "sematic_k8s.launchers.kubernetes:DriverJob",
}
DEFAULT_LAUNCHER = "docker"


def load(table: dict[str, str], name: str) -> Any:
    """The object registered as ``name`` in ``table`` (importing its module); LookupError if there is none."""
    try:
        path = table[name]
    except KeyError:
        raise LookupError(name) from None
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
