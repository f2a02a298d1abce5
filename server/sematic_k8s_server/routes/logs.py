"""``/runs/{run_id}/logs``: a run's captured stdout and stderr, read from artifact storage."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from sematic_k8s.storage.base import log_key
from sematic_k8s_server import scopes
from sematic_k8s_server.deps import API, NOT_FOUND, Caller, RunId, Srv, not_found

router = APIRouter(prefix=API, tags=["runs"])


@router.get("/runs/{run_id}/logs", response_class=PlainTextResponse, responses=NOT_FOUND,
            summary="A run's captured stdout and stderr (empty if none)")
def get_logs(srv: Srv, caller: Caller, run_id: RunId) -> PlainTextResponse:
    run = srv.store.get_run(run_id)
    if run is None:
        raise not_found("run", run_id)
    scopes.check_read(caller, run.root_id)
    try:
        text = srv.storage.get(log_key(run_id)).decode(errors="replace")
    except KeyError:
        text = ""
    return PlainTextResponse(text)
