"""The cluster: API server, controllers, scheduler and kubelets on one event loop in a background thread.

Tests talk to it over HTTP with the official ``kubernetes`` client (:meth:`Cluster.client`) and drive the
world through its methods (add or change nodes, evict a pod, inject faults, drop watches, compact history).
Every method here may be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kube_model import certs
from kube_model.api import Api, DeleteOptions
from kube_model.apiserver import ApiServer, Fault, Request
from kube_model.config import NodeSpec, Timing
from kube_model.controllers import Autoscaler, GarbageCollector, NamespaceController, NodeGroup, QuotaController
from kube_model.errors import ApiError
from kube_model.events import Recorder
from kube_model.jobs import JobController
from kube_model.kubelet import Kubelet
from kube_model.meta import stamp
from kube_model.rbac import ADMIN, Authorizer, Tokens, User, service_account_user, system_user
from kube_model.resources import Registry
from kube_model.runtimes import Behaviour, DockerRuntime, SimImages, SimRuntime, default_behaviour
from kube_model.scheduler import Scheduler, node_object
from kube_model.store import Change, Store

log = logging.getLogger("kube_model")
SYSTEM = system_user("system:kube-model")
UNREACHABLE = "node.kubernetes.io/unreachable"


def _not_ready(pod: dict[str, Any]) -> None:
    """The node lifecycle controller's MarkPodsNotReady: the pod's Ready condition turns False."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") != "False":
            c.update(status="False", lastTransitionTime=stamp())


