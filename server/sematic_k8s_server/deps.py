"""What the route modules share: the Server dependency, the API-key check, validated ids and paging, 404s."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader

from sematic_k8s_server import auth, schemas
from sematic_k8s_server.state import Server

API = "/api/v1"
MAX_LIMIT = 1000

RunId = Annotated[str, PathParam(pattern=schemas.HEX_ID, description="a run id (hex)")]
ResolutionId = Annotated[str, PathParam(pattern=schemas.HEX_ID, description="a resolution id (its root run id)")]
ArtifactId = Annotated[str, PathParam(pattern=schemas.SHA256, description="an artifact id (sha256 hex)")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"page size, at most {MAX_LIMIT}")]
Offset = Annotated[int, Query(ge=0, description="items to skip")]
StateFilter = Annotated[str | None, Query(pattern=r"^[a-z]{1,16}$", description="only this state")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {  # FastAPI's type for responses=
    404: {"description": "unknown id", "content": {"application/json": {"example": {"detail": "..."}}}}}

_key_header = APIKeyHeader(name=auth.HEADER, auto_error=False, description="an API key (sematic-k8s api-keys create)")


async def _server(request: Request) -> Server:  # async: no thread hop for a lookup
    return request.app.state.server


Srv = Annotated[Server, Depends(_server)]


async def require_key(request: Request, key: Annotated[str | None, Security(_key_header)] = None) -> None:
    """401 unless the request carries a valid API key (always passes when keys are not required)."""
    authenticator = request.app.state.server.auth
    ok = authenticator.check_cached(key)
    if ok is None:  # not seen recently: ask the database, off the event loop
        ok = await run_in_threadpool(authenticator.check, key)
    if not ok:
        raise HTTPException(401, auth.MESSAGE, headers={"WWW-Authenticate": auth.HEADER})


def not_found(what: str, id_: str) -> HTTPException:
    """The 404 for an unknown id: raise it."""
    return HTTPException(404, f"no {what} with id {id_!r}")
