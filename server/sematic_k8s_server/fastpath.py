"""``POST /api/v1/store/write``, the request a server gets most (every state change of every run), answered
without FastAPI's routing and dependency machinery: half the server's CPU time per request.

It sits under the :class:`~sematic_k8s_server.guard.Guard` (credentials, size cap) and does what the route does,
with the same function (:func:`~sematic_k8s_server.routes.store.record`) and the same answers. A request it
does not take as it is (another content type, a body that is not a valid batch) goes on to the route with
its body, which answers as usual (the detailed 422 included). The route stays, and documents the endpoint.
"""

from __future__ import annotations

import orjson
import pydantic
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sematic_k8s_server import problems, schemas, writes
from sematic_k8s_server.routes.store import record
from sematic_k8s_server.state import Server

PATH = "/api/v1/store/write"
WRITTEN = b'{"ok":true}'


class WriteFastPath:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp, *, server: Server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get("state", {}).get("principal")
        if (scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST" or principal is None
                or _content_type(scope) != b"application/json"):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away (or the Guard cut the body off and answered)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            batch = schemas.BatchIn.model_validate(orjson.loads(body))
        except (orjson.JSONDecodeError, pydantic.ValidationError):
            await self.app(scope, _replay(body), send)  # the route's own 422
            return
        try:
            await record(self.server, principal, batch)
        except HTTPException as e:
            response = problems.problem(e.status_code, str(e.detail), e.headers, **getattr(e, "extra", {}))
        except writes.OUTAGE as e:
            response = await problems.database_error(Request(scope), e)
        else:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(WRITTEN)).encode())]})
            await send({"type": "http.response.body", "body": WRITTEN})
            return
        await response(scope, receive, send)


def _content_type(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return None


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive

