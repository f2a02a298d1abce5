"""The answer to a request that waited past the server's bound on lock waits (:mod:`sematic_k8s.store.lockwait`):
another session (a migration, maintenance: ``LOCK TABLE``) held a table it needs. Apart from the database's other
failures (:mod:`~sematic_k8s_server.problems`): the store names this one, and the table."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sematic_k8s.errors import TableLocked
from sematic_k8s_server.problems import problem

log = logging.getLogger("sematic_k8s_server")
RETRY_AFTER = "5"


async def table_locked(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After, in the store's words (the table, the bound, what to do): the request's transaction was
    rolled back, nothing of it recorded; clients send it again, and it lands once the lock is let go. Answered before
    a client's own timeout (60 s), so that no second attempt waits in the server beside the first."""
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return problem(503, str(exc), {"Retry-After": RETRY_AFTER})


def install(app: FastAPI) -> None:
    app.add_exception_handler(TableLocked, table_locked)
