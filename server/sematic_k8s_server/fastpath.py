"""``POST /api/v1/store/write``, the request a server gets most (every state change of every run), answered in
one flat coroutine: without FastAPI's middleware, routing and dependency machinery, whose layers each cost
time on every await of every request (two thirds of the server's CPU time per request, with uvicorn's).

The app sends it here first (:class:`~sematic_k8s_server.app.Api`). It does what the rest of the app would: the
:class:`~sematic_k8s_server.guard.Guard`'s checks (credentials, size cap), the route's function
(:func:`~sematic_k8s_server.routes.store.record`), the app's error handlers, with the same answers. A request it
does not take as it is (another content type, a body that is not a valid batch) goes on to the app, already
guarded, which answers as usual (the detailed 422 included). The route stays, and documents the endpoint.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import pydantic
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sematic_k8s_server import schemas
from sematic_k8s_server.guard import GUARDED, Guard
from sematic_k8s_server.routes.store import record, written
from sematic_k8s_server.state import Server

PATH = "/api/v1/store/write"
WRITTEN = b'{"ok":true}'
WRITTEN_START: Message = {"type": "http.response.start", "status": 200,
                          "headers": [(b"content-type", b"application/json"),
                                      (b"content-length", str(len(WRITTEN)).encode())]}
WRITTEN_BODY: Message = {"type": "http.response.body", "body": WRITTEN}
Handler = Callable[[Request, Any], Any]  # a Response, or an awaitable of one


def takes(scope: Scope) -> bool:
    """Whether the request is one for :class:`WriteFastPath`."""
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == PATH


class WriteFastPath:
    """An ASGI app for :func:`takes` requests, see the module docstring. ``app`` answers the requests it does not
    take, ``guard`` is the app's Guard, ``handlers`` the app's exception handlers (by class)."""

    def __init__(self, app: ASGIApp, *, server: Server, guard: Guard, handlers: Mapping[Any, Handler]) -> None:
        self.app, self.server, self.guard, self.handlers = app, server, guard, handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_once(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._serve(scope, receive, send_once)
        except Exception as e:  # answered as the app's error handlers answer it
            handler = next((self.handlers[c] for c in type(e).__mro__ if c in self.handlers), None)
            if started or handler is None:
                raise
            response = handler(Request(scope), e)
            await (await response if inspect.isawaitable(response) else response)(scope, receive, send)
            if Exception in self.handlers and handler is self.handlers[Exception]:
                raise  # unexpected: the ASGI server logs it, as after FastAPI's 500

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self.guard.admit(scope, receive, send):
            return
        scope[GUARDED] = True
        principal = scope["state"]["principal"]
        if _content_type(scope) != b"application/json":
            await self.guard.counted(self.app, scope, receive, send)
            return
        body = await self.guard.read_body(scope, receive, send)
        if body is None:
            return  # the client went away, or 413
        try:
            batch = schemas.BatchIn.model_validate(orjson.loads(body))
        except (orjson.JSONDecodeError, pydantic.ValidationError):
            await self.app(scope, _replay(body), send)  # the route's own 422
            return
        canceled = await record(self.server, principal, batch)  # a refusal or an outage: the app's handlers answer
        if canceled:  # rare: a failed end recorded canceled, said in the answer (routes.store.written)
            said = orjson.dumps(written(canceled))
            await send({**WRITTEN_START, "headers": [(b"content-type", b"application/json"),
                                                     (b"content-length", str(len(said)).encode())]})
            await send({"type": "http.response.body", "body": said})
            return
        await send(WRITTEN_START)
        await send(WRITTEN_BODY)


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
