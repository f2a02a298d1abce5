"""What the route modules share: the Server dependency, the caller (checked by the Guard before any route
runs), query strings without NUL characters, the one check of actions on a resolution (whose key may take them),
validated ids and paging, 404s and a body's refused text, and bodies parsed as strict JSON."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import anyio.to_thread
import orjson
from fastapi import Depends, HTTPException, Query, Request, Response, Security
from fastapi import Path as PathParam
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from pydantic import AfterValidator

from sematic_k8s import limits
from sematic_k8s.store.texts import NulText
from sematic_k8s_server import auth, schemas, scopes
from sematic_k8s_server.auth import Principal
from sematic_k8s_server.problems import ApiError
from sematic_k8s_server.state import Server

API = "/api/v1"
MAX_LIMIT = 1000

RunId = Annotated[str, PathParam(pattern=schemas.HEX_ID, description="a run id (hex)")]
ResolutionId = Annotated[str, PathParam(pattern=schemas.HEX_ID, description="a resolution id (its root run id)")]
ArtifactId = Annotated[str, PathParam(pattern=schemas.SHA256, description="an artifact id (sha256 hex)")]
MAX_OFFSET = 10_000_000
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"page size, 1 to {MAX_LIMIT}")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"items to skip, 0 to {MAX_OFFSET}")]
StateFilter = Annotated[str | None, Query(pattern=r"^[a-z]{1,16}$", description="only this state")]


def _naive_utc(t: dt.datetime | None) -> dt.datetime | None:
    """``t`` as the store keeps times (naive UTC); ValueError (a 422) for one whose UTC is no date a database keeps
    (``9999-12-31T23:00:00-05:00``), which the conversion overflows on."""
    if t is None or t.tzinfo is None:
        return t
    try:
        return t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    except OverflowError:
        raise ValueError("a time whose UTC falls before year 1 or after 9999: give one within them") from None


UtcTime = Annotated[dt.datetime | None, AfterValidator(_naive_utc)]  # a time in a query, as the store keeps them
NOT_FOUND: dict[int | str, dict[str, Any]] = {  # FastAPI's type for responses=
    404: {"description": "unknown id", "content": {"application/json": {"example": {"detail": "..."}}}}}

_key_header = APIKeyHeader(name=auth.HEADER, auto_error=False, description="an API key (sematic-k8s api-keys create)")


async def _server(request: Request) -> Server:  # async: no thread hop for a lookup
    return request.app.state.server


Srv = Annotated[Server, Depends(_server)]


async def require_key(request: Request, key: Annotated[str | None, Security(_key_header)] = None) -> None:
    """401 unless the Guard let the request in with a credential (it documents the header in OpenAPI)."""
    if "principal" not in request.scope.get("state", {}):
        raise HTTPException(401, auth.MESSAGE, headers={"WWW-Authenticate": auth.HEADER})


async def query_without_nul(request: Request) -> None:
    """422 naming the first query parameter whose value holds a NUL character: the app's dependency, so every route's
    (one added later too), whatever the parameter's type, on every database. Was: PostgreSQL refused a text one as a
    422 naming no parameter ("the database refuses a value of this request"), SQLite searched with it."""
    for name, value in request.query_params.multi_items():
        if "\x00" in value:
            raise HTTPException(422, f"query parameter {name[:64]!r} holds a NUL character; remove it")


NOT_OWNER: dict[str, Any] = {"description": "another key recorded the resolution (--actions-by owner)"}
ACTION = "x-sematic-k8s-action"  # a route's marker (in its OpenAPI operation): the action it takes on its resolution


def action(what: str) -> dict[str, Any]:
    """The ``openapi_extra`` of a route that takes ``what`` action ("cancel", ...) on the resolution of its path
    (``resolution_id``): :func:`may_act` checks the caller may take it."""
    return {ACTION: what}


async def may_act(request: Request) -> None:
    """403 unless the caller may take the action its route is marked with (:func:`action`) on the resolution of its
    path (:func:`~sematic_k8s_server.scopes.action_refusal`: ``--actions-by``): a dependency of every keyed route, so
    the one check of every action route, a route marked later too. Unmarked routes: nothing to check. A caller who
    may act on any resolution (:func:`~sematic_k8s_server.scopes.acts_on_any`: the default ``--actions-by team``, an
    admin key) is let through on the event loop; only a read of the owner goes to a worker thread."""
    route = request.scope.get("route")
    what = (getattr(route, "openapi_extra", None) or {}).get(ACTION)
    principal = request.scope.get("state", {}).get("principal")
    resolution_id = str(request.path_params.get("resolution_id"))
    if what is None or principal is None or not re.fullmatch(schemas.HEX_ID, resolution_id):
        return  # an id that is none: the route's 422
    srv: Server = request.app.state.server
    if scopes.acts_on_any(principal, srv.config.actions_by):
        return
    refusal = await anyio.to_thread.run_sync(scopes.action_refusal, principal, srv.store, srv.config.actions_by,
                                             resolution_id, what)
    if refusal is not None:
        raise ApiError(403, refusal, reason="not-owner")


async def _caller(request: Request) -> Principal:
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:
        raise HTTPException(401, auth.MESSAGE, headers={"WWW-Authenticate": auth.HEADER})
    return principal


Caller = Annotated[Principal, Depends(_caller)]


def not_found(what: str, id_: str) -> HTTPException:
    """The 404 for an unknown id: raise it."""
    return HTTPException(404, f"no {what} with id {id_!r}")


def nul_refused(e: NulText) -> HTTPException:
    """The 422 of a request body's record text holding a NUL character, which the store refused (``store.texts``,
    the one check of every write): ``body field 'new_runs.<id>.func_name' holds a NUL character ...: remove it``."""
    return HTTPException(422, f"body field {e.path!r} {limits.NUL_HELD}")


T = TypeVar("T")


def found(value: T | None, what: str, id_: str) -> T:
    """``value``, or the 404 for an unknown ``id_`` when it is None."""
    if value is None:
        raise not_found(what, id_)
    return value


class _StrictJsonRequest(Request):
    """A request whose JSON body is parsed by orjson, as the write fast path parses it: NaN, Infinity (which
    Python's json module takes, and browsers' JSON.parse refuses once recorded) and text that is not UTF-8 are
    refused as a JSON decode error (422)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """The route class of routers whose endpoints take a JSON body (``APIRouter(route_class=StrictJsonRoute)``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict
