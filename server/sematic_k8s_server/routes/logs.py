"""``/runs/{run_id}/logs``: a run's captured stdout and stderr, read from the storage its resolution recorded
(when this server reads that storage: see :mod:`sematic_k8s_server.storages`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse

from sematic_k8s.storage.base import log_key
from sematic_k8s_server import scopes
from sematic_k8s_server.deps import API, NOT_FOUND, Caller, RunId, Srv, found
from sematic_k8s_server.storages import StorageNotAllowed

router = APIRouter(prefix=API, tags=["runs"])
SIZE_HEADER = "X-Log-Size"


@router.get("/runs/{run_id}/logs", response_class=PlainTextResponse,
            responses={**NOT_FOUND, 409: {"description": "recorded in a storage this server does not read"}},
            summary="A run's captured stdout and stderr (empty if none)")
def get_logs(srv: Srv, caller: Caller, run_id: RunId,
             offset: Annotated[int, Query(ge=0, description="skip this many bytes (to follow a growing log)")] = 0
             ) -> PlainTextResponse:
    """The log from byte ``offset`` on; the ``X-Log-Size`` header is the log's whole size in bytes (the
    offset to ask for next)."""
    run = found(srv.store.get_run(run_id), "run", run_id)
    scopes.check_read(caller, run.root_id)
    try:
        storage = srv.storages.of_resolution(srv.store, run.root_id)
    except StorageNotAllowed as e:
        raise HTTPException(409, str(e)) from None
    try:
        data = storage.get(log_key(run_id))
    except KeyError:
        data = b""
    return PlainTextResponse(data[offset:].decode(errors="replace"), headers={SIZE_HEADER: str(len(data))})
