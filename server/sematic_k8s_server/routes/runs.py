"""``/runs``: list runs by resolution, state and func (their func's source left out, an excerpt of their error);
read one whole."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from sematic_k8s_server import schemas, scopes
from sematic_k8s_server.deps import API, NOT_FOUND, Caller, Limit, Offset, RunId, Srv, StateFilter, found

router = APIRouter(prefix=API, tags=["runs"])


@router.get("/runs", response_model=schemas.RunPage,
            summary="List runs, in creation order (or newest first), filtered by resolution, state, func and id "
                    "prefix; without their func's source and with an excerpt of their error (GET /runs/{id} has "
                    "them whole)")
def list_runs(srv: Srv, caller: Caller, root_id: Annotated[str | None, Query(pattern=schemas.HEX_ID)] = None,
              state: StateFilter = None,
              func: Annotated[str | None, Query(max_length=512, description="func name or module:qualname")] = None,
              id_prefix: Annotated[str | None, Query(pattern=schemas.HEX_ID, description="ids starting so")] = None,
              order: Annotated[Literal["asc", "desc"], Query(description="asc: oldest first")] = "asc",
              limit: Limit = 100, offset: Offset = 0) -> dict:
    if root_id is None:
        scopes.require_key(caller, "list runs of every resolution")
    scopes.check_read(caller, root_id)
    items = srv.store.list_runs(root_id=root_id, state=state, func=func, limit=limit, offset=offset,
                                id_prefix=id_prefix, newest_first=order == "desc")
    return {"items": [r.listed() for r in items], "limit": limit, "offset": offset}


@router.get("/runs/{run_id}", response_model=schemas.RunDetail, responses=NOT_FOUND,
            summary="One run, whole (its func's source and its whole error too)")
def get_run(srv: Srv, caller: Caller, run_id: RunId) -> dict:
    run = found(srv.store.get_run(run_id), "run", run_id)
    scopes.check_run(caller, run_id, run.root_id)
    return run.to_dict()
