"""List + watch streams: what the Kubernetes executor knows about its pods and Jobs.

A :class:`Watcher` keeps one watch stream open in a daemon thread and feeds raw events into a queue. It
lists once, watches from the list's resourceVersion, resumes from the last resourceVersion it saw when a
stream ends (server timeout, dropped connection), and lists again when that version has expired
(410 Gone). Nothing polls per object: a fan-out of N runs costs O(1) list and watch calls.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from sematic_k8s.k8s.client import Backoff, api_call, retryable

log = logging.getLogger("sematic_k8s.k8s")
GONE = 410


@dataclass
class Event:
    """One event from a Watcher: ``type`` is ADDED, MODIFIED, DELETED, or SYNC (a fresh list: ``items``,
    made after ``since`` on the monotonic clock)."""

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


class Watcher:
    """List, then watch, ``list_fn(namespace, label_selector=selector)`` in a daemon thread.

    ``list_fn`` is a namespaced list method of the official client (``CoreV1Api.list_namespaced_pod``,
    ``BatchV1Api.list_namespaced_job``). Events go to ``out`` as :class:`Event`.
    """

    def __init__(self, kind: str, list_fn: Callable[..., Any], namespace: str, selector: str, out: queue.Queue,
                 *, timeout_seconds: int = 300, backoff: Backoff | None = None) -> None:
        self.kind, self.list_fn, self.namespace, self.selector, self.out = kind, list_fn, namespace, selector, out
        self.timeout_seconds = timeout_seconds
        self.backoff = backoff or Backoff(base=0.2, cap=5.0)
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

    # -- the thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._watch()
                failures = 0
            except _Gone:
                self.stats.gone += 1
                self.resource_version = None  # expired: list again, then watch from the new version
            except Exception as e:
                if self._stop.is_set():
                    return
                self.stats.errors += 1
                if isinstance(e, ApiException) and e.status == GONE:
                    self.stats.gone += 1
                    self.resource_version = None
                    continue
                wait = self.backoff.delay(min(failures, 10), e)
                failures += 1
                level = logging.DEBUG if retryable(e) else logging.WARNING
                log.log(level, "watching %s failed (%s: %s); again in %.2fs", self.kind, type(e).__name__,
                        getattr(e, "status", "") or e, wait)
                self._stop.wait(wait)

    def _request(self, **kwargs: Any) -> Any:
        resp = self.list_fn(self.namespace, label_selector=self.selector, _preload_content=False, **kwargs)
        if not 200 <= resp.status <= 299:
            body = resp.data
            resp.release_conn()
            e = ApiException(status=resp.status, reason=resp.reason)
            e.body, e.headers = body, resp.headers
            raise e
        return resp

    def _list(self) -> None:
        since = time.monotonic()
        self.stats.lists += 1
        resp = api_call(self._request, backoff=self.backoff)
        data = json.loads(resp.data)
        self.resource_version = (data.get("metadata") or {}).get("resourceVersion") or None
        self.out.put(Event(self.kind, "SYNC", items=data.get("items") or [], since=since))
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
                self.out.put(Event(self.kind, event["type"], obj))
        finally:
            self._resp = None
            resp.close()
            resp.release_conn()


class _Gone(Exception):
    """The watch's resourceVersion expired (410 Gone)."""
