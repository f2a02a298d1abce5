"""A Kubernetes API stand-in on 127.0.0.1 for the *sync* ``kubernetes`` client: kmock 0.8 plus what the
executor's tests need, and a fake Job controller.

Over stock kmock, :class:`K8sEmulator`:
- fills metadata on create (namespace, uid, creationTimestamp, generateName) and gives every change a
  new resourceVersion (creates, patches incl. ``/status``, deletes);
- applies equality label selectors (``a=b,a!=b,a,!a``) on list and watch; lists carry ``kind`` and the
  current resourceVersion;
- serves watches with real resourceVersion semantics: without one, ADDED for what exists and then every
  change; with one, every change after it, or an ERROR event 410 Gone when it was compacted away
  (:meth:`compact`); ``timeoutSeconds`` ends the stream; :meth:`drop_watches` ends every open stream;
- serves pod logs from :attr:`pod_logs` (``tailLines`` honoured);
- injects faults (:meth:`fail`: status, count, headers, e.g. 429 with Retry-After) before any state change;
- records every call (:attr:`calls`, with the client's User-Agent, so test machinery can be told apart).

:class:`FakeJobController` plays the Job controller and the kubelet: for each new Job it creates the
pod (named ``<job>-xxxxx``, owned by the Job, with the Job controller's labels) and runs a behaviour that
moves the pod through its phases by patching ``/status``; deleting a Job deletes its pods (the garbage
collector's part).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import copy
import datetime
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import kmock
from kmock._internal import enums

FAKE_CONTROLLER_AGENT = "fake-controller"


def label_match(labels: dict, selector: str | None) -> bool:
    """Equality-based label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, comma-separated."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            ok = labels.get(k.strip()) != v.strip()
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            ok = labels.get(k.strip()) == v.strip()
        elif term.startswith("!"):
            ok = term[1:] not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


@dataclass
class Call:
    method: str
    path: str
    action: str | None
    params: dict[str, str]
    agent: str


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    headers: dict[str, str] = field(default_factory=dict)
    hits: int = 0


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "code": code,
            "reason": reason, "message": message}


