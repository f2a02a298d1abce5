"""``/events``: live state changes as Server-Sent Events, from the Server's event bus.

A stream stays open for hours (the dashboard's), so its credential is checked again before each group of events
it sends and at each keep-alive: a key revoked while the stream is open gets nothing recorded after the revocation,
and the stream ends with a comment saying why (the client's next request is refused, as any would be). A server
asked to stop ends every stream (:mod:`~sematic_k8s_server.shutdown`): its followers connect again, to another
replica."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from sematic_k8s_server import auth, schemas, scopes
from sematic_k8s_server.deps import API, Caller
from sematic_k8s_server.state import Server

KEEPALIVE_SECONDS = 15.0
GROUP = 1000  # events sent after one check of the credential, at most

router = APIRouter(prefix=API, tags=["events"])


@router.get("/events", summary="Live state changes (Server-Sent Events)", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": 'one `data: {"type": "run"|"resolution", "id", "root_id", '
                                            '"state"}` line per change; `{"type": "overflow"}` means events '
                                            'were dropped: refetch'}})
async def events(request: Request, caller: Caller,
                 root_id: Annotated[str | None, Query(pattern=schemas.HEX_ID)] = None) -> StreamingResponse:
    scopes.require_key(caller, "follow live events")
    srv: Server = request.app.state.server
    sub = srv.bus.subscribe(root_id)

    key = request.headers.get(auth.HEADER)

    async def refusal() -> str | None:
        """Why the stream's credential no longer opens the API (revoked, expired), or None."""
        if not srv.auth.required:
            return None
        try:
            await srv.credentials.submit(key)
        except auth.Unauthorized as e:
            return str(e)
        return None

    async def stream() -> AsyncIterator[str]:
        try:
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
        finally:
            srv.bus.unsubscribe(sub)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
