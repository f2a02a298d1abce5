"""The API server's HTTP side (aiohttp on 127.0.0.1): routing of ``/api`` and ``/apis`` paths, authentication
and RBAC for every request, discovery, watches, pod logs, subresources, fault injection and a request log.

Watches (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes): without
a resourceVersion (or "0") the current objects come first as ADDED, then every change; from a resourceVersion,
every change after it, or an in-stream ERROR event with a 410 Expired Status when it was compacted away;
``allowWatchBookmarks`` brings BOOKMARK events; ``timeoutSeconds`` ends the stream; label and field selectors
turn objects leaving or entering the selection into DELETED or ADDED events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from kube_model import podlogs, validation
from kube_model.api import DeleteOptions, ListOptions, Result
from kube_model.errors import (
    ApiError,
    Warnings,
    bad_request,
    gone,
    internal,
    method_not_supported,
    not_found,
    too_large,
    too_many_requests,
)
from kube_model.meta import fields_match, labels_match, parse_field_selector, parse_label_selector, stamp
from kube_model.negotiation import Target, negotiate, partial, transform
from kube_model.quantity import Number
from kube_model.rbac import Attributes, User
from kube_model.resources import REVIEWS, ResourceType
from kube_model.store import Change

if TYPE_CHECKING:
    from kube_model.cluster import Cluster

VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-kube-model", "gitCommit": "0" * 40,
           "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc",
           "platform": "linux/amd64"}
NOT_FOUND = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": "the server could not find the requested resource", "reason": "NotFound", "details": {},
             "code": 404}
EVICTING = "Eviction API: evicting"
MAX_REQUEST_BODY_BYTES = 3 * 1024 * 1024  # kube-apiserver's default (apiserver/pkg/server/config.go): larger is 413


@dataclass
class Request:
    """One served request, for assertions and counting (``user`` is the authenticated user name)."""

    seq: int
    at: float
    method: str
    path: str
    query: dict[str, str]
    agent: str
    user: str = ""
    verb: str = ""
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    status: int = 0
    kind: str = ""  # a list's answer: its kind (PartialObjectMetadataList when its metadata only was asked for)
    item_fields: frozenset[str] = frozenset()  # the fields of its items (data, spec, metadata ...), all together

    @property
    def resource_path(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    @property
    def quorum_list(self) -> bool:
        """A list served from storage (no resourceVersion): the expensive kind."""
        return self.verb == "list" and self.query.get("resourceVersion") in (None, "")


@dataclass
class Fault:
    status: int = 500
    verb: str | None = None
    resource: str | None = None
    path: str | None = None
    user: str | None = None
    times: int | None = 1
    seconds: float | None = None
    retry_after: int | None = None
    message: str | None = None
    reason: str | None = None
    drop: bool = False
    hits: int = 0
    created: float = field(default_factory=time.monotonic)

    def active(self) -> bool:
        if self.seconds is not None and time.monotonic() > self.created + self.seconds:
            return False
        return self.times is None or self.hits < self.times

    def matches(self, r: Request) -> bool:
        return (self.active() and (self.verb is None or self.verb == r.verb)
                and (self.resource is None or self.resource == r.resource_path)
                and (self.path is None or re.search(self.path, r.path) is not None)
                and (self.user is None or self.user in r.user))

    def error(self) -> ApiError:
        if self.status == 429 and self.message is None and self.reason is None:  # API Priority and Fairness
            return too_many_requests(self.retry_after if self.retry_after is not None else 1)
        reason = self.reason or {429: "TooManyRequests", 403: "Forbidden", 401: "Unauthorized", 404: "NotFound",
                                 409: "Conflict", 410: "Expired", 500: "InternalError", 503: "ServiceUnavailable",
                                 504: "Timeout"}.get(self.status, "InternalError")
        canned = {429: "Too many requests, please try again later.",
                  503: "the server is currently unable to handle the request",
                  504: "the server was unable to return a response in the time allotted",
                  500: "Internal error occurred: injected fault"}
        message = self.message or canned.get(self.status, f"injected {reason}")
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        details = {"retryAfterSeconds": self.retry_after} if self.retry_after is not None else None
        return ApiError(self.status, reason, message, details=details, headers=headers)


@dataclass
class Route:
    rt: ResourceType
    namespace: str | None
    name: str
    sub: str
    watch: bool


class WatchStream:
    """One open watch: a queue of store changes, filtered, written as JSON lines."""

    def __init__(self, server: ApiServer, request: web.Request, route: Route, query: dict[str, str],
                 target: Target) -> None:
        self.server, self.request, self.route, self.query, self.target = server, request, route, query, target
        self.queue: asyncio.Queue[Change | str] = asyncio.Queue()
        self.labels = parse_label_selector(query.get("labelSelector"))
        self.fields = parse_field_selector(query.get("fieldSelector"), set(route.rt.fields))
        self.bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        self.response: web.StreamResponse | None = None

    def listener(self, change: Change) -> None:
        ns = self.route.namespace
        if change.key == self.route.rt.key and (ns is None or change.namespace == ns):
            self.queue.put_nowait(change)

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        from kube_model.api import field_value

        return labels_match(self.labels, (obj.get("metadata") or {}).get("labels")) and (
            not self.fields or fields_match(self.fields, obj, field_value))

    def event_for(self, change: Change) -> dict[str, Any] | None:
        new_in, old_in = self.matches(change.obj), self.matches(change.old)
        kind = change.type
        if kind == "ADDED":
            kind = "ADDED" if new_in else ""
        elif kind == "MODIFIED":
            kind = "MODIFIED" if new_in and old_in else "ADDED" if new_in else "DELETED" if old_in else ""
        elif not (new_in or old_in):
            kind = ""
        if not kind:
            return None
        return {"type": kind, "object": self.view(change.obj)}

    def view(self, obj: dict[str, Any]) -> dict[str, Any]:
        """An object as this watch sends it: whole, or its metadata (``as=PartialObjectMetadata``)."""
        seen = self.server.cluster.api.view(self.route.rt, obj)
        return partial(seen, self.target) if self.target.kind == "PartialObjectMetadata" else seen

    async def write(self, event: dict[str, Any]) -> None:
        assert self.response is not None
        await self.response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")

    def bookmark(self, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(self.server.cluster.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"kind": self.route.rt.kind, "apiVersion": self.route.rt.api_version,
                                               "metadata": meta}}

    async def serve(self) -> web.StreamResponse:
        store = self.server.cluster.store
        rv = self.query.get("resourceVersion")
        initial = rv in (None, "", "0") or self.query.get("sendInitialEvents") == "true"
        backlog: list[dict[str, Any]] = []
        expired = False
        if not initial:
            try:
                since = int(rv)  # type: ignore[arg-type]
            except ValueError as e:
                raise bad_request(f'resourceVersion: Invalid value: "{rv}": must be an integer') from e
            if since < store.compacted:
                if self.server.watch_gone_http:
                    raise gone(f"too old resource version: {since} ({store.compacted})")
                expired = True
            else:
                for change in store.since(since):
                    if change.key == self.route.rt.key and (self.route.namespace is None
                                                            or change.namespace == self.route.namespace):
                        ev = self.event_for(change)
                        if ev:
                            backlog.append(ev)
        else:
            for obj in store.items(self.route.rt.key, self.route.namespace):
                if self.matches(obj):
                    backlog.append({"type": "ADDED", "object": self.view(obj)})
        if not expired:
            store.listeners.append(self.listener)
        self.response = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                                "Cache-Control": "no-cache, private"})
        self.response.enable_chunked_encoding()
        await self.response.prepare(self.request)
        try:
            if expired:
                await self.write({"type": "ERROR", "object": gone(
                    f"too old resource version: {rv} ({store.compacted})").status()})
                return self.response
            self.server.watches.add(self)
            for ev in backlog:
                await self.write(ev)
            if self.query.get("sendInitialEvents") == "true" and self.bookmarks:
                await self.write(self.bookmark(initial_end=True))
            await self.pump()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.server.watches.discard(self)
            with contextlib.suppress(ValueError):
                store.listeners.remove(self.listener)
        return self.response

    async def caught_up_bookmark(self) -> bool:
        """A BOOKMARK at the store's version, only when every change up to it went through this watch (none is
        queued): a bookmark says that all changes up to its resourceVersion were sent
        (https://kubernetes.io/docs/reference/using-api/api-concepts/#watch-bookmarks), and a client resumes from
        it. Whether one was written."""
        if not self.bookmarks or not self.queue.empty():
            return False
        await self.write(self.bookmark())
        return True

    async def pump(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.query.get("timeoutSeconds")
        deadline = loop.time() + (float(timeout) if timeout else self.server.cluster.timing.watch_timeout)
        interval = self.server.cluster.timing.bookmark_interval
        next_bookmark = loop.time() + interval
        while True:
            now = loop.time()
            if now >= deadline:
                await self.caught_up_bookmark()
                return
            wait = deadline - now
            if self.bookmarks:
                wait = min(wait, max(0.0, next_bookmark - now))
            try:  # what is queued first: a due bookmark (wait 0) waits for it to be sent
                item = self.queue.get_nowait() if not self.queue.empty() else await asyncio.wait_for(
                    self.queue.get(), wait)
            except asyncio.TimeoutError:
                if self.bookmarks and loop.time() >= next_bookmark and await self.caught_up_bookmark():
                    next_bookmark = loop.time() + interval
                continue
            if isinstance(item, str):
                if item == "stop":
                    return
                if item == "abort":
                    if self.request.transport is not None:
                        self.request.transport.abort()
                    return
                if item == "bookmark":
                    await self.caught_up_bookmark()
                    continue
                if item.startswith("error:"):
                    code, _, message = item[6:].partition(":")
                    err = gone(message) if code == "410" else ApiError(int(code), "InternalError", message)
                    await self.write({"type": "ERROR", "object": err.status()})
                    return
                continue
            ev = self.event_for(item)
            if ev:
                await self.write(ev)


class ApiServer:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.watches: set[WatchStream] = set()
        self.watch_gone_http = False
        self.runner: web.AppRunner | None = None
        self.proxies: dict[int, str] = {}  # local port -> the token every request there is sent with

    async def start(self, cert: str, key: str) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.cluster.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if self.cluster.use_tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            tls_site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
            await tls_site.start()
            self.cluster.tls_port = tls_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def add_proxy(self, token: str) -> int:
        """Another port where every request is authenticated with ``token`` (what ``kubectl proxy`` does)."""
        assert self.runner is not None
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.proxies[port] = token
        return port

    async def stop(self) -> None:
        self.drop_watches(False)
        if self.runner is not None:
            await self.runner.cleanup()

    # -- test controls ----------------------------------------------------------------------------------

    def drop_watches(self, abrupt: bool) -> int:
        for w in list(self.watches):
            w.queue.put_nowait("abort" if abrupt else "stop")
        return len(self.watches)

    def watch_error(self, code: int, message: str | None) -> int:
        for w in list(self.watches):
            w.queue.put_nowait(f"error:{code}:{message or 'too old resource version'}")
        return len(self.watches)

    def send_bookmarks(self) -> None:
        for w in list(self.watches):
            w.queue.put_nowait("bookmark")

    # -- requests ---------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        r = Request(len(self.requests), time.time(), request.method, request.path, query,
                    request.headers.get("User-Agent", ""))
        self.requests.append(r)
        warnings = Warnings()
        try:
            header = request.headers.get("Authorization")
            sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
            if sock and sock[1] in self.proxies:
                header = f"Bearer {self.proxies[sock[1]]}"
            user = self.cluster.tokens.authenticate(header, self.cluster.anonymous)
            r.user = user.name
            response = await self.route(request, r, user, query, warnings)
        except ApiError as e:
            if e.plain:  # Go's http.Error: the text, a newline, nosniff
                response = web.Response(text=e.message + "\n", status=e.code, content_type="text/plain",
                                        charset="utf-8", headers={"X-Content-Type-Options": "nosniff"})
            else:
                response = web.json_response(e.status(), status=e.code)
            for k, v in e.headers.items():
                response.headers[k] = v
        except _Dropped:
            r.status = 0
            return web.Response(status=500)  # never sent: the connection is gone
        except json.JSONDecodeError as e:
            err = bad_request(f"the server rejected our request due to an error in our request: {e}")
            response = web.json_response(err.status(), status=400)
        except Exception as e:  # noqa: BLE001 - a bug in the model: a 500 the test will see
            self.cluster.log_exception(f"{request.method} {request.path}")
            err = internal(f"{type(e).__name__}: {e}")
            response = web.json_response(err.status(), status=500)
        r.status = response.status
        if not response.prepared:
            response.headers["Audit-Id"] = str(uuid.uuid4())
            for w in warnings.items:
                quoted = w.replace("\\", "\\\\").replace('"', '\\"')  # apimachinery's NewWarningHeader
                response.headers.add("Warning", f'299 - "{quoted}"')
        return response

    def _fault(self, r: Request, request: web.Request) -> None:
        for fault in self.faults:
            if fault.matches(r):
                fault.hits += 1
                if fault.drop:
                    if request.transport is not None:
                        request.transport.abort()
                    raise _Dropped()
                raise fault.error()

    def parse(self, path: str) -> Route | dict[str, Any] | str:
        """A resource Route, a discovery document, or a non-resource path."""
        parts = [p for p in path.split("/") if p]
        reg = self.cluster.registry
        if not parts:
            return {"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]}
        if parts[0] == "api":
            if len(parts) == 1:
                return reg.api_versions()
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis":
            if len(parts) == 1:
                return reg.group_list()
            if len(parts) == 2:
                if parts[1] not in reg.groups():
                    raise ApiError(404, "NotFound", NOT_FOUND["message"], details={})
                return reg.group_doc(parts[1])
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return "/" + "/".join(parts)
        if not rest:
            doc = reg.resource_list(group, version)
            if doc is None:
                raise ApiError(404, "NotFound", NOT_FOUND["message"], details={})
            return doc
        watch = False
        if rest[0] == "watch":
            watch, rest = True, rest[1:]
        namespace = None
        if rest and rest[0] == "namespaces" and len(rest) >= 3:
            inner = reg.find(group, version, rest[2])
            if inner is not None and inner.namespaced:
                namespace, rest = rest[1], rest[2:]
        rt = reg.find(group, version, rest[0]) if rest else None
        if rt is None or len(rest) > 3 or (namespace is not None and not rt.namespaced):
            raise ApiError(404, "NotFound", NOT_FOUND["message"], details={})
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if sub and sub not in rt.subresources:
            raise ApiError(404, "NotFound", NOT_FOUND["message"], details={})
        if rt.namespaced and namespace is None and name:
            raise ApiError(404, "NotFound", NOT_FOUND["message"], details={})
        return Route(rt, namespace if rt.namespaced else None, name, sub, watch)

    async def route(self, request: web.Request, r: Request, user: User, query: dict[str, str],
                    warnings: Warnings) -> web.StreamResponse:
        parsed = self.parse(request.path)
        if isinstance(parsed, dict) or isinstance(parsed, str):
            r.verb = request.method.lower()
            self._fault(r, request)
            path = "/" + "/".join(p for p in request.path.split("/") if p)
            self.cluster.authorizer.check(Attributes(user, r.verb, path=path))
            if isinstance(parsed, dict):
                return web.json_response(parsed)
            if parsed == "/version":
                return web.json_response(VERSION)
            if parsed in ("/healthz", "/livez", "/readyz"):
                return web.Response(text="ok")
            raise ApiError(404, "NotFound", NOT_FOUND["message"], details={})
        route = parsed
        rt = route.rt
        method = request.method
        if method == "GET":
            if route.sub or route.name:
                verb = "get"
            else:
                verb = "watch" if route.watch or query.get("watch") in ("true", "1") else "list"
        elif method == "POST":
            if route.name and not route.sub:
                raise method_not_supported(rt.err, "create")
            verb = "create"
        elif method == "PUT":
            verb = "update"
        elif method == "PATCH":
            verb = "patch"
        elif method == "DELETE":
            verb = "delete" if route.name else "deletecollection"
        else:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if verb not in rt.verbs and not route.sub:
            raise method_not_supported(rt.err, verb)
        r.verb, r.group, r.resource, r.subresource = verb, rt.group, rt.plural, route.sub
        r.namespace, r.name = route.namespace or "", route.name
        self._fault(r, request)
        self.cluster.authorizer.check(Attributes(user, verb, rt.group, rt.plural, route.sub, route.namespace or "",
                                                 route.name))
        api = self.cluster.api
        ns = route.namespace or ""
        dry = query.get("dryRun") == "All"
        # the answer's form (a pod's log is text, negotiated apart); the calls that change objects answer JSON here
        target = negotiate(request.headers.get("Accept")) if verb in ("list", "watch", "get") and route.sub != "log" \
            else Target()
        if verb in ("list", "watch", "deletecollection"):
            validation.list_options(query, watch=verb == "watch")
        if verb == "watch":
            if target.kind == "PartialObjectMetadataList":  # each event's object is not a list: 406
                transform({"kind": rt.kind}, target, is_list=False, group=rt.group)
            return await WatchStream(self, request, route, query, target).serve()
        if verb == "list":
            listed = api.list(rt, route.namespace, ListOptions(
                query.get("labelSelector"), query.get("fieldSelector"),
                int(query["limit"]) if query.get("limit") else None, query.get("continue") or None,
                query.get("resourceVersion"), query.get("resourceVersionMatch")))
            listed.body = transform(listed.body, target, is_list=True, group=rt.group)
            r.kind = str(listed.body.get("kind"))
            r.item_fields = frozenset(k for item in listed.body.get("items") or [] for k in item)
            return self._json(listed)
        if verb == "get":
            if route.sub == "log":
                return await self.logs(route, query)
            got = api.get(rt, ns, route.name)
            got.body = transform(got.body, target, is_list=False, group=rt.group)
            return self._json(got)
        body = await self._body(request)
        if verb == "create":
            if f"{rt.plural}.{rt.group}" in REVIEWS:
                return web.json_response(self.review(rt, body, user), status=201)
            if route.sub == "eviction":
                return self._json(self.evict(ns, route.name, body, user))
            if route.sub == "binding":
                api.get(rt, ns, route.name)
                api.bind(ns, route.name, ((body or {}).get("target") or {}).get("name", ""))
                return web.json_response(_success(), status=201)
            if route.sub == "token":
                return web.json_response(self.token_request(ns, route.name, body), status=201)
            return self._json(api.create(rt, ns, body, user, dry_run=dry, warnings=warnings))
        if verb == "update":
            return self._json(api.update(rt, ns, route.name, body, user, subresource=route.sub, dry_run=dry,
                                         warnings=warnings))
        if verb == "patch":
            return self._json(api.patch(rt, ns, route.name, request.headers.get("Content-Type", ""), body, user,
                                        subresource=route.sub, dry_run=dry, warnings=warnings))
        options = DeleteOptions.parse(body if isinstance(body, dict) else None, query)
        if verb == "delete":
            return self._json(api.delete(rt, ns, route.name, options, user, warnings))
        return self._json(api.delete_collection(rt, route.namespace, ListOptions(
            query.get("labelSelector"), query.get("fieldSelector")), options, user))

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        if len(raw) > MAX_REQUEST_BODY_BYTES:
            raise too_large(MAX_REQUEST_BODY_BYTES)
        if not raw:
            return None
        ctype = request.headers.get("Content-Type", "")
        if "yaml" in ctype:
            import yaml

            return yaml.safe_load(raw)
        return json.loads(raw, parse_float=Number)  # a quantity given as a number is read from its text

    @staticmethod
    def _json(result: Result) -> web.Response:
        return web.json_response(result.body, status=result.code, dumps=lambda o: json.dumps(o, separators=(",", ":")))

    # -- subresources -----------------------------------------------------------------------------------

    async def logs(self, route: Route, query: dict[str, str]) -> web.StreamResponse:
        options = podlogs.parse(route.name or "", query)  # before the pod is read, as LogREST.Get
        pod = self.cluster.api.get(route.rt, route.namespace or "", route.name).body
        container = podlogs.container(pod, options.container)
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            return web.Response(body=b"", content_type="text/plain")
        kubelet = self.cluster.kubelets.get(node)
        if kubelet is None:
            raise ApiError(500, "InternalError", f'Get "https://{node}:10250/containerLogs": dial tcp: lookup '
                                                 f"{node}: no such host")
        data = await kubelet.logs(pod, container, options)
        return web.Response(body=data, content_type="text/plain")

    def evict(self, ns: str, name: str, body: Any, user: User) -> Result:
        rt = self.cluster.registry.core("pods")
        pod = self.cluster.api.get(rt, ns, name).body
        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            def edit(p: dict[str, Any]) -> None:
                conds = [c for c in (p.get("status") or {}).get("conditions") or []
                         if c.get("type") != "DisruptionTarget"]
                conds.insert(0, {"type": "DisruptionTarget", "status": "True", "lastProbeTime": None,
                                 "lastTransitionTime": stamp(), "reason": "EvictionByEvictionAPI",
                                 "message": EVICTING})
                p.setdefault("status", {})["conditions"] = conds
            self.cluster.api.mutate("pods", ns, name, edit)
        options = DeleteOptions.parse((body or {}).get("deleteOptions"), {})
        self.cluster.api.delete(rt, ns, name, options, user)
        return Result(_success(), 201)

    def token_request(self, ns: str, name: str, body: Any) -> dict[str, Any]:
        if self.cluster.store.get("serviceaccounts", ns, name) is None:
            raise not_found(self.cluster.registry.core("serviceaccounts").err, name)
        token = self.cluster.tokens.issue_for_account(ns, name)
        spec = (body or {}).get("spec") or {}
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "metadata": {"name": name,
                                                                                               "namespace": ns},
                "spec": {"audiences": spec.get("audiences") or ["https://kubernetes.default.svc"],
                         "expirationSeconds": spec.get("expirationSeconds", 3600)},
                "status": {"token": token, "expirationTimestamp": stamp()}}

    def review(self, rt: ResourceType, body: Any, user: User) -> dict[str, Any]:
        spec = (body or {}).get("spec") or {}
        who = user
        if rt.plural == "subjectaccessreviews":
            who = User(spec.get("user") or "", tuple(spec.get("groups") or ()))
            m = re.fullmatch(r"system:serviceaccount:([^:]+):([^:]+)", who.name)
            if m:
                from kube_model.rbac import service_account_user

                who = service_account_user(m.group(1), m.group(2))
        ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if ra:
            attrs = Attributes(who, ra.get("verb", ""), ra.get("group", ""), ra.get("resource", ""),
                               ra.get("subresource", ""), ra.get("namespace", ""), ra.get("name", ""))
        else:
            attrs = Attributes(who, (nra or {}).get("verb", ""), path=(nra or {}).get("path", ""))
        allowed = self.cluster.authorizer.allowed(attrs)
        return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {}, "spec": spec,
                "status": {"allowed": allowed, **({} if allowed else {"reason": ""})}}


class _Dropped(Exception):
    """The connection was dropped on purpose (a fault)."""


def _success() -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}