class Cluster:
    """A Kubernetes cluster model on 127.0.0.1.

    ``nodes``: the nodes (default: one Docker node ``node-1`` with 4 CPUs, 16Gi, 110 pods). ``timing``: component
    delays. ``anonymous``: whether requests without a token are served as ``system:anonymous`` (else 401).
    ``tls``: also serve HTTPS (pods use it through their in-cluster config). ``behaviour``: how containers on
    simulated nodes behave (see :class:`kube_model.runtimes.Script`).
    """

    def __init__(self, nodes: Iterable[NodeSpec] | None = None, *, timing: Timing | None = None,
                 anonymous: bool = True, tls: bool = True, behaviour: Behaviour | None = None,
                 history_limit: int = 200_000, namespaces: Iterable[str] = ()) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.timing = timing or Timing()
        self.anonymous = anonymous
        self.use_tls = tls
        self.behaviour: Behaviour = behaviour or default_behaviour
        self.initial_nodes = list(nodes) if nodes is not None else [NodeSpec("node-1")]
        self.initial_namespaces = ["default", "kube-system", "kube-public", *namespaces]
        self.workdir = tempfile.mkdtemp(prefix=f"kube-model-{self.id}-")
        os.chmod(self.workdir, 0o755)
        self.store = Store(history_limit=history_limit)
        self.registry = Registry()
        self.api = Api(self.store, self.registry)
        self.tokens = Tokens(self.store)
        self.authorizer = Authorizer(self.store)
        self.recorder = Recorder(self._create_event, self._bump_event, self.timing.event_aggregate_interval,
                                 self.timing.event_spam_refill, self.timing.event_series_refresh,
                                 self.timing.event_series_finish)
        self.sim_images = SimImages()
        self.kubelets: dict[str, Kubelet] = {}
        self.errors: list[str] = []
        self.admin_token = self.tokens.issue(ADMIN)
        self.ca_pem, self._cert, self._key = certs.self_signed(self.workdir)
        self.port = 0
        self.tls_port: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._docker: DockerRuntime | None = None
        self._sim: SimRuntime | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.server: ApiServer | None = None

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> Cluster:
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._main(ready))
            except BaseException as e:  # noqa: BLE001 - reported to start()
                failure.append(e)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name=f"kube-model-{self.id}", daemon=True)
        self._thread.start()
        ready.wait(60)
        if failure:
            raise RuntimeError(f"the cluster model did not start: {failure[0]!r}") from failure[0]
        return self

    async def _main(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        self.gc = GarbageCollector(self)
        self.namespace_controller = NamespaceController(self)
        self.jobs = JobController(self)
        self.quotas = QuotaController(self)
        self.scheduler = Scheduler(self)
        self.autoscaler = Autoscaler(self)
        self.store.listeners.append(self._dispatch)
        for ctl in (self.gc, self.namespace_controller, self.jobs, self.quotas, self.scheduler):
            self._tasks.append(asyncio.ensure_future(self._guard(ctl.run, type(ctl).__name__)))
        for name in self.initial_namespaces:
            self.api.create(self.registry.core("namespaces"), "", {"metadata": {"name": name}}, SYSTEM)
        self.api.create(self.registry.get("clusterroles.rbac.authorization.k8s.io"), "",
                        {"metadata": {"name": "cluster-admin"},
                         "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]}, SYSTEM)
        for spec in self.initial_nodes:
            self._add_node(spec)
        self.server = ApiServer(self)
        await self.server.start(self._cert, self._key)
        ready.set()
        await self._stop.wait()
        await self.server.stop()
        for kubelet in self.kubelets.values():
            for worker in list(kubelet.workers.values()):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(worker.cleanup(), 15)
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    async def _guard(self, fn: Callable[[], Any], name: str) -> None:
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            self.log_exception(name)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(60)
        for runtime in (self._docker, self._sim):
            if runtime is not None:
                with contextlib.suppress(Exception):
                    runtime.cleanup()
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def log_exception(self, where: str) -> None:
        text = f"{where}: {traceback.format_exc()}"
        self.errors.append(text)
        log.error("%s", text)

    # -- plumbing ---------------------------------------------------------------------------------------

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 30) -> Any:
        """Run ``fn(*args)`` on the model's loop (where the state lives) and return its result."""
        assert self.loop is not None
        if threading.current_thread() is self._thread:
            return fn(*args)

        async def go() -> Any:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result
        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(timeout)

    def _dispatch(self, change: Change) -> None:
        for ctl in (self.gc, self.namespace_controller, self.jobs, self.quotas, self.scheduler):
            ctl.on_change(change)
        if change.key == "pods":
            node = (change.obj.get("spec") or {}).get("nodeName")
            kubelet = self.kubelets.get(node or "")
            if kubelet is not None:
                kubelet.on_pod(change.obj, change.obj["metadata"]["uid"], change.type == "DELETED")

    def _create_event(self, event: dict[str, Any]) -> dict[str, Any]:
        ns = event["metadata"]["namespace"]
        if self.store.get("namespaces", "", ns) is None:
            return event
        try:
            return self.api.create(self.registry.core("events"), ns, event, SYSTEM).body
        except ApiError:
            return event

    def _bump_event(self, event: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any] | None:
        def edit(e: dict[str, Any]) -> None:
            e.update(changes)
        return self.api.mutate("events", event["metadata"]["namespace"], event["metadata"]["name"], edit)

    def runtime(self, kind: str) -> Any:
        if kind == "docker":
            if self._docker is None:
                self._docker = DockerRuntime(self.id)
            return self._docker
        if self._sim is None:
            self._sim = SimRuntime(self.sim_images, lambda: self.behaviour, os.path.join(self.workdir, "sim"))
        return self._sim

    def shared_dir(self, name: str) -> str:
        path = os.path.join(self.workdir, "pvc", name)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o777)
        return path

    def after_scheduling(self, unschedulable: list[dict[str, Any]]) -> None:
        self.autoscaler.consider(unschedulable)

    # -- nodes ------------------------------------------------------------------------------------------

    def _add_node(self, spec: NodeSpec) -> None:
        node = node_object(spec)
        status = node.pop("status")
        self.api.create(self.registry.core("nodes"), "", node, SYSTEM)
        self.api.mutate("nodes", "", spec.name, lambda n: n.__setitem__("status", status))
        self.kubelets[spec.name] = Kubelet(self, spec, self.runtime(spec.runtime))

    def add_node(self, spec: NodeSpec) -> None:
        """A new node joins (a scale-up): Unschedulable pods that fit get scheduled."""
        self.call(self._add_node, spec)

    def update_node(self, name: str, **changes: Any) -> None:
        """Change a node (cpu, memory, pods, labels, taints, unschedulable, reserved, late_taints, sandbox_error)."""
        def go() -> None:
            kubelet = self.kubelets[name]
            for k, v in changes.items():
                setattr(kubelet.node, k, v)
            fresh = node_object(kubelet.node)

            def edit(n: dict[str, Any]) -> None:
                n["metadata"]["labels"] = fresh["metadata"]["labels"]
                n["spec"] = fresh["spec"]
                n["status"]["capacity"] = fresh["status"]["capacity"]
                n["status"]["allocatable"] = fresh["status"]["allocatable"]
            self.api.mutate("nodes", "", name, edit)
        self.call(go)

    def autoscale(self, template: NodeSpec, max_nodes: int = 10) -> None:
        """Add nodes like ``template`` (named ``<template.name>-<n>``) while pods are Unschedulable."""
        self.call(lambda: self.autoscaler.groups.append(NodeGroup(template, max_nodes)))

    # -- the world --------------------------------------------------------------------------------------

    def evict(self, namespace: str, pod: str, message: str | None = None, grace: int = 0) -> None:
        """Node-pressure eviction of a running pod by its kubelet (DisruptionTarget, phase Failed, Evicted)."""
        message = message or ("The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. "
                              "Container worker was using 1200Mi, request is 0, has larger consumption of memory. ")

        async def go() -> None:
            obj = self.store.get("pods", namespace, pod)
            if obj is None:
                raise LookupError(f"pod {namespace}/{pod} not found")
            kubelet = self.kubelets.get((obj.get("spec") or {}).get("nodeName") or "")
            worker = kubelet.workers.get(obj["metadata"]["uid"]) if kubelet else None
            if worker is None:
                raise LookupError(f"pod {namespace}/{pod} is not running on a node")
            await worker.evict(message, grace)
        self.call(go, timeout=120)

    def lose_node(self, name: str, evict_after: float = 0.5) -> None:
        """The node is cut off (powered off, partitioned): its kubelet stops reporting and hears nothing more. The
        node lifecycle controller marks the node Ready Unknown and taints it ``node.kubernetes.io/unreachable``
        (NoSchedule, NoExecute) and its pods not Ready; ``evict_after`` seconds later (standing for the 300 s
        ``tolerationSeconds`` that the DefaultTolerationSeconds admission plugin gives pods) the taint eviction
        controller adds DisruptionTarget (DeletionByTaintManager) to each pod and deletes it gracefully. No kubelet
        confirms: the pods stay Terminating (https://kubernetes.io/docs/concepts/scheduling-eviction/
        taint-and-toleration/#taint-based-evictions; pkg/controller/tainteviction/taint_eviction.go)."""
        def go() -> None:
            kubelet = self.kubelets[name]
            kubelet.lost = True
            added = stamp()
            taints = [{"key": UNREACHABLE, "effect": effect, "timeAdded": added}
                      for effect in ("NoSchedule", "NoExecute")]
            kubelet.node.taints = [*kubelet.node.taints, *taints]

            def unknown(n: dict[str, Any]) -> None:
                n.setdefault("spec", {})["taints"] = [*(n["spec"].get("taints") or []), *taints]
                for c in (n.get("status") or {}).get("conditions") or []:
                    if c.get("type") == "Ready":
                        c.update(status="Unknown", reason="NodeStatusUnknown", lastTransitionTime=added,
                                 message="Kubelet stopped posting node status.")
            self.api.mutate("nodes", "", name, unknown)
            pods = [p for p in self.store.items("pods", None) if (p.get("spec") or {}).get("nodeName") == name
                    and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
            for p in pods:
                self.api.mutate("pods", p["metadata"]["namespace"], p["metadata"]["name"], _not_ready)
            asyncio.get_running_loop().call_later(evict_after, self._taint_evict, [
                (p["metadata"]["namespace"], p["metadata"]["name"], p["metadata"]["uid"]) for p in pods])
        self.call(go)

    def _taint_evict(self, pods: list[tuple[str, str, str]]) -> None:
        user = system_user("system:serviceaccount:kube-system:node-controller")
        for ns, name, uid in pods:
            obj = self.store.get("pods", ns, name)
            if obj is None or obj["metadata"]["uid"] != uid or obj["metadata"].get("deletionTimestamp"):
                continue

            def disrupt(p: dict[str, Any]) -> None:
                conds = [c for c in (p.get("status") or {}).get("conditions") or []
                         if c.get("type") != "DisruptionTarget"]
                conds.append({"type": "DisruptionTarget", "status": "True", "lastProbeTime": None,
                              "lastTransitionTime": stamp(), "reason": "DeletionByTaintManager",
                              "message": "Taint manager: deleting due to NoExecute taint"})
                p.setdefault("status", {})["conditions"] = conds
            self.api.mutate("pods", ns, name, disrupt)
            with contextlib.suppress(ApiError):
                self.api.delete(self.registry.core("pods"), ns, name, DeleteOptions(uid=uid), user)
            self.recorder.legacy(obj, "Normal", "TaintManagerEviction", f"Marking for deletion Pod {ns}/{name}",
                                 "taint-eviction-controller")

    def fail(self, status: int = 500, *, verb: str | None = None, resource: str | None = None,
             path: str | None = None, user: str | None = None, times: int | None = 1, seconds: float | None = None,
             retry_after: int | None = None, message: str | None = None, reason: str | None = None,
             drop: bool = False) -> Fault:
        """Answer matching requests with ``status`` (or drop their connection) ``times`` times (None: until
        :meth:`clear_faults`, or for ``seconds``). A 429 without ``message`` or ``reason`` is API Priority and
        Fairness's: its text in text/plain, ``Retry-After`` (1 unless given). ``resource`` is a plural, optionally with
        a subresource (``pods/log``); ``user`` matches the authenticated user name (substring); ``path`` is a
        regex."""
        fault = Fault(status, verb, resource, path, user, times, seconds, retry_after, message, reason, drop)
        self.call(lambda: self.server.faults.append(fault))  # type: ignore[union-attr]
        return fault

    def clear_faults(self) -> None:
        self.call(lambda: self.server.faults.clear())  # type: ignore[union-attr]

    def drop_watches(self, abrupt: bool = False) -> int:
        """End every open watch stream (an API server restart); ``abrupt`` closes the connections mid-stream."""
        return self.call(lambda: self.server.drop_watches(abrupt))  # type: ignore[union-attr]

    def watch_error(self, code: int = 410, message: str | None = None) -> int:
        """Send an ERROR event with a Status of ``code`` on every open watch, then end them."""
        return self.call(lambda: self.server.watch_error(code, message))  # type: ignore[union-attr]

    def compact(self) -> int:
        """Forget the change history (etcd compaction): older watches and continue tokens get 410 Gone."""
        return self.call(self.store.compact)

    def gone_as_http(self, on: bool = True) -> None:
        """Answer watches from a compacted resourceVersion with an HTTP 410 instead of an in-stream ERROR event
        (what some API servers and proxies do)."""
        self.call(lambda: setattr(self.server, "watch_gone_http", on))

    def bookmark(self) -> None:
        """Send a BOOKMARK now on every watch that asked for them."""
        self.call(lambda: self.server.send_bookmarks())  # type: ignore[union-attr]

    @property
    def requests(self) -> list[Request]:
        """Every HTTP request served, in order (a copy)."""
        return list(self.server.requests) if self.server else []

    def calls(self, *, user: str | None = None, verb: str | None = None, resource: str | None = None,
              agent: str | None = None) -> list[Request]:
        return [r for r in self.requests if (user is None or r.user == user) and (verb is None or r.verb == verb)
                and (resource is None or r.resource_path == resource) and (agent is None or agent in r.agent)]

    # -- identities and clients -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    def token(self, service_account: str | None = None, *, user: str | None = None,
              groups: Iterable[str] = ()) -> str:
        """A bearer token: for ``namespace/name`` of a ServiceAccount, or for a plain ``user`` (with groups);
        neither: the admin's."""
        if service_account:
            ns, _, name = service_account.partition("/")
            return self.call(self.tokens.issue_for_account, ns, name)
        if user:
            return self.call(self.tokens.issue, User(user, (*groups, "system:authenticated")))
        return self.admin_token

    def proxy(self, service_account: str | None = None) -> str:
        """A URL that needs no credentials, like ``kubectl proxy``: its requests act as ``namespace/name`` of a
        ServiceAccount (default: the admin). For code that takes a bare API URL (SEMATIC_K8S_KUBE_HOST)."""
        token = self.token(service_account)
        port = self.call(lambda: self.server.add_proxy(token))  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    def user_of(self, service_account: str) -> str:
        ns, _, name = service_account.partition("/")
        return service_account_user(ns, name).name

    def client(self, service_account: str | None = None, *, token: str | None = None, https: bool = False,
               anonymous: bool = False) -> Any:
        """An official ``kubernetes.client.ApiClient`` for this cluster: as the admin, as ``namespace/name`` of a
        ServiceAccount, with a given ``token``, or ``anonymous``."""
        from kubernetes import client

        config = client.Configuration(host=self.https_url if https else self.url)
        if https:
            config.ssl_ca_cert = os.path.join(self.workdir, "ca.crt")
        if not anonymous:
            config.api_key = {"authorization": token or self.token(service_account)}
            config.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(config)

    def client_with_role(self, namespace: str, name: str, rules: list[dict[str, Any]]) -> Any:
        """A client acting as ServiceAccount ``name`` of ``namespace``, made with a Role of ``rules`` bound to it."""
        self.apply([
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
             "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}], namespace=namespace)
        return self.client(f"{namespace}/{name}")

    def kubeconfig(self, path: str, service_account: str | None = None, namespace: str = "default") -> str:
        """Write a kubeconfig for ``load_kube_config`` (admin unless a ServiceAccount is given)."""
        import yaml

        doc = {"apiVersion": "v1", "kind": "Config", "current-context": "kube-model",
               "clusters": [{"name": "kube-model", "cluster": {"server": self.https_url,
                                                               "certificate-authority": os.path.join(self.workdir,
                                                                                                     "ca.crt")}}],
               "users": [{"name": "kube-model", "user": {"token": self.token(service_account)}}],
               "contexts": [{"name": "kube-model", "context": {"cluster": "kube-model", "user": "kube-model",
                                                               "namespace": namespace}}]}
        with open(path, "w") as f:
            yaml.safe_dump(doc, f)
        return path

    # -- setup helpers ----------------------------------------------------------------------------------

    def apply(self, objects: Iterable[dict[str, Any]], namespace: str = "default") -> list[dict[str, Any]]:
        """Create manifests as the admin (e.g. a rendered Helm chart); returns the stored objects."""
        def go() -> list[dict[str, Any]]:
            out = []
            for obj in objects:
                rt = self.registry.of(obj.get("apiVersion", ""), obj.get("kind", ""))
                if rt is None:
                    raise LookupError(f"the cluster model does not serve {obj.get('apiVersion')} {obj.get('kind')}")
                ns = (obj.get("metadata") or {}).get("namespace") or namespace if rt.namespaced else ""
                if rt.namespaced and self.store.get("namespaces", "", ns) is None:
                    self.api.create(self.registry.core("namespaces"), "", {"metadata": {"name": ns}}, SYSTEM)
                out.append(self.api.create(rt, ns, copy.deepcopy(obj), ADMIN).body)
            return out
        return self.call(go)

    def inject_sidecar(self, container: dict[str, Any], *, native: bool = False,
                       label: str = "istio-injection") -> None:
        """A mutating webhook (like Istio's injector): pods created in namespaces labelled ``<label>=enabled`` get
        ``container`` added, as a classic sidecar (another container) or a native one (an init container with
        ``restartPolicy: Always``, https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/)."""
        def mutate(pod: dict[str, Any], namespace: dict[str, Any] | None) -> None:
            labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
            if labels.get(label) != "enabled":
                return
            spec = pod.setdefault("spec", {})
            added = copy.deepcopy(container)
            from kube_model import defaults

            defaults.container(added)
            if native:
                added["restartPolicy"] = "Always"
                spec.setdefault("initContainers", []).insert(0, added)
            else:
                spec.setdefault("containers", []).append(added)
        self.call(lambda: self.api.pod_mutations.append(mutate))

    def mutate_pods(self, mutate: Callable[[dict[str, Any], dict[str, Any] | None], None]) -> None:
        """A mutating admission webhook (a policy engine's, e.g. one that gives every pod an
        ``activeDeadlineSeconds``): ``mutate(pod, its namespace)`` edits each pod before it is stored."""
        self.call(lambda: self.api.pod_mutations.append(mutate))

    def namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """Create a namespace (with labels, e.g. Pod Security ones) and wait for its default ServiceAccount."""
        def go() -> None:
            self.api.create(self.registry.core("namespaces"), "", {"metadata": {"name": name,
                                                                                "labels": labels or {}}}, ADMIN)
            self.namespace_controller.sync(name)
        self.call(go)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A deep copy of a stored object (``kind`` is a store key: pods, jobs.batch, events...)."""
        return self.call(lambda: copy.deepcopy(self.store.get(kind, namespace, name)))

    def list(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.call(lambda: copy.deepcopy(list(self.store.items(kind, namespace))))

    def history(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
        """Every stored version of one object, oldest first (from the change history: since the last compaction)."""
        return self.call(lambda: [copy.deepcopy(c.obj) for c in self.store.history
                                  if c.key == kind and c.namespace == namespace and c.name == name])

    def events(self, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
        """core/v1 Events in ``namespace`` (about the object ``name`` when given), oldest first."""
        items = [e for e in self.list("events", namespace)
                 if name is None or (e.get("involvedObject") or {}).get("name") == name]
        return sorted(items, key=lambda e: int(e["metadata"]["resourceVersion"]))

    def delete(self, kind: str, namespace: str, name: str, propagation: str | None = None) -> None:
        def go() -> None:
            self.api.delete(self.registry.get(kind), namespace, name, DeleteOptions(propagation=propagation), ADMIN)
        self.call(go)

    def wait(self, predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02,
             message: str = "condition") -> Any:
        """Poll ``predicate`` until it returns something true (test helper; not a timing assertion)."""
        from waiting import wait_for

        return wait_for(predicate, timeout=timeout, interval=interval, what=message)


@contextlib.contextmanager
def running(*args: Any, **kwargs: Any) -> Iterator[Cluster]:
    cluster = Cluster(*args, **kwargs).start()
    try:
        yield cluster
    finally:
        cluster.stop()
