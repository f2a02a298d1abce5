"""A Kubernetes cluster model for tests: an API server on 127.0.0.1 that the official ``kubernetes`` client talks
to over HTTP(S), with the control plane and kubelets behind it.

- :mod:`~kube_model.api`, :mod:`~kube_model.apiserver`: object semantics (metadata, defaulting, validation,
  admission, concurrency, finalizers, pagination) and HTTP (routing, RBAC, watches, logs, faults, request log).
- :mod:`~kube_model.rbac`, :mod:`~kube_model.admission`: tokens and RBAC; ServiceAccount, Pod Security and
  ResourceQuota admission.
- :mod:`~kube_model.jobs`, :mod:`~kube_model.controllers`, :mod:`~kube_model.scheduler`: the Job and TTL
  controllers, garbage collector, namespaces, quota status, autoscaler, scheduler.
- :mod:`~kube_model.kubelet`, :mod:`~kube_model.runtimes`, :mod:`~kube_model.podenv`: kubelets that run pods in
  Docker or simulate them, with real status shapes and Events.

Start one with ``with Cluster(nodes=[...]) as cluster:`` and talk to it with ``cluster.client()`` (admin) or
``cluster.client("ns/serviceaccount")``. Production code never imports this package.
"""

from kube_model.cluster import Cluster, running
from kube_model.config import NodeSpec, Timing
from kube_model.runtimes import Script, SimContext

__all__ = ["Cluster", "NodeSpec", "Script", "SimContext", "Timing", "running"]
