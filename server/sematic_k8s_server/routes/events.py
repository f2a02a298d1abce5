"""``/events``: live state changes as Server-Sent Events, from the Server's event bus.

A stream stays open for hours (the dashboard's), so its credential is checked again before each group of events
it sends and at each keep-alive: a key revoked while the stream is open gets nothing recorded after the revocation,
and the stream ends with a comment saying why (the client's next request is refused, as any would be). A check the
database cannot answer (stopped, failing over) ends the stream the same way, cleanly: its follower connects again. A
server asked to stop ends every stream (:mod:`~sematic_k8s_server.shutdown`): its followers connect again, to another
replica.

One API key holds at most ``--max-streams-per-key`` streams open in a server process (local mode: this machine, its
one principal); one more gets 429 with ``Retry-After``. A stream's slot and subscription are given back when its
answer ends, however it ends (its client gone, reset or killed before or while it streams)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from sematic_k8s_server import auth, schemas, scopes
from sematic_k8s_server.auth import Principal
from sematic_k8s_server.deps import API, Caller
from sematic_k8s_server.problems import ApiError
from sematic_k8s_server.state import Server

KEEPALIVE_SECONDS = 15.0
GROUP = 1000  # events sent after one check of the credential, at most
STREAMS_RETRY_AFTER = 30  # seconds: a stream refused for its key's bound is asked for again after (a slot frees
# when another stream of the key closes)

router = APIRouter(prefix=API, tags=["events"])


@router.get("/events", summary="Live state changes (Server-Sent Events)", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": 'one `data: {"type": "run"|"resolution", "id", "root_id", '
                                            '"state"}` line per change (a run\'s attempts set alone: its '
                                            '`attempts`, `state` null; runs whose notes, inputs, output or error '
                                            'alone changed: `changed`, the fields, `state` null, one event per '
                                            'resolution per write, `id` null when several: refetch them); '
                                            '`{"type": "overflow"}` means events were dropped: refetch'},
                        429: {"description": "this API key holds as many streams open as the server allows: "
                                             "close some, or retry after `Retry-After` seconds"}})
async def events(request: Request, caller: Caller,
                 root_id: Annotated[str | None, Query(pattern=schemas.HEX_ID)] = None) -> StreamingResponse:
    scopes.require_key(caller, "follow live events")
    srv: Server = request.app.state.server
    holder = caller.key_id or caller.name  # local mode: its one principal, every client of this machine
    if not srv.streams.take(holder):
        raise _too_many_streams(caller, srv.streams.limit)
    sub = srv.bus.subscribe(root_id)

    def closed() -> None:
        srv.bus.unsubscribe(sub)
        srv.streams.give_back(holder)

    key = request.headers.get(auth.HEADER)

    async def refusal() -> str | None:
        """Why the stream's credential no longer opens the API (revoked, expired), or cannot be checked (the database
        unavailable: its follower connects again, and is answered 503 until it is back), or None."""
        if not srv.auth.required:
            return None
        try:
            await srv.credentials.submit(key)
        except auth.Unauthorized as e:
            return str(e)
        except Exception as e:  # noqa: BLE001 - the database is down: the stream ends saying so, as the guard answers
            return auth.unchecked(e)
        return None

    async def stream() -> AsyncIterator[str]:
        yield ": connected\n\n"
        while True:
            events: list[dict | None] = []
            if not sub.overflowed:
                try:
                    events.append(await sub.next(KEEPALIVE_SECONDS))
                except TimeoutError:
                    if await request.is_disconnected():
                        return
            while len(events) < GROUP and not sub.queue.empty():
                events.append(sub.queue.get_nowait())
            if sub.ended:  # the server is stopping: the follower connects again (to another replica), and
                return  # refetches what it shows
            if sub.overflowed:
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                sub.overflowed = False
                events = [{"type": "overflow"}]
            if (why := await refusal()) is not None:
                yield f": {why}: this stream ends\n\n"
                return
            yield "".join(f"data: {json.dumps(event)}\n\n" for event in events if event) or ": keepalive\n\n"

    return _Stream(stream(), closed=closed, media_type="text/event-stream",
                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _too_many_streams(caller: Principal, limit: int) -> ApiError:
    whose = "from this machine (local mode)" if caller.key_id is None else f"with API key {caller.name!r}"
    return ApiError(429, f"{limit} live-event streams are already open {whose} on this server process (its "
                         "--max-streams-per-key): close some (dashboard tabs, followers), or raise that bound",
                    {"Retry-After": str(STREAMS_RETRY_AFTER)}, reason="too many streams")


class _Stream(StreamingResponse):
    """A streamed answer that calls ``closed()`` once it is over, however it ends: streamed to its end, its client
    gone (disconnected, reset, killed), or cancelled before its first byte (where a generator's ``finally`` never
    runs: it never started)."""

    def __init__(self, content: AsyncIterator[str], *, closed: Callable[[], None], **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(content, **kwargs)
        self.closed = closed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.closed()
