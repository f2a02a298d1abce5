"""The gate in front of the whole app (ASGI middleware), run before any route reads a byte of the body.

In this order:

1. Local mode only (no API keys, loopback): the ``Host`` must be a loopback name (a page on another site
   that re-points its DNS name at 127.0.0.1 sends its own name: refused), and a state-changing request must
   have a JSON content type (a cross-site form or "simple" fetch cannot send one) and, when it has an
   ``Origin`` (browsers always send one with a POST), this server's own.
2. ``/api/...`` (but ``/api/v1/health`` and ``/api/v1/ready``): the credential in ``X-API-Key`` is checked against
   the database first (one query for all the requests waiting at that moment, :mod:`~sematic_k8s_server.coalesce`); a
   request without a valid one gets 401 before its body is read, and a resolution's token calling anything but
   what a driver needs (:data:`~sematic_k8s_server.scopes.TOKEN_ROUTES`) gets 403, and so does a read-only API key
   sending anything but GET or HEAD (:func:`~sematic_k8s_server.auth.read_only_refusal`: here, for every route, so
   a route added later is covered too), or a POST to a route marked as a read
   (:data:`~sematic_k8s_server.auth.READ_BY_POST`: a cache look-up, artifacts' records by id).
3. Bodies larger than the cap get 413: at once when ``Content-Length`` says so, else as soon as the bytes
   that arrived exceed it (chunked uploads are counted, not trusted). A body not all arrived within the body
   timeout of the request's admission (declared and never sent, trickled, a chunked body never ended) gets 408 and
   its connection closed, the request not applied (what the connection's head may take:
   :mod:`~sematic_k8s_server.connections`).
4. Once a body has all arrived, its credential is checked again (as in 2) before the app sees its end: a key revoked,
   or a token ended, while the body was on its way (up to the body timeout) gets 401, nothing of it applied.

The caller's :class:`~sematic_k8s_server.auth.Principal` is left in ``scope["state"]["principal"]``.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sematic_k8s.store.http import ENDED_HEADER
from sematic_k8s_server import auth, scopes
from sematic_k8s_server.coalesce import Coalescer
from sematic_k8s_server.config import ServerConfig
from sematic_k8s_server.problems import problem

PUBLIC_API = frozenset({"/api/v1/health", "/api/v1/ready"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
GUARDED = "sematic_k8s.guarded"  # a scope key (set by the server: no request can) for a request already guarded


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1), as a name or an address."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(host_header: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:8000`` -> ``::1``)."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """See the module docstring. ``authenticator`` checks credentials; ``config`` has the cap and the mode; ``reads``:
    the paths of the POST routes that only read (:data:`~sematic_k8s_server.auth.READ_BY_POST`), which a read-only
    key may send."""

    def __init__(self, app: ASGIApp, *, authenticator: auth.Authenticator, config: ServerConfig,
                 reads: frozenset[str] = frozenset()) -> None:
        self.app, self.auth, self.config, self.reads = app, authenticator, config, reads
        self._checks: Coalescer[str | None, auth.Principal] = Coalescer(authenticator.authenticate_many, calls=2)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get(GUARDED):  # the write fast path's own checks passed it
            await self.app(scope, receive, send)
            return
        if await self.admit(scope, receive, send):
            await self.counted(self.app, scope, receive, send)

    async def admit(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Checks 1 and 2, and the declared size of 3: True if the request may go on (the caller's principal is
        in ``scope["state"]``), else False once its refusal is sent."""
        headers = Headers(scope=scope)
        refused = self._local_mode_refusal(scope, headers) if self.config.local else None
        if refused is None and self._needs_credential(scope["path"]):
            refused = await self._authenticate(scope, headers)
        if refused is None:
            refused = self._declared_size_refusal(headers)
        if refused is None:
            return True
        status, detail, extra_headers = refused
        close = {"Connection": "close"} if _has_body(headers) else {}  # its body is never read
        await problem(status, detail, {**extra_headers, **close})(scope, receive, send)
        return False

    async def read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The request's whole body (for an admitted request), or None: the client went away, or its body
        exceeded the cap (413 sent) or the body timeout (408 sent)."""
        chunks, size = [], 0
        receive = self._deadlined(scope, receive)
        while True:
            try:
                message = await receive()
            except BodyTimedOut:
                await problem(408, self._too_slow_message(), {"Connection": "close"})(scope, receive, send)
                return None
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.config.max_request_bytes:
                await problem(413, self._too_large_message(), {"Connection": "close"})(scope, receive, send)
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                if (refused := await self._recheck(scope)) is not None:
                    await problem(*refused)(scope, receive, send)
                    return None
                return b"".join(chunks)

    # -- the checks ----------------------------------------------------------------------------------------

    def _local_mode_refusal(self, scope: Scope, headers: Headers) -> tuple[int, str, dict[str, str]] | None:
        host = headers.get("host", "")
        if not is_loopback(_hostname(host)):
            return 403, (f"Host {host!r} is not a loopback name: a server in local mode answers only requests "
                         "for localhost or 127.0.0.1 (DNS-rebinding defence)"), {}
        if scope["method"] not in STATE_CHANGING:
            return None
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            return 415, ("a state-changing request needs Content-Type: application/json (cross-site request "
                         f"defence), got {media_type or 'none'!r}"), {}
        origin = headers.get("origin")
        if origin is not None and origin != f"{scope.get('scheme', 'http')}://{host}":
            return 403, f"cross-origin request from {origin!r} refused: only this server's own page may send it", {}
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return 403, f"cross-site request ({site}) refused: only this server's own page may send it", {}
        return None

    @staticmethod
    def _needs_credential(path: str) -> bool:
        return path.startswith("/api/") and path not in PUBLIC_API

    async def _recheck(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        """Check 2 again once a request's body has all arrived, before anything of it is applied: a key revoked (or
        a token ended) while the body was on its way refuses the request, as it would a new one. The refusal, or
        None."""
        headers = Headers(scope=scope)
        if not self.auth.required or not _has_body(headers) or not self._needs_credential(scope["path"]):
            return None
        return await self._authenticate(scope, headers)

    async def _authenticate(self, scope: Scope, headers: Headers) -> tuple[int, str, dict[str, str]] | None:
        try:
            if self.auth.required:  # a database query, shared with the requests waiting now: off the event loop
                principal = await self._checks.submit(headers.get(auth.HEADER))
            else:
                principal = self.auth.authenticate(None)
        except auth.Unauthorized as e:
            ended = {} if e.ended is None else {ENDED_HEADER: " ".join(e.ended)}  # a restarted driver: see driver.py
            return 401, str(e), {"WWW-Authenticate": auth.HEADER, **ended}
        except Exception as e:  # noqa: BLE001 - the database is down: say so, as JSON
            return 503, auth.unchecked(e), {"Retry-After": "5"}
        if principal.is_token and not scopes.token_may_call(scope["method"], scope["path"]):
            return 403, (f"{principal.name}'s token cannot call {scope['method']} {scope['path']}: "
                         "that needs an API key"), {}
        if (refusal := auth.read_only_refusal(principal, scope["method"], scope["path"], self.reads)) is not None:
            return 403, refusal, {}
        scope.setdefault("state", {})["principal"] = principal
        return None

    def _declared_size_refusal(self, headers: Headers) -> tuple[int, str, dict[str, str]] | None:
        length = headers.get("content-length")
        if length is None:
            return None
        if not length.isdigit():
            return 400, f"Content-Length {length!r} is not a number", {}
        if int(length) > self.config.max_request_bytes:
            return 413, self._too_large_message(), {}
        return None

    def _too_large_message(self) -> str:
        return (f"request body larger than this server's cap of {self.config.max_request_bytes} bytes "
                "(server flag --max-request-mb)")

    def _too_slow_message(self) -> str:
        return (f"request body not received within {self.config.body_timeout:g} s of its headers (server flag "
                "--body-timeout)")

    def _deadlined(self, scope: Scope, receive: Receive) -> Receive:
        """``receive``, but a wait for a body that has not all arrived within the body timeout (from now) raises
        :class:`BodyTimedOut`; ``receive`` itself for a request without a body, and once it has all arrived."""
        if not _has_body(Headers(scope=scope)):
            return receive
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.body_timeout
        arrived = False

        async def deadlined() -> Message:
            nonlocal arrived
            if arrived:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise BodyTimedOut from None
            arrived = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return deadlined

    # -- counting the body as it arrives ------------------------------------------------------------------

    async def counted(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """``app`` (for an admitted request), cut off with 413 once the body it reads exceeds the cap, with 408 once
        it waits for a body past the body timeout."""
        cap = self.config.max_request_bytes
        state: dict[str, Any] = {"received": 0, "refused": False, "started": False, "ended": False}
        deadlined = self._deadlined(scope, receive)

        async def counted_receive() -> Message:
            if state["refused"]:
                return {"type": "http.disconnect"}
            try:
                message = await deadlined()
            except BodyTimedOut:
                state["refused"] = True
                if not state["started"]:
                    state["started"] = True
                    await problem(408, self._too_slow_message(), {"Connection": "close"})(scope, receive, send)
                elif not state["ended"]:  # an answer under way (a stream): ended here, as the app no longer can
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return {"type": "http.disconnect"}  # the app stops reading; its own answer is dropped
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                refused = (413, self._too_large_message(), {"Connection": "close"}) if state["received"] > cap \
                    else None if message.get("more_body") else await self._recheck(scope)
                if refused is not None:
                    state["refused"] = True
                    if not state["started"]:
                        state["started"] = True
                        await problem(*refused)(scope, receive, send)
                    return {"type": "http.disconnect"}  # the app stops reading; its own answer is dropped
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            elif not message.get("more_body", False):
                state["ended"] = True
            await send(message)

        try:
            await app(scope, counted_receive, guarded_send)
        except Exception:
            if not state["refused"]:  # else: the app choked on the cut-off body, and 413 or 408 was the answer
                raise


class BodyTimedOut(Exception):
    """A request's body did not all arrive within the body timeout."""


def _has_body(headers: Headers) -> bool:
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
