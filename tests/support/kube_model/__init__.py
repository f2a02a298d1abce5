"""A Kubernetes cluster model for tests: an API server on 127.0.0.1 that the official ``kubernetes`` client talks
to over HTTP(S), with the control plane and kubelets behind it. Production code never imports this package.

- :mod:`~kube_model.api`, :mod:`~kube_model.apiserver`: object semantics (metadata, defaulting, validation,
  admission, concurrency, finalizers, pagination) and HTTP (routing, RBAC, watches, logs, faults, request log);
  :mod:`~kube_model.negotiation`: ``Accept`` (answers as objects or as their metadata only, 406 otherwise).
- :mod:`~kube_model.rbac`, :mod:`~kube_model.admission`, :mod:`~kube_model.limitranges`: tokens and RBAC;
  ServiceAccount, Pod Security and ResourceQuota admission; LimitRange (its defaults and refusals of pods).
- :mod:`~kube_model.quantity`, :mod:`~kube_model.canonical`: resource quantities as apimachinery parses and
  writes them; every quantity an object holds stored in that canonical form (``1000m`` read back as ``1``).
- :mod:`~kube_model.jobs`, :mod:`~kube_model.controllers`, :mod:`~kube_model.scheduler`: the Job and TTL
  controllers, garbage collector, namespaces, quota status, autoscaler, scheduler.
- :mod:`~kube_model.kubelet`, :mod:`~kube_model.runtimes`, :mod:`~kube_model.podenv`: kubelets that run pods in
  Docker or simulate them, with real status shapes and Events; :mod:`~kube_model.crilog`: a process container's log
  as containerd writes it (a copier a stream, one file in the CRI format) and as the kubelet reads it;
  :mod:`~kube_model.cutoff`: a func container's threads cut off from every side effect at its reported end.

Typical use::

    with Cluster([NodeSpec("node-1", runtime="sim", pods=200)], behaviour=lambda pod, c: Script(run=0.1)) as k:
        k.namespace("runs", {"pod-security.kubernetes.io/enforce": "restricted"})
        k.apply(rendered_chart_objects, namespace="runs")        # Roles, RoleBindings, ServiceAccounts...
        api = k.client("runs/sematic-k8s-driver")                 # an ApiClient authenticated as that account
        ...                                                       # drive the code under test with ``api``
        k.evict("runs", pod_name)                                 # the world changes: evictions, new nodes,
        k.update_node("node-1", reserved={"cpu": "3"})            # kubelet-only usage (OutOfcpu), faults
        k.lose_node("node-1")                                     # cut off: tainted, its pods Terminating
        k.fail(429, verb="create", resource="jobs", times=None, retry_after=1)
        assert len(k.calls(user=k.user_of("runs/sematic-k8s-driver"), verb="list")) == 2

``k.client()`` is the admin; ``k.proxy("ns/sa")`` is a credential-less URL acting as an account (like
``kubectl proxy``); pods on Docker nodes get a real ServiceAccount token, ``ca.crt`` and ``KUBERNETES_SERVICE_*``
so that in-cluster configuration reaches the model over HTTPS. Simulated containers follow a :class:`Script`
(chosen per pod and container by ``behaviour``), or run their command in a subprocess, or a function in-process.
"""

from kube_model.cluster import Cluster, running
from kube_model.config import NodeSpec, Timing
from kube_model.runtimes import Script, SimContext

__all__ = ["Cluster", "NodeSpec", "Script", "SimContext", "Timing", "running"]
