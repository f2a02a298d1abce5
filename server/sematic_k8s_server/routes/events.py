"""``/events``: live state changes as Server-Sent Events, from the Server's event bus."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from sematic_k8s_server import schemas, scopes
from sematic_k8s_server.deps import API, Caller
from sematic_k8s_server.state import Server

KEEPALIVE_SECONDS = 15.0

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

    async def stream() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            while True:
                if sub.overflowed:
                    while not sub.queue.empty():
                        sub.queue.get_nowait()
                    sub.overflowed = False
                    yield 'data: {"type": "overflow"}\n\n'
                try:
                    event = await sub.next(KEEPALIVE_SECONDS)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield ": keepalive\n\n"
                    continue
                if event is None:  # the server is stopping: the follower connects again (to another replica)
                    return
                yield f"data: {json.dumps(event)}\n\n"
        finally:
            srv.bus.unsubscribe(sub)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
