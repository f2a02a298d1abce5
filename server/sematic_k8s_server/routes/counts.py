"""``/resolutions/{resolution_id}/counts``: a resolution's state and how many of its runs are in each state, in
one small answer (what a client following a resolution polls, instead of every run)."""

from __future__ import annotations

from fastapi import APIRouter

from sematic_k8s_server import schemas
from sematic_k8s_server.deps import API, NOT_FOUND, ResolutionId, Srv, not_found

router = APIRouter(prefix=API, tags=["resolutions"])


@router.get("/resolutions/{resolution_id}/counts", response_model=schemas.RunCounts, responses=NOT_FOUND,
            summary="A resolution's state and its runs counted by state")
def run_counts(srv: Srv, resolution_id: ResolutionId) -> dict:
    res = srv.store.get_resolution(resolution_id)
    if res is None:
        raise not_found("resolution", resolution_id)
    return {"resolution_id": resolution_id, "state": res.state, "counts": srv.store.run_counts(resolution_id)}
