"""List + watch streams: what the Kubernetes executor knows about its pods and Jobs.

A :class:`Watcher` keeps one watch stream open in a daemon thread and feeds raw events into a queue. It
lists once (in pages of ``page`` items, ``limit``/``continue``; from the API server's watch cache,
``resourceVersion=0``, where a slightly old answer is safe), watches from the list's resourceVersion,
resumes from the last resourceVersion it saw when a stream ends (server timeout, dropped connection, an
API-server restart), and lists again only when that version has expired (410 Gone), after a random pause
so that many drivers do not relist at once. Nothing polls per object: a fan-out of N runs costs O(1) list
and watch calls. Answers 401/403 that persist (``forbidden_limit`` in a row, over ``forbidden_window``
seconds) end the watcher with an ``ERROR`` event: no permission is not something to retry forever.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from sematic_k8s.k8s.client import Backoff, NamespacedApi, api_call, api_message, retryable
from sematic_k8s.k8s.events import slim_event
from sematic_k8s.k8s.pods import slim_job, slim_pod

log = logging.getLogger("sematic_k8s.k8s")
GONE = 410


@dataclass
class Event:
    """One event from a Watcher: ``type`` is ADDED, MODIFIED, DELETED, SYNC (a fresh list: ``items``,
    made after ``since`` on the monotonic clock) or ERROR (the watcher stopped: ``obj`` holds the ``code``
    and ``message`` of the API server's refusal)."""

    kind: str
    type: str
    obj: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)
    since: float = 0.0


@dataclass
class WatchStats:
    lists: int = 0
    watches: int = 0
    gone: int = 0
    errors: int = 0
    events: int = 0
    pages: int = 0
    forbidden: int = 0


