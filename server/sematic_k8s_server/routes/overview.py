"""``/resolutions/{id}/overview`` and ``/counts``: a resolution's graph at a glance (fan-outs as groups, paged
on request) and its runs counted by state, both cheap for thousands of runs."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from sematic_k8s_server import overview as ov
from sematic_k8s_server import queries, schemas, scopes
from sematic_k8s_server.deps import API, NOT_FOUND, Caller, ResolutionId, Srv, found

router = APIRouter(prefix=API, tags=["resolutions"])
EXPAND = re.compile(r"^(g/[^@]{1,700})@(\d{1,9})$")


@router.get("/resolutions/{resolution_id}/overview", response_model=schemas.OverviewOut, responses=NOT_FOUND,
            summary="A resolution's runs at a glance: fan-outs grouped, edges between what is shown")
def get_overview(srv: Srv, caller: Caller, resolution_id: ResolutionId,
                 expand: Annotated[list[str], Query(max_length=50, description="GROUP_ID@OFFSET: show that page of "
                                                                              "a group's runs one by one")] = [],  # noqa: B006
                 page: Annotated[int, Query(ge=1, le=200, description="runs of an expanded group per page")] = ov.PAGE,
                 ) -> dict:
    res = found(srv.store.get_resolution(resolution_id), "resolution", resolution_id)
    pages: dict[str, int] = {}
    for item in expand:
        m = EXPAND.match(item)
        if not m:
            raise HTTPException(422, f"bad expand {item[:80]!r}: give GROUP_ID@OFFSET, e.g. g/PARENT/mod:func@50")
        pages[m.group(1)] = int(m.group(2))
    rows = queries.overview_rows(srv.store, resolution_id)
    out = ov.overview(rows, resolution_id, pages, page)
    by_id = {r.id: r for r in rows}
    summaries = queries.label_summaries(srv.store, ov.label_inputs(out["nodes"], by_id))
    ov.add_labels(out["nodes"], by_id, summaries.__getitem__)
    waiting = srv.store.waiting_runs(resolution_id) if out["counts"].get("running") else {}
    refused = scopes.action_refusal(caller, srv.store, srv.config.actions_by, resolution_id,
                                    "cancel, re-run, continue, label or note")  # the page's actions drawn disabled
    return {"resolution": res.to_dict(), **out, "page": page, "waiting": waiting, "actions_refused": refused}


@router.get("/resolutions/{resolution_id}/counts", response_model=schemas.CountsOut, responses=NOT_FOUND,
            summary="A resolution's runs counted by state")
def get_counts(srv: Srv, resolution_id: ResolutionId) -> dict:
    res = found(srv.store.get_resolution(resolution_id), "resolution", resolution_id)
    counts = srv.store.run_counts(resolution_id)
    waiting = srv.store.waiting_runs(resolution_id) if counts.get("running") else {}
    return {"resolution_id": resolution_id, "state": res.state, "counts": counts, "total": sum(counts.values()),
            "waiting": waiting, "driver_epoch": res.driver_epoch}