class K8sEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with resourceVersions, selectors, watch resumption, logs, faults and a call log."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.rv = 0
        self.log: list[tuple[int, Any, str | None, dict[str, Any]]] = []  # (rv, resource, namespace, event)
        self.log_base = 0  # index of log[0] among all events ever (compaction drops a prefix)
        self.compacted_rv = 0
        self.generation = 0  # drop_watches() bumps it: open streams end
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.pod_logs: dict[tuple[str, str], str] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._mut: asyncio.Lock | None = None
        self._cond: asyncio.Condition | None = None
        self._faults_lock = threading.Lock()

    # -- test-side controls (any thread) ----------------------------------------------------------

    def fail(self, method: str, path: str, status: int, times: int = 1, headers: dict[str, str] | None = None
             ) -> Fault:
        """Answer the next ``times`` requests ``method`` ``path`` (a regex searched in the URL path) with
        ``status``, changing nothing."""
        fault = Fault(method.upper(), re.compile(path), status, times, dict(headers or {}))
        with self._faults_lock:
            self.faults.append(fault)
        return fault

    def _run(self, coro: Any) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def drop_watches(self) -> None:
        """End every open watch stream (as an API server restart or a load balancer would)."""
        async def kick() -> None:
            self.generation += 1
            async with self._condition():
                self._condition().notify_all()
        self._run(kick())

    def compact(self) -> int:
        """Forget the change history (as etcd compaction does): resuming from an older resourceVersion
        gets 410 Gone. Returns the compacted resourceVersion."""
        async def go() -> int:
            async with self._mutation():
                self.log_base += len(self.log)
                self.log = []
                self.compacted_rv = self.rv
            async with self._condition():
                self._condition().notify_all()
            return self.compacted_rv
        return self._run(go())

    def agent_calls(self, exclude: str = FAKE_CONTROLLER_AGENT) -> list[Call]:
        """Calls made by clients other than the test machinery (the fake controller)."""
        return [c for c in list(self.calls) if exclude not in c.agent]

    # -- request handling -------------------------------------------------------------------------

    def _mutation(self) -> asyncio.Lock:
        if self._mut is None:
            self._mut = asyncio.Lock()
        return self._mut

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        # kmock matches each request against its reactions by scanning every request it ever got (quadratic
        # over a fan-out): keep only the requests in flight there (the call log below is the history).
        try:
            return await self._handle_one(request)
        finally:
            for i in range(len(self._requests) - 1, -1, -1):
                if self._requests[i] is request:
                    del self._requests[i]
                    break

    async def _handle_one(self, request: Any) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        agent = raw.headers.get("User-Agent", "") if raw is not None else ""
        path = request.url.path
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        self.calls.append(Call(method, path, request.action.value if request.action else None,
                               dict(request.params), agent))
        with self._faults_lock:
            fault = next((f for f in self.faults if f.hits < f.times and f.method == method
                          and f.path.search(path)), None)
            if fault is not None:
                fault.hits += 1
        if fault is not None:
            resp = aiohttp.web.json_response(_status(fault.status, "Injected", f"injected {fault.status}"),
                                             status=fault.status)
            resp.headers.update(fault.headers)
            return resp
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", path)
        if m and method == "GET":
            return self._serve_log(m.group(1), m.group(2), request.params)
        if request.resource is None or request.action not in (enums.action.CREATE, enums.action.UPDATE,
                                                              enums.action.DELETE):
            return await super()._handle(request)
        async with self._mutation():  # one change at a time: resourceVersions follow the event order
            return await self._change(request)

    async def _change(self, request: Any) -> aiohttp.web.StreamResponse:
        rv = self._next_rv()
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)
            if request.namespace:
                meta.setdefault("namespace", request.namespace)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["resourceVersion"] = rv
            name, namespace = meta.get("name"), meta.get("namespace")
        else:
            name, namespace = request.name, request.namespace
            if request.action == enums.action.UPDATE:
                if isinstance(request.data, dict):
                    request.data.setdefault("metadata", {})["resourceVersion"] = rv
                elif isinstance(request.data, list):
                    request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": rv})
            elif request.action == enums.action.DELETE:
                key = (request.resource, namespace, name)
                if key in self.objects and not self.objects[key].deleted:
                    self.objects[key].patch({"metadata": {"resourceVersion": rv}})
        response = await super()._handle(request)
        if name is None or response.status >= 400:
            return response
        key = (request.resource, namespace, name)
        obj = self.objects[key]
        kind = {enums.action.CREATE: "ADDED", enums.action.UPDATE: "MODIFIED"}.get(request.action, "DELETED")
        raw = obj.last.raw if obj.deleted else obj.raw
        self.log.append((int(rv), request.resource, namespace, {"type": kind, "object": copy.deepcopy(raw)}))
        async with self._condition():
            self._condition().notify_all()
        return response

    def _KubernetesEmulator__get_objs(self, request: Any, strict: bool) -> list[Any]:
        """kmock scans every object to find one by name; look it up by key instead (a fan-out has thousands)."""
        if request.name is not None and request.namespace is not None and request.resource is not None:
            key = (request.resource, request.namespace, request.name)
            return [self.objects[key]] if key in self.objects else []
        return [o for (r, ns, n), o in self.objects.items() if r == request.resource
                and (ns == request.namespace if strict else request.namespace is None or ns == request.namespace)
                and (request.name is None or n == request.name)]

    def _serve_log(self, namespace: str, pod: str, params: Any) -> aiohttp.web.StreamResponse:
        text = self.pod_logs.get((namespace, pod))
        if text is None:
            exists = any(r.plural == "pods" and ns == namespace and n == pod and not o.deleted
                         for (r, ns, n), o in list(self.objects.items()))
            if not exists:
                return aiohttp.web.json_response(_status(404, "NotFound", f'pods "{pod}" not found'), status=404)
            text = ""
        tail = params.get("tailLines")
        if tail:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(tail):])
        return aiohttp.web.Response(text=text, content_type="text/plain")

    async def _serve_list(self, request: Any) -> Any:
        async with self._mutation():
            result = await super()._serve_list(request)
            rv = str(self.rv)
        sel = request.params.get("labelSelector")
        items = [o for o in result["items"] if label_match((o.get("metadata") or {}).get("labels") or {}, sel)]
        return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": rv}, "items": items}

    def _matches(self, request: Any, resource: Any, namespace: str | None, obj: dict[str, Any]) -> bool:
        if resource != request.resource:
            return False
        if request.namespace is not None and namespace != request.namespace:
            return False
        return label_match((obj.get("metadata") or {}).get("labels") or {}, request.params.get("labelSelector"))

    async def _serve_watch(self, request: Any) -> Any:
        yield b""  # send the headers now
        loop = asyncio.get_running_loop()
        timeout = request.params.get("timeoutSeconds")
        deadline = loop.time() + float(timeout) if timeout else None
        generation = self.generation
        since = request.params.get("resourceVersion")
        if since in (None, "", "0"):
            async with self._mutation():
                snapshot = [(ns, o.raw) for (r, ns, _), o in list(self.objects.items())
                            if r == request.resource and not o.deleted]
                pos = self.log_base + len(self.log)
            for ns, raw in snapshot:
                if self._matches(request, request.resource, ns, raw):
                    yield {"type": "ADDED", "object": copy.deepcopy(raw)}
        else:
            if int(since) < self.compacted_rv:
                yield {"type": "ERROR", "object": _status(410, "Expired", f"too old resource version: {since} "
                                                                           f"({self.compacted_rv})")}
                return
            pos = self.log_base + next((i for i, e in enumerate(self.log) if e[0] > int(since)), len(self.log))
        while True:
            if pos < self.log_base:  # compacted under an open stream
                yield {"type": "ERROR", "object": _status(410, "Expired", "too old resource version")}
                return
            while pos < self.log_base + len(self.log):
                _, resource, ns, event = self.log[pos - self.log_base]
                pos += 1
                if self._matches(request, resource, ns, event["object"]):
                    yield event
            if generation != self.generation:
                return
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return
            transport = request._raw_request.transport if request._raw_request is not None else None
            if transport is None or transport.is_closing():  # the client went away
                return
            async with self._condition():
                if pos == self.log_base + len(self.log) and generation == self.generation:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._condition().wait(), 1.0 if left is None else min(left, 1.0))