class Watcher:
    """List, then watch, ``list_fn(namespace, label_selector=selector)`` in a daemon thread.

    ``list_fn`` is a namespaced list method of the official client (``CoreV1Api.list_namespaced_pod``,
    ``BatchV1Api.list_namespaced_job``). Events go to ``out`` as :class:`Event`, their objects as ``slim``
    makes them (only what the reader needs: a busy reader's backlog stays small).
    """

    def __init__(self, kind: str, list_fn: Callable[..., Any], namespace: str, selector: str, out: queue.Queue,
                 *, timeout_seconds: int = 300, backoff: Backoff | None = None, page: int = 500,
                 cache_reads: bool = False, forbidden_limit: int = 3, forbidden_window: float = 30.0,
                 relist_jitter: float = 1.0, field_selector: str | None = None,
                 slim: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None) -> None:
        self.kind, self.list_fn, self.namespace, self.selector, self.out = kind, list_fn, namespace, selector, out
        self.timeout_seconds = timeout_seconds
        self.page = page
        self.cache_reads = cache_reads  # lists may come from the watch cache (resourceVersion=0)
        self.forbidden_limit = forbidden_limit
        self.forbidden_window = forbidden_window  # seconds refusals must last (RBAC may still be propagating)
        self.relist_jitter = relist_jitter
        self.field_selector = field_selector
        self.slim = slim or (lambda obj: obj)  # what of each object is kept (in this thread); None: nothing
        # a list's retries pause on the stop flag: stop() ends them (they slept on, logging, past their close())
        self.backoff = dataclasses.replace(backoff or Backoff(base=0.2, cap=5.0), sleep=self._pause)
        self.resource_version: str | None = None
        self.stats = WatchStats()
        self.synced = threading.Event()  # the first list went through
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread = threading.Thread(target=self._run, name=f"sk-watch-{kind}", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()  # unblocks the read in the watch thread
            except Exception:  # noqa: BLE001 - best effort: the thread also checks the flag
                pass
        self._thread.join(timeout)

    def _pause(self, seconds: float) -> None:
        """The list's backoff: ``seconds``, unless :meth:`stop` comes first (then :class:`_Stopped`)."""
        if self._stop.wait(seconds):
            raise _Stopped()

    # -- the thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = forbidden = 0
        first_refusal = 0.0
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._watch()
                failures = forbidden = 0
            except _Gone:
                self._expired()
            except Exception as e:
                if self._stop.is_set():
                    return
                self.stats.errors += 1
                if isinstance(e, ApiException) and e.status == GONE:
                    self._expired()
                    continue
                if isinstance(e, ApiException) and e.status in (401, 403):
                    forbidden += 1
                    self.stats.forbidden += 1
                    first_refusal = first_refusal if forbidden > 1 else time.monotonic()
                    if forbidden >= self.forbidden_limit and time.monotonic() - first_refusal >= self.forbidden_window:
                        log.error("watching %s in %s: the API server refuses (%s) %d times in a row: %s", self.kind,
                                  self.namespace, e.status, forbidden, api_message(e))
                        self.out.put(Event(self.kind, "ERROR", {"code": e.status, "message": api_message(e)}))
                        return
                wait = self.backoff.delay(min(failures, 10), e)
                failures += 1
                level = logging.DEBUG if retryable(e) else logging.WARNING
                log.log(level, "watching %s failed (%s: %s); again in %.2fs", self.kind, type(e).__name__,
                        getattr(e, "status", "") or e, wait)
                self._stop.wait(wait)

    def _expired(self) -> None:
        """The resourceVersion expired (410): list again, after a random pause (no relist stampede)."""
        self.stats.gone += 1
        self.resource_version = None
        if self.relist_jitter > 0:
            self._stop.wait(random.random() * self.relist_jitter)

    def _request(self, **kwargs: Any) -> Any:
        if self.selector:
            kwargs["label_selector"] = self.selector
        if self.field_selector:
            kwargs["field_selector"] = self.field_selector
        resp = self.list_fn(self.namespace, _preload_content=False, **kwargs)
        if not 200 <= resp.status <= 299:
            body = resp.data
            resp.release_conn()
            e = ApiException(status=resp.status, reason=resp.reason)
            e.body, e.headers = body, resp.headers
            raise e
        return resp

    def _list(self) -> None:
        """One list, page by page; a continue token that expired (410) is a relist (raised as _Gone)."""
        since = time.monotonic()
        self.stats.lists += 1
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"limit": self.page}
        if self.cache_reads:
            kwargs.update(resource_version="0", resource_version_match="NotOlderThan")
        while True:
            self.stats.pages += 1
            resp = api_call(self._request, backoff=self.backoff, **kwargs)
            data = json.loads(resp.data)
            items.extend(kept for o in data.get("items") or [] if (kept := self.slim(o)) is not None)
            meta = data.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
            kwargs = {"limit": self.page, "_continue": token}
        self.resource_version = meta.get("resourceVersion") or None
        self.out.put(Event(self.kind, "SYNC", items=items, since=since))
        self.synced.set()

    def _watch(self) -> None:
        self.stats.watches += 1
        kwargs: dict[str, Any] = {"watch": True, "allow_watch_bookmarks": True,
                                  "timeout_seconds": self.timeout_seconds,
                                  "_request_timeout": (10, self.timeout_seconds + 30)}
        if self.resource_version:
            kwargs["resource_version"] = self.resource_version
        resp = self._request(**kwargs)
        self._resp = resp
        try:
            if self._stop.is_set():  # stop() came while the request was on its way
                return
            for line in iter_resp_lines(resp):
                if self._stop.is_set():
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == GONE:
                        raise _Gone()
                    raise ApiException(status=obj.get("code") or 500, reason=obj.get("message"))
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    self.resource_version = rv
                if event.get("type") == "BOOKMARK":
                    continue
                self.stats.events += 1
                kept = self.slim(obj)
                if kept is not None:
                    self.out.put(Event(self.kind, event["type"], kept))
        finally:
            self._resp = None
            resp.close()
            resp.release_conn()


def watch_workers(kube: NamespacedApi, selector: str, out: queue.Queue, *, jobs_from: str | None,
                  timeout_seconds: int, backoff: Backoff, page: int, forbidden_window: float) -> list[Watcher]:
    """Start the watches that follow a resolution's workers: their pods and Jobs (``selector``; Jobs from
    ``jobs_from``, the resourceVersion of a list made just now) and the Warning Events of the namespace that say
    why a pod is not created or does not start. Returns the watchers, pods first."""
    def watcher(kind: str, list_fn: Callable[..., Any], selector: str, **kwargs: Any) -> Watcher:
        return Watcher(kind, list_fn, kube.namespace, selector, out, timeout_seconds=timeout_seconds,
                       backoff=backoff, page=page, forbidden_window=forbidden_window, **kwargs)

    jobs = watcher("job", kube.batch.list_namespaced_job, selector, slim=slim_job)
    jobs.resource_version = jobs_from
    return [watcher("pod", kube.core.list_namespaced_pod, selector, cache_reads=True, slim=slim_pod).start(),
            jobs.start(),
            watcher("event", kube.core.list_namespaced_event, "", cache_reads=True, slim=slim_event,
                    field_selector="type=Warning").start()]


class _Gone(Exception):
    """The watch's resourceVersion expired (410 Gone)."""


class _Stopped(Exception):
    """:meth:`Watcher.stop` came during a list's retries."""
