"""Errors as JSON: every failure answers ``{"detail": "<one line saying what and what to do>", ...}`` with a
4xx or 5xx status, never a bare 500 page. Infrastructure the server depends on (artifact storage, the
metadata database) failing is a 503 that names it; its disk full, a 507 (Insufficient Storage) that says so; a query
the database canceled at its statement_timeout, a 504 (Gateway Timeout) that says so."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from sematic_k8s.errors import DatabaseLocked, DatabaseReadOnly, DiskFull, StorageError, TableLocked
from sematic_k8s.store.http import STATEMENT_TIMEOUT
from sematic_k8s_server import dbfailures
from sematic_k8s_server.schemas import Problem

log = logging.getLogger("sematic_k8s_server")
JSON = "application/json"
ERRORS: dict[int | str, dict[str, Any]] = {  # every endpoint's errors in OpenAPI (FastAPI's own 422 body is not ours)
    "4XX": {"model": Problem, "description": "refused: `detail` says why and what to do (a 401 without a valid "
                                             "API key; a 422 lists the request's bad fields under `errors`)"},
    "5XX": {"model": Problem, "description": "the server, or what it depends on, failed: `detail` says which "
                                             "(503, 504: retry after `Retry-After` seconds)"}}


class ApiError(HTTPException):
    """An HTTP error whose JSON body carries ``extra`` fields beside ``detail`` (e.g. a command to run)."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(status_code, detail, headers)
        self.extra = extra


def problem(status: int, detail: str, headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=dict(headers or {}))


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem(exc.status_code, str(exc.detail), exc.headers, **exc.extra)


async def _invalid_request(_: Request, exc: Exception) -> JSONResponse:
    """422 with one line per problem (``query parameter 'limit': ...``) and the details under ``errors``."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    described = "; ".join(_describe(e) for e in errors[:MAX_DESCRIBED]) or "invalid request"
    if len(errors) > MAX_DESCRIBED:
        described += f"; and {len(errors) - MAX_DESCRIBED} more (see errors)"
    shown = [{k: v for k, v in e.items() if k != "input"} for e in errors[:MAX_ERRORS]]  # never the client's data
    return problem(422, described, errors=jsonable_encoder(shown, custom_encoder={Exception: str}))


MAX_DESCRIBED, MAX_ERRORS = 5, 100  # a body with a million bad fields (or a huge one) gets a short answer
_MESSAGES = {"extra_forbidden": "not a field of this request or record, or one that may not be changed: see "
                                "/docs for the fields it takes",
             # a body's fields are parsed strictly (schemas.STRICT): say what JSON they take
             "bool_type": "not a boolean: send JSON true or false (not a string or a number)",
             "int_type": "not an integer: send a JSON number without a fraction (not a string or a boolean)"}
NOT_AN_OBJECT = "not a JSON object: send one, with Content-Type: application/json"


def _describe(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":  # its loc is ("body", the character's position), not a field
        where = error.get("loc", ())[1:]
        why = (error.get("ctx") or {}).get("error", "")
        return (f"body: not valid JSON at character {where[0]}" if where else "body: not valid JSON") + (
            f": {why}" if why else "")
    if error.get("type") == "model_attributes_type" and tuple(error.get("loc", ())) == ("body",):
        return f"body: {NOT_AN_OBJECT}"  # text, a form, a JSON array or string where an object goes
    loc = [str(part) for part in error.get("loc", ())]
    where = {"query": "query parameter", "path": "path parameter", "body": "body field",
             "header": "header"}.get(loc[0], loc[0]) if loc else "request"
    name = ".".join(loc[1:])
    message = _MESSAGES.get(error.get("type", ""), error.get("msg", "invalid"))
    return f"{where} {name!r}: {message}" if name else f"{where}: {message}"


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    """Chosen by the error's ``fix`` alone (as its advice is): an outage is 503, retried after Retry-After; a refusal
    (a link at a key, a directory where a key's file goes, one the server may not read, a missing bucket, refused
    credentials) is 409 in its words, not retried: it stays until someone does its fix."""
    assert isinstance(exc, StorageError)
    log.warning("%s %s: artifact storage failed: %s", request.method, request.url.path, exc)
    if exc.fix:
        return problem(409, str(exc))
    return problem(503, f"artifact storage is unavailable: {exc}", {"Retry-After": "5"})


async def _disk_full(request: Request, exc: Exception) -> JSONResponse:
    """507, not 503: a full disk does not pass by itself, so clients do not retry it (the HTTP store raises it).
    Which disk and file stay in the server's log: a client learns no path of the server's."""
    assert isinstance(exc, DiskFull)
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return problem(507, "the server's disk is full (its metadata database cannot grow): nothing of this request "
                        "was recorded; its log names the disk")


async def _database_locked(request: Request, exc: Exception) -> JSONResponse:
    """503, as for an unavailable database (clients retry while the transaction holding the lock ends), saying who
    held it in the store's words (another process, or a write of the server's own). Which file stays in the server's
    log."""
    assert isinstance(exc, DatabaseLocked)
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return problem(503, f"the metadata database is locked by {exc.holder}: nothing of this request was recorded; "
                        "the server's log names the file", {"Retry-After": "5"})


async def _database_read_only(request: Request, exc: Exception) -> JSONResponse:
    """503, not the 422 or 500 of a statement's fault: a failover's standby passes by itself, and an operator's
    setting is undone by them; clients retry meanwhile (the store dropped its connections: the next one connects
    afresh). The words are the store's, with no host or database name."""
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return problem(503, f"{exc}; retry later (a failover ends by itself)", {"Retry-After": "5"})