DISCOVERY = {"v1/pods": "Pod", "v1/configmaps": "ConfigMap", "v1/secrets": "Secret", "v1/services": "Service",
             "v1/serviceaccounts": "ServiceAccount", "v1/events": "Event", "batch/v1/jobs": "Job"}


@contextlib.contextmanager
def serve_k8s(host: str = "127.0.0.1", port: int | None = None) -> Iterator[tuple[K8sEmulator, str]]:
    """Yields (emulator, base_url). The emulator lives in its own event loop in a daemon thread."""
    loop, ready, box = asyncio.new_event_loop(), threading.Event(), {}

    async def main() -> None:
        box["stop"] = asyncio.Event()
        async with K8sEmulator() as emu, kmock.Server(emu, host=host, port=port) as srv:
            emu.loop = loop
            emu["get /version/"] << {"major": "1", "minor": "33", "gitVersion": "v1.33.0-kmock", "gitCommit": "0",
                                     "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                                     "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}
            for gvp, kind in DISCOVERY.items():
                emu.resources[gvp] = kmock.ResourceInfo(kind=kind, singular=kind.lower(), namespaced=True,
                                                        verbs={"create", "get", "list", "watch", "patch", "delete"})
            box["emu"], box["url"] = emu, str(srv.url).rstrip("/")
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("kmock did not start")
    try:
        yield box["emu"], box["url"]
    finally:
        with contextlib.suppress(Exception):
            box["emu"].drop_watches()  # else the server waits for open watch streams to time out
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(10)
        loop.close()


