"""The HTTP store: the Store interface over the sematic-k8s server's REST API.

Drivers, pods and users' resolvers record through the server with it when ``SEMATIC_K8S_SERVER``
(and ``SEMATIC_K8S_API_KEY``) are set. Records travel as JSON: datetimes as ISO 8601 UTC strings.
Requests go through :mod:`~sematic_k8s.store.http_connections` (kept-alive :mod:`http.client` connections, or
httpx where a proxy may be set), records and batches in their JSON form (:mod:`~sematic_k8s.store.wire`).

Every request rides out an outage of the server (:mod:`sematic_k8s.retries`): refused or dropped
connections, timeouts, 502/503/504 and 429 (after its Retry-After) are retried with backoff for the retry
window; the server's own 504 (its database canceled the query at its statement_timeout: ``reason``
:data:`STATEMENT_TIMEOUT`) is sent :data:`GATEWAY_TIMEOUT_TRIES` times only: what took too long once likely will
again, unless a lock held it up (a proxy's 504, its upstream down or slow, is an outage, retried for the window).
Writes may be sent again safely: the server's store inserts if absent and updates set fields, and a driver's writes
are numbered (``Batch.sequence``), so that a retried request whose first attempt lands after the driver's later
writes (held up in the network or the server past the timeout) sets nothing back. A 507 (the
server's disk is full) is not retried: it raises :class:`~sematic_k8s.errors.DiskFull` with the server's words at
once.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import itertools
import re
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

from sematic_k8s import limits, settings
from sematic_k8s.errors import (
    CancelRequested,
    ContinuedAlready,
    DiskFull,
    DriverReplaced,
    LabelsChanged,
    ResolutionEnded,
    ServerError,
    TooManyTags,
)
from sematic_k8s.retries import RetryLater, retrying
from sematic_k8s.settings import API_KEY_ENV
from sematic_k8s.store.http_connections import (
    Answer,
    Connections,
    ProxiedConnections,
    proxy_possible,
)
from sematic_k8s.store.records import ArtifactRecord, Batch, Formats, ResolutionRecord, RunRecord
from sematic_k8s.store.wire import batch_to_json, dumps, halves, parse_datetime, record_from_json

if TYPE_CHECKING:

    import httpx

API = "/api/v1"
HEADER = "X-API-Key"  # the server's credential header: an API key, or a resolution's token
ENDED_HEADER = "X-Sematic-K8s-Ended"  # "<resolution id> <state>": on a write refused as ResolutionEnded (409), and
# on a resolution token refused only because its resolution ended (401)
ENDED_AT_HEADER = "X-Sematic-K8s-Ended-At"  # beside it on a 409, when the end's time is known: "<ISO time of it>"
REPLACED_HEADER = "X-Sematic-K8s-Replaced"  # on one refused as DriverReplaced: "<resolution id> <ISO time of it>"
# on one refused as ContinuedAlready: "<continued resolution id> <the one continuing it> <its state>"
CONTINUED_HEADER = "X-Sematic-K8s-Continued"
CANCELING_HEADER = "X-Sematic-K8s-Canceling"  # on one refused as CancelRequested: "<resolution id>"
PAGE = 1000  # the server's largest page
READ_ONLY = "read-only"  # the role of a key that may only read (``GET /whoami``), refused every write
# the server (or a proxy before it) asks to try again; 408: the body did not all arrive in time (a path that went
# quiet mid-request), so the server did nothing with it: it is sent again whole
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
GATEWAY_TIMEOUT_TRIES = 3  # the server's statement-timeout 504s a request is sent for at most, within the retry
# window: then its words are raised
STATEMENT_TIMEOUT = "statement-timeout"  # the ``reason`` of the server's 504 (a proxy's 504 has none: retried)
LOG_PART_BYTES = 16 << 20  # of a log, asked for at a time (the server's most)
WRITE_BYTES = 8 * 1024 * 1024  # a batch larger than this goes in parts (the server's default cap is 32 MiB)
# the numbers of a fenced writer's requests (Batch.sequence): one counter for the process, so that every store object
# in it numbers a resolution's writes upwards; an epoch's numbers start above the 0 its takeover recorded
_SEQUENCE = itertools.count(1)


class HttpStore:
    """Store over ``url`` (the server's base URL, e.g. ``http://127.0.0.1:8000``).

    Kept-alive HTTP/1.1 connections (:class:`Connections`) are reused; safe to share between threads.
    ``retry_window``: seconds to ride out an outage (default $SEMATIC_K8S_RETRY_WINDOW, read per request).
    """

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = settings.CLIENT_REQUEST_TIMEOUT,
                 retry_window: float | None = None) -> None:
        settings.check_server_url(url)
        parts = urlsplit(url.rstrip("/"))
        user, _, netloc = parts.netloc.rpartition("@")
        self.url = urlunsplit(parts._replace(netloc=netloc))  # as messages and logs name it: without a password
        self.retry_window = retry_window
        self.headers = {HEADER: api_key} if api_key else {}
        self._prefix = parts.path  # a server behind a path (``http://host/sematic``)
        if user:  # ``http://user:password@host``: Basic authentication, as httpx does with a URL's user info
            credentials = ":".join(unquote(x) for x in (parts.username or "", parts.password or ""))
            self.headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        self.connections: Connections | ProxiedConnections = (
            ProxiedConnections(f"{parts.scheme}://{netloc}", timeout) if proxy_possible()
            else Connections(parts.scheme, netloc, timeout))
        self._lock = threading.Lock()
        self._writers: dict[str, threading.Lock] = {}  # resolution id -> held while a numbered write is sent

    def close(self) -> None:
        self.connections.close()

    def _request(self, method: str, path: str, *, missing_ok: bool = False, raw: bool = False,
                 content: bytes | None = None, headers: dict[str, str] | None = None,
                 params: dict[str, Any] | None = None) -> Any:
        """JSON of a successful answer (``raw``: the :class:`Answer`); None for a 404 when ``missing_ok``;
        ServerError otherwise (after retrying what may pass for the retry window)."""
        window = settings.retry_window() if self.retry_window is None else self.retry_window
        target = quote(self._prefix + API + path, safe="/:@!$&'()*+,;=%") + (f"?{urlencode(params)}" if params else "")
        all_headers = {**self.headers, **(headers or {})}
        transient = self.connections.transient
        timeouts = 0  # the server's statement-timeout 504s answered
        try:
            for attempt in retrying(f"the sematic-k8s server at {self.url}", transient, window):
                with attempt:
                    response = self.connections.request(method, target, content, all_headers)
                    timeouts += response.status_code == 504 and _reason(response) == STATEMENT_TIMEOUT
                    if response.status_code in RETRY_STATUSES and timeouts < GATEWAY_TIMEOUT_TRIES:
                        raise RetryLater(f"HTTP {response.status_code}", _retry_after(response), response)
        except transient as e:
            raise ServerError(f"cannot reach the sematic-k8s server at {self.url} (tried for {window:g} s): "
                              f"{type(e).__name__}: {e}") from None
        except RetryLater as e:
            response = e.response  # still unavailable at the end of the window: report its answer
        ended = (response.headers.get(ENDED_HEADER) or "").split() if response.status_code in (401, 409) else []
        if len(ended) == 2:  # a write to an ended resolution (409), or its token, refused only for that (401)
            raise ResolutionEnded(ended[0], ended[1], None, _ended_at(response))
        if response.status_code == 401:
            raise ServerError(f"API key missing or invalid for {self.url} ({_detail(response)}): set ${API_KEY_ENV} "
                              "to a key made with `sematic-k8s api-keys create NAME`", 401)
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code == 507:  # not retried: a full disk does not pass by itself (docs/FAULTS.md)
            raise DiskFull(f"the sematic-k8s server at {self.url} answered 507: {_detail(response)}",
                           "have the server's operator free space on its disk")
        replaced = (response.headers.get(REPLACED_HEADER) or "").split() if response.status_code == 409 else []
        if len(replaced) == 2:
            raise DriverReplaced(replaced[0], None if replaced[1] == "-" else parse_datetime(replaced[1]))
        continued = (response.headers.get(CONTINUED_HEADER) or "").split() if response.status_code == 409 else []
        if len(continued) == 3:
            raise ContinuedAlready(*continued)
        if response.status_code == 409 and (canceling := response.headers.get(CANCELING_HEADER)):
            raise CancelRequested(canceling)
        if response.status_code >= 400:
            raise ServerError(f"{method} {API}{path} on {self.url}: HTTP {response.status_code}: {_detail(response)}"
                              f"{_not_ours(response, self.url)}", response.status_code)
        if raw:
            return response
        try:
            return response.json()
        except ValueError:
            raise ServerError(f"{self.url} answered {method} {API}{path} with something other than JSON: is it a "
                              f"sematic-k8s server? (check ${settings.SERVER_ENV})", response.status_code) from None

    def check_may_record(self) -> None:
        """ServerError in one line (403) if this store's key may not record: a read-only key, which the server
        refuses every write. One request (``GET /whoami``), for a resolver to ask before it runs any user code,
        builds or pushes an image (else refused only at its first write). A server without ``/whoami`` (before
        read-only keys, whose keys all record) passes, as a server without keys (local mode) does."""
        who = self._request("GET", "/whoami", missing_ok=True)
        if isinstance(who, dict) and who.get("role") == READ_ONLY:
            raise ServerError(f"key {who.get('name')!r} is read-only: resolve with a user key (${API_KEY_ENV} or the "
                              "resolver's api_key; an admin makes one with `sematic-k8s api-keys create NAME`): the "
                              f"server at {self.url} lets a read-only key only read", 403)

    def mint_token(self, resolution_id: str, rerun_from: str | None = None) -> str:
        """A token for ``resolution_id``'s driver, minted by the server for this store's key: it may record
        only that resolution (and read the one ``rerun_from`` belongs to), and ends with it."""
        doc = self._request("POST", f"/resolutions/{resolution_id}/token", content=dumps({"rerun_from": rerun_from}),
                            headers={"Content-Type": "application/json"})
        return str(doc["token"])

    def revoke_tokens(self, resolution_id: str) -> int:
        """Revoke at once the tokens this store's key minted for ``resolution_id``, whose driver was never started
        (refused for a resolution recorded and not ended); how many were revoked."""
        return int(self._request("DELETE", f"/resolutions/{resolution_id}/token")["revoked"])

    # -- writes -----------------------------------------------------------------------------------

    def kept_secret(self, name: str) -> None:
        """None: the server keeps its database's secrets to itself (a driver through it derives its keys from its
        credential)."""
        return None

    def take_over(self, resolution_id: str) -> int:
        """:meth:`~sematic_k8s.store.sql.SqlStore.take_over`, by the server (a token: only its own resolution)."""
        doc = self._request("POST", f"/store/take_over/{resolution_id}", content=b"{}",
                            headers={"Content-Type": "application/json"})
        return int(doc["driver_epoch"])

    def write(self, batch: Batch, *, canceled: set[str] | None = None) -> None:
        """Record ``batch``: one request, or several in order when it is larger than :data:`WRITE_BYTES` or than
        the server takes (413: its ``--max-request-mb``), each part landing before the next is sent. A single
        record over the server's cap is refused with the server's word on it.

        A fenced batch (a driver's) is ordered: each request sent for it, each part, carries the next number of
        this process (``Batch.sequence``, for every resolution it fences), and a retry of a request carries the same
        one. The server applies a request whose number is not above the last one it applied for the resolution as
        already applied, so a first attempt that lands after its retry and later writes sets nothing back.
        Numbered writes of a resolution are sent one at a time (they land in the order of their numbers). A batch
        of heartbeats alone is not numbered: the heartbeat thread's beats cross the loop's writes, and a store keeps
        the latest heartbeat whatever the order, so neither makes the other look old. Nor is a batch not ``in_order``
        (a record about the driver by another process, as of its death: its numbers would not be the driver's).

        ``canceled``, when given, gets the ids the server's answer names in ``canceled`` (those of the resolutions
        whose failed end it recorded canceled: :meth:`~sematic_k8s.store.base.Store.write`); an answer of a server
        that names none (older ones) adds nothing."""
        if not batch:
            return
        ordered = [] if batch.beats_only() or not batch.in_order else sorted(batch.fence)
        told: set[str] = set()
        with self._writing(ordered):
            self._write(batch_to_json(batch), ordered, told)
        if canceled is not None:
            canceled |= told & batch.resolution_updates.keys()

    @contextlib.contextmanager
    def _writing(self, resolution_ids: list[str]) -> Iterator[None]:
        """Hold the numbered-write lock of each of ``resolution_ids`` (sorted: two writers never wait on each other)."""
        with self._lock:
            locks = [self._writers.setdefault(r, threading.Lock()) for r in resolution_ids]
        with contextlib.ExitStack() as held:
            for lock in locks:
                held.enter_context(lock)
            yield

    def _write(self, doc: dict[str, Any], ordered: list[str], canceled: set[str]) -> None:
        if ordered:  # a number of its own for every request, parts too (a gap left by a refused one is harmless)
            number = next(_SEQUENCE)
            doc["sequence"] = dict.fromkeys(ordered, number)
        body = dumps(doc)
        parts = halves(doc) if len(body) > WRITE_BYTES else None
        if parts is None:
            try:
                answer = self._request("POST", "/store/write", content=body,
                                       headers={"Content-Type": "application/json"})
                if isinstance(answer, dict):
                    canceled.update(str(r) for r in answer.get("canceled") or ())
                return
            except ServerError as e:
                parts = halves(doc) if e.status == 413 else None
                if parts is None:
                    raise
        for part in parts:
            self._write(part, ordered, canceled)

    # -- reads ------------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord | None:
        doc = self._request("GET", f"/runs/{run_id}", missing_ok=True)
        return None if doc is None else record_from_json(RunRecord, doc)

    def list_runs(self, *, root_id: str | None = None, state: str | None = None, func: str | None = None,
                  limit: int = 100, offset: int = 0, id_prefix: str | None = None,
                  newest_first: bool = False) -> list[RunRecord]:
        params = {k: v for k, v in {"root_id": root_id, "state": state, "func": func, "id_prefix": id_prefix,
                                    "order": "desc" if newest_first else None}.items() if v is not None}
        return [record_from_json(RunRecord, d) for d in self._pages("/runs", params, limit, offset)]

    def runs_of_root(self, root_id: str) -> list[RunRecord]:
        docs = self._request("GET", f"/store/runs_of_root/{root_id}")["items"]
        return [record_from_json(RunRecord, d) for d in docs]

    def get_resolution(self, resolution_id: str) -> ResolutionRecord | None:
        doc = self._request("GET", f"/resolutions/{resolution_id}", missing_ok=True)
        return None if doc is None else record_from_json(ResolutionRecord, doc)

    def list_resolutions(self, *, state: str | None = None, limit: int = 100, offset: int = 0,
                         id_prefix: str | None = None) -> list[ResolutionRecord]:
        params = {k: v for k, v in {"state": state, "id_prefix": id_prefix}.items() if v is not None}
        return [record_from_json(ResolutionRecord, d) for d in self._pages("/resolutions", params, limit, offset)]

    def get_artifact(self, artifact_id: str) -> ArtifactRecord | None:
        doc = self._request("GET", f"/artifacts/{artifact_id}", missing_ok=True)
        return None if doc is None else record_from_json(ArtifactRecord, doc)

    def artifacts(self, ids: Iterable[str]) -> list[ArtifactRecord]:
        """The records of those of these artifacts recorded, asked :data:`PAGE` ids a request (the server takes at
        most 10,000 in one; a driver's rerun of a large fan-out wants more)."""
        wanted = list(dict.fromkeys(ids))
        out: list[ArtifactRecord] = []
        for i in range(0, len(wanted), PAGE):
            docs = self._request("POST", "/store/artifacts", content=dumps({"ids": wanted[i:i + PAGE]}),
                                 headers={"Content-Type": "application/json"})["items"]
            out.extend(record_from_json(ArtifactRecord, d) for d in docs)
        return out

    def artifact_formats(self, ids: Iterable[str]) -> dict[str, Formats]:
        """``{id: (format, type_name, inline bytes, size)}`` of those of these artifacts recorded, without their
        summaries (an older server's answer: size None): asked :data:`~sematic_k8s.limits.FORMAT_IDS` ids a request
        (``POST /store/artifact_formats``). The few whose inline bytes the server leaves out as larger than it sends
        there (a record of another client's making) are read whole (:meth:`artifacts`). A server without that route
        (older) answers by :meth:`artifacts`: it answers 404, or 403 to a resolution token (or a read-only key), which
        may call only the paths it knows (a 403 of a server with the route: :meth:`artifacts` is refused as well, in
        its words)."""
        wanted = list(dict.fromkeys(ids))
        out: dict[str, Formats] = {}
        large: list[str] = []
        for i in range(0, len(wanted), limits.FORMAT_IDS):
            try:
                doc = self._request("POST", "/store/artifact_formats", missing_ok=True,
                                    content=dumps({"ids": wanted[i:i + limits.FORMAT_IDS]}),
                                    headers={"Content-Type": "application/json"})
            except ServerError as e:
                if e.status != 403:
                    raise
                doc = None
            if doc is None:
                return {a.id: (a.format, a.type_name, a.inline, a.size) for a in self.artifacts(wanted)}
            for item in doc["items"]:
                inline = None if item.get("inline") is None else base64.b64decode(item["inline"])
                out[item["id"]] = (item["format"], item["type_name"], inline, item.get("size"))  # older: none
                if item.get("inline_large"):
                    large.append(item["id"])
        out.update((a.id, (a.format, a.type_name, a.inline, a.size)) for a in self.artifacts(large))
        return out

    def find_cached(self, cache_key: str) -> RunRecord | None:
        return self.find_reusable([cache_key])[0].get(cache_key)

    def find_cached_many(self, cache_keys: Iterable[str]) -> dict[str, RunRecord]:
        return self.find_reusable(cache_keys)[0]

    def find_reusable(self, cache_keys: Iterable[str]) -> tuple[dict[str, RunRecord], set[str]]:
        """:meth:`find_cached_many`, and the keys that missed though the server skipped a run of theirs as another API
        key's (none from a server that records no owners): the runs the caller may reuse are those its key recorded
        and those of the keys the server trusts. The server names no skipped run (an older one did: its id unused)."""
        keys = list(dict.fromkeys(cache_keys))
        out: dict[str, RunRecord] = {}
        skipped: set[str] = set()
        for i in range(0, len(keys), PAGE):
            doc = self._request("POST", "/store/cached", content=dumps({"keys": keys[i:i + PAGE]}),
                                headers={"Content-Type": "application/json"})
            out.update({k: record_from_json(RunRecord, d) for k, d in doc["items"].items()})
            skipped.update(doc.get("skipped") or {})
        return out, skipped

    def cancel_requested(self, resolution_id: str) -> bool:
        return bool(self._request("GET", f"/store/cancel_requested/{resolution_id}")["cancel_requested"])

    def label_resolution(self, resolution_id: str, *, add: Iterable[str] = (), remove: Iterable[str] = (),
                         note: str | None = None, set_note: bool = False,
                         labels_version: int | None = None) -> ResolutionRecord | None:
        """SqlStore.label_resolution through ``POST /resolutions/{id}/labels``."""
        body: dict[str, Any] = {"add": list(add), "remove": list(remove)}
        if set_note:
            body["note"] = note or ""
        if labels_version is not None:
            body["labels_version"] = labels_version
        try:
            doc = self._request("POST", f"/resolutions/{resolution_id}/labels", missing_ok=True,
                                content=dumps(body), headers={"Content-Type": "application/json"})
        except ServerError as e:
            if e.status == 409 and labels_version is not None:
                now = self.get_resolution(resolution_id)  # the labels they changed to, as the error says them
                raise LabelsChanged(resolution_id, now.tags if now else None, now.note if now else None) from None
            if e.status == 422 and (now := self.get_resolution(resolution_id)) is not None:
                count = len((set(now.tags or []) | set(body["add"])) - set(body["remove"]))
                if count > limits.TAGS:  # the caller's change, not the infrastructure: as SqlStore raises it
                    raise TooManyTags(resolution_id, count, limits.TAGS) from None
            raise
        return None if doc is None else record_from_json(ResolutionRecord, doc)

    def run_counts(self, root_id: str) -> dict[str, int]:
        doc = self.resolution_counts(root_id)
        return {} if doc is None else doc["counts"]

    def resolution_counts(self, root_id: str) -> dict[str, Any] | None:
        """``{"state": ..., "counts": {state: n}}`` of a resolution in one small request; None if not recorded."""
        return self._request("GET", f"/resolutions/{root_id}/counts", missing_ok=True)

    def request_cancel(self, resolution_id: str) -> str | None:
        """POST the cancel action: the resolution's state after it (409, already ended: that state)."""
        if self._request("GET", f"/resolutions/{resolution_id}", missing_ok=True) is None:
            return None
        try:
            return self._request("POST", f"/resolutions/{resolution_id}/cancel", content=b"{}",
                                 headers={"Content-Type": "application/json"})["state"]  # as `server --local` takes
        except ServerError as e:
            if e.status != 409:
                raise
        res = self.get_resolution(resolution_id)
        return None if res is None else res.state

    def get_logs(self, run_id: str) -> bytes | None:
        """A run's captured output, the bytes as stored, read by the server from artifact storage a part at a time
        (None: unknown run)."""
        parts: list[bytes] = []
        offset = 0
        while True:
            response = self._request("GET", f"/runs/{run_id}/logs", missing_ok=True, raw=True,
                                     params={"offset": offset, "limit": LOG_PART_BYTES})
            if response is None:
                return None
            parts.append(response.content)
            following = int(response.headers.get("X-Log-Next") or 0)  # a server without parts: all was sent
            if following <= offset or following >= int(response.headers.get("X-Log-Size") or 0):
                return b"".join(parts)
            offset = following

    def _pages(self, path: str, params: dict[str, Any], limit: int, offset: int) -> list[dict[str, Any]]:
        """Up to ``limit`` items from ``offset``, fetched a server page at a time."""
        out: list[dict[str, Any]] = []
        while len(out) < limit:
            want = min(PAGE, limit - len(out))
            items = self._request("GET", path, params={**params, "limit": want, "offset": offset + len(out)})["items"]
            out.extend(items)
            if len(items) < want:
                break
        return out


def _retry_after(response: Answer | httpx.Response) -> float | None:
    """The seconds a Retry-After header asks to wait (a number, or an HTTP date); None without one."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def _ended_at(response: Answer | httpx.Response) -> dt.datetime | None:
    """When the resolution a refused write names was ended (:data:`ENDED_AT_HEADER`); None when not said, or not
    readable (a server of another version, a proxy's rewrite)."""
    try:
        return parse_datetime(response.headers.get(ENDED_AT_HEADER) or None)
    except ValueError:
        return None


def _detail(response: Answer | httpx.Response) -> Any:
    """The server's message: its JSON ``detail``, else the start of the body's text on one line (no HTML tags)."""
    try:
        return response.json().get("detail")
    except (ValueError, AttributeError):
        return " ".join(re.sub(r"<[^>]*>", " ", response.text[:2000]).split())[:300]


def _reason(response: Answer | httpx.Response) -> Any:
    """The ``reason`` of the server's JSON problem, else None (a proxy's page, anything else)."""
    try:
        doc = response.json()
    except ValueError:
        return None
    return doc.get("reason") if isinstance(doc, dict) else None


def _not_ours(response: Answer | httpx.Response, url: str) -> str:
    """A hint for a 4xx that is not JSON: a sematic-k8s server answers every refusal in JSON, so another server
    answered (a registry, S3, a web page): the URL is wrong."""
    try:
        response.json()
    except ValueError:
        if response.status_code < 500:
            return f" ({url} does not answer like a sematic-k8s server: check ${settings.SERVER_ENV})"
    return ""


_STORES: dict[tuple[str, str | None, float | None], HttpStore] = {}
_LOCK = threading.Lock()


def http_store(url: str, api_key: str | None = None, retry_window: float | None = None) -> HttpStore:
    """One HttpStore (connection pool) per server URL, key and retry window per process."""
    with _LOCK:
        key = (url.rstrip("/"), api_key, retry_window)
        if key not in _STORES:
            _STORES[key] = HttpStore(url, api_key, retry_window=retry_window)
        return _STORES[key]