async def _table_locked(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After, in the store's words (:mod:`sematic_k8s.store.lockwait`: the table another session held
    past the server's bound on lock waits, the bound, what to do): the request's transaction was rolled back, nothing
    of it recorded; clients send it again, and it lands once the lock is let go. Answered before a client's own
    timeout (60 s), so that no second attempt waits in the server beside the first."""
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return problem(503, str(exc), {"Retry-After": "5"})


def _database_error(engine: sa.Engine) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """The handler of the database's failures (:mod:`~sematic_k8s_server.dbfailures` says which, and logs them: not
    the statement and its parameters, a client's records):

    - a query canceled at the database's statement_timeout: 504 (Gateway Timeout: the database, behind the server,
      did not answer in its operator's time), ``reason`` :data:`~sematic_k8s.store.http.STATEMENT_TIMEOUT`, which
      the HTTP store tries a few times only (a lock that held it up may be released; a listing that always takes
      longer fails with these words, not after the retry window; a proxy's 504, without it, is tried for the window);
    - anything else: 503, retried by clients, in :func:`~sematic_k8s_server.dbfailures.told`'s words (no connection
      to spare: said so; else the failure's kind), never the database's own, which may name its host, port and user
      (the log has them)."""
    failures = dbfailures.of(engine)

    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        orig = getattr(exc, "orig", None) or exc
        # 57014: the limit asked (and, the first time, where the database raises it), then told from a cancel request
        limit = await run_in_threadpool(dbfailures.statement_timeout, engine) if dbfailures.canceled(orig) else None
        if dbfailures.at_statement_timeout(orig, engine):
            route = request.scope.get("route")
            failures.timed_out(f"{request.method} {getattr(route, 'path', request.url.path)}", limit or "unknown")
            return problem(504, "the metadata database canceled this request's query at its statement_timeout "
                                f"({f'{limit}, ' if limit else ''}set for the server's role or database): raise it for "
                                "the server's role (ALTER ROLE ... SET statement_timeout), or ask for less (e.g. a "
                                "smaller page)", {"Retry-After": GATEWAY_TIMEOUT_RETRY_AFTER},
                           reason=STATEMENT_TIMEOUT)
        # the log: the database's own words; both may connect (a refused connection's SQLSTATE learned): off the loop
        await run_in_threadpool(failures.failed, orig, f"{request.method} {request.url.path}")
        return problem(503, await run_in_threadpool(dbfailures.told, orig, engine), {"Retry-After": "5"})

    return database_error


GATEWAY_TIMEOUT_RETRY_AFTER = "2"  # seconds: the HTTP store's tries of a 504 are few (http.GATEWAY_TIMEOUT_TRIES)


async def _refused_value(_: Request, exc: Exception) -> JSONResponse:
    """A value of the request the database cannot keep (PostgreSQL: a NUL character in text; a number out of
    range): the client's to change."""
    orig = getattr(exc, "orig", None) or exc
    return problem(422, f"the database refuses a value of this request: {orig}".splitlines()[0])


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:  # the ASGI server logs the traceback
    return problem(500, f"internal error: {type(exc).__name__}: {exc}".splitlines()[0])


def _documented(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi``, with every error response that routes describe in words alone (``{409: {"description":
    ...}}``) given the body every error has (:data:`ERRORS`' ``Problem``)."""
    openapi = app.openapi

    def with_problems() -> dict[str, Any]:
        if app.openapi_schema is None:
            for operations in openapi().get("paths", {}).values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        if status[0] in "45" and "schema" not in response.get("content", {}).get(JSON, {}):
                            response.setdefault("content", {}).setdefault(JSON, {})["schema"] = {
                                "$ref": "#/components/schemas/Problem"}
        assert app.openapi_schema is not None
        return app.openapi_schema

    return with_problems


def install(app: FastAPI, engine: sa.Engine) -> None:
    """Register the handlers: ApiError, storage and database failures (of ``engine``'s database), and anything else
    as a JSON 500; document their body in OpenAPI (routes are included with :data:`ERRORS`)."""
    database_error = _database_error(engine)
    app.openapi = _documented(app)  # type: ignore[method-assign]
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(DiskFull, _disk_full)
    app.add_exception_handler(DatabaseLocked, _database_locked)
    app.add_exception_handler(DatabaseReadOnly, _database_read_only)
    app.add_exception_handler(TableLocked, _table_locked)  # a lock held past the bound: 503 naming the table
    app.add_exception_handler(sqlalchemy.exc.OperationalError, database_error)
    app.add_exception_handler(sqlalchemy.exc.InterfaceError, database_error)
    app.add_exception_handler(sqlalchemy.exc.TimeoutError, database_error)  # the pool: no connection in time
    app.add_exception_handler(sqlalchemy.exc.DataError, _refused_value)
    app.add_exception_handler(Exception, _unexpected)