# -- the fake Job controller + kubelet -------------------------------------------------------------------


def terminated(exit_code: int, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    """A containerStatuses entry for a container that ended."""
    state = {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error"),
             "startedAt": _now(), "finishedAt": _now()}
    if message:
        state["message"] = message
    return {"name": "worker", "ready": False, "restartCount": 0, "image": "", "imageID": "",
            "state": {"terminated": state}}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"name": "worker", "ready": False, "restartCount": 0, "image": "", "imageID": "",
            "state": {"waiting": {"reason": reason, "message": message}}}


def running() -> dict[str, Any]:
    return {"name": "worker", "ready": True, "restartCount": 0, "image": "", "imageID": "",
            "state": {"running": {"startedAt": _now()}}}


@dataclass
class PodHandle:
    """What a behaviour gets: the Job, its pod, and ways to move the pod along."""

    controller: FakeJobController
    job: dict[str, Any]
    name: str
    namespace: str

    @property
    def labels(self) -> dict[str, str]:
        return ((self.job.get("spec") or {}).get("template", {}).get("metadata") or {}).get("labels") or {}

    @property
    def container(self) -> dict[str, Any]:
        return self.job["spec"]["template"]["spec"]["containers"][0]

    def status(self, **status: Any) -> None:
        """Patch the pod's ``/status`` (as the kubelet does)."""
        self.controller.core.patch_namespaced_pod_status(self.name, self.namespace, {"status": status})

    def run(self) -> None:
        self.status(phase="Running", containerStatuses=[running()], conditions=[
            {"type": "PodScheduled", "status": "True"}])

    def succeed(self) -> None:
        self.status(phase="Succeeded", containerStatuses=[terminated(0)])

    def fail(self, exit_code: int = 1, reason: str | None = None, pod_reason: str | None = None,
             message: str | None = None, conditions: list[dict[str, Any]] | None = None) -> None:
        status: dict[str, Any] = {"phase": "Failed", "containerStatuses": [terminated(exit_code, reason)]}
        if pod_reason:
            status["reason"] = pod_reason
        if message:
            status["message"] = message
        if conditions:
            status["conditions"] = conditions
        self.status(**status)

    def logs(self, text: str) -> None:
        self.controller.emu.pod_logs[(self.namespace, self.name)] = text

    def job_status(self, **status: Any) -> None:
        self.controller.batch.patch_namespaced_job_status(self.job["metadata"]["name"], self.namespace,
                                                          {"status": status})

    def env(self) -> dict[str, str]:
        """The container's env as the kubelet would give it: values, secretKeyRefs read from the API's
        Secrets, fieldRefs from the pod."""
        out: dict[str, str] = {}
        pod = self.controller.core.read_namespaced_pod(self.name, self.namespace)
        for var in self.container.get("env") or []:
            src = var.get("valueFrom")
            if src is None:
                out[var["name"]] = var.get("value", "")
            elif "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                try:
                    secret = self.controller.core.read_namespaced_secret(ref["name"], self.namespace)
                    value = (secret.data or {}).get(ref["key"])
                except Exception:  # noqa: BLE001
                    value = None
                if value is None:
                    if ref.get("optional"):
                        continue
                    raise LookupError(f"secret {ref['name']}/{ref['key']} not found")
                out[var["name"]] = base64.b64decode(value).decode()
            elif "fieldRef" in src:
                path = src["fieldRef"]["fieldPath"]
                m = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
                if m:
                    out[var["name"]] = (pod.metadata.labels or {}).get(m.group(1), "")
                else:
                    out[var["name"]] = {"metadata.namespace": pod.metadata.namespace,
                                        "metadata.name": pod.metadata.name}.get(path, "")
        return out


Behaviour = Callable[[PodHandle], None]


