"""``/pipelines``: resolutions grouped by root func with their history, filtered; running ones with run counts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from sematic_k8s.graph import CANCELED, FAILED, RESOLVED
from sematic_k8s_server import queries, schemas
from sematic_k8s_server.deps import API, MAX_OFFSET, Offset, Srv, StateFilter, UtcTime

router = APIRouter(prefix=API, tags=["resolutions"])
ENDED = (RESOLVED, FAILED, CANCELED)


@router.get("/pipelines", response_model=schemas.PipelinesOut,
            summary="Resolutions grouped by root func, newest first, with filters")
def pipelines(srv: Srv,
              q: Annotated[str | None, Query(max_length=200, description="text in the root func, a tag or the "
                                                                          "note, or an id prefix")] = None,
              func: Annotated[str | None, Query(max_length=512, description="root func: module:qualname or "
                                                                              "its name")] = None,
              state: StateFilter = None,
              tag: Annotated[str | None, Query(pattern=schemas.TAG)] = None,
              since: Annotated[UtcTime, Query(description="created at or after (ISO 8601)")] = None,
              until: Annotated[UtcTime, Query(description="created before (ISO 8601)")] = None,
              limit: Annotated[int, Query(ge=1, le=200, description="root funcs per page")] = 20,
              offset: Offset = 0,
              per_func: Annotated[int, Query(ge=1, le=200, description="resolutions shown per root func")] = 5,
              history_offset: Annotated[int, Query(ge=0, le=MAX_OFFSET,
                                                   description="skip this many of each func's")] = 0,
              ) -> dict:
    flt = queries.ResolutionFilter(q=q or None, func=func or None, state=state, tag=tag, since=since,
                                   until=until)
    found = queries.pipelines(srv.store, flt, limit=limit, offset=offset, per_func=per_func,
                              history_offset=history_offset)
    running = [r.id for g in found["groups"] for r in g["resolutions"] if r.state not in ENDED]
    counts = srv.store.run_counts_of(running)
    groups = [{**g, "latest": g["latest"].isoformat() + "Z" if g["latest"] else None,
               "resolutions": [{**r.to_dict(), "run_counts": counts.get(r.id)} for r in g["resolutions"]]}
              for g in found["groups"]]
    funcs, funcs_total = queries.root_funcs(srv.store)
    return {"total": found["total"], "limit": limit, "offset": offset, "funcs": funcs, "funcs_total": funcs_total,
            "groups": groups}