def succeed(pod: PodHandle) -> None:
    pod.run()
    pod.succeed()


class FakeJobController:
    """Watches Jobs; for each new one creates its pod and runs ``behaviour(pod)`` on a worker thread;
    deletes a Job's pods when the Job goes. ``pod_status``: the pod's initial status (e.g. a finished one,
    to make a fan-out cheap), else Pending. Only Jobs matching ``selector`` (default: workers) are run."""

    def __init__(self, emu: K8sEmulator, url: str, namespace: str, behaviour: Behaviour = succeed, *,
                 workers: int = 8, pod_status: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 selector: str = "sematic-k8s/role=worker") -> None:
        from kubernetes import client

        self.emu, self.namespace, self.behaviour, self.pod_status = emu, namespace, behaviour, pod_status
        self.selector = selector
        self.api = client.ApiClient(client.Configuration(host=url))
        self.api.user_agent = FAKE_CONTROLLER_AGENT
        self.core, self.batch = client.CoreV1Api(self.api), client.BatchV1Api(self.api)
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="fake-kubelet")
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, str] = {}  # job name -> pod name
        self.errors: list[BaseException] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="fake-controller")
        self.futures: list[concurrent.futures.Future] = []

    def __enter__(self) -> FakeJobController:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        self.emu.drop_watches()
        self.thread.join(10)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.api.close()

    def _run(self) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        rv = None
        while not self.stopped.is_set():
            kwargs: dict[str, Any] = {"watch": True, "_preload_content": False, "timeout_seconds": 5,
                                      "label_selector": self.selector}
            if rv:
                kwargs["resource_version"] = rv
            try:
                resp = self.batch.list_namespaced_job(self.namespace, **kwargs)
                for line in iter_resp_lines(resp):
                    if self.stopped.is_set():
                        return
                    ev = json.loads(line)
                    if ev["type"] == "ERROR":
                        rv = None
                        break
                    rv = ev["object"]["metadata"].get("resourceVersion") or rv
                    self._on_job(ev["type"], ev["object"])
            except Exception as e:  # noqa: BLE001 - the stand-in may be going away
                if self.stopped.is_set():
                    return
                self.errors.append(e)
                time.sleep(0.05)

    def _on_job(self, kind: str, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        if kind == "ADDED" and name not in self.jobs:
            self.jobs[name] = job
            pod = self._create_pod(job)
            if pod is not None:
                handle = PodHandle(self, job, pod, self.namespace)
                self.futures.append(self.pool.submit(self._behave, handle))
        elif kind == "DELETED":
            pod = self.pods.pop(name, None)
            if pod is not None:
                with contextlib.suppress(Exception):
                    self.core.delete_namespaced_pod(pod, self.namespace)

    def _create_pod(self, job: dict[str, Any]) -> str | None:
        name = job["metadata"]["name"]
        template = job["spec"]["template"]
        labels = {**(template.get("metadata") or {}).get("labels", {}), "batch.kubernetes.io/job-name": name,
                  "job-name": name, "batch.kubernetes.io/controller-uid": job["metadata"]["uid"],
                  "controller-uid": job["metadata"]["uid"]}
        pod_name = f"{name}-{secrets.token_hex(3)[:5]}"
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": self.namespace, "labels": labels,
                             "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                                  "uid": job["metadata"]["uid"], "controller": True}]},
                "spec": {**template["spec"], "nodeName": "node-1"},
                "status": self.pod_status(job) if self.pod_status else {"phase": "Pending"}}
        try:
            self.core.create_namespaced_pod(self.namespace, body, _preload_content=False)
        except Exception as e:  # noqa: BLE001
            self.errors.append(e)
            return None
        self.pods[name] = pod_name
        return pod_name

    def _behave(self, pod: PodHandle) -> None:
        try:
            self.behaviour(pod)
        except Exception as e:  # noqa: BLE001 - surfaced by the tests through .errors
            self.errors.append(e)
