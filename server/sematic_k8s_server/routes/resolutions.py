"""``/resolutions``: list them, read one or its whole graph; the rerun and cancel actions."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Request

from sematic_k8s.graph import CANCELED, FAILED, RESOLVED
from sematic_k8s.store.sql import CANCELING
from sematic_k8s_server import edges, schemas
from sematic_k8s_server.deps import API, NOT_FOUND, Limit, Offset, ResolutionId, Srv, StateFilter, not_found
from sematic_k8s_server.reruns import CloudLauncher, RerunRequest

router = APIRouter(prefix=API)


@router.get("/resolutions", response_model=schemas.ResolutionPage, tags=["resolutions"],
            summary="List resolutions, newest first")
def list_resolutions(srv: Srv, state: StateFilter = None, limit: Limit = 100, offset: Offset = 0) -> dict:
    items = srv.store.list_resolutions(state=state, limit=limit, offset=offset)
    return {"items": [r.to_dict() for r in items], "limit": limit, "offset": offset}


@router.get("/resolutions/{resolution_id}", response_model=schemas.ResolutionOut, responses=NOT_FOUND,
            tags=["resolutions"], summary="One resolution")
def get_resolution(srv: Srv, resolution_id: ResolutionId) -> dict:
    res = srv.store.get_resolution(resolution_id)
    if res is None:
        raise not_found("resolution", resolution_id)
    return res.to_dict()


@router.get("/resolutions/{resolution_id}/graph", response_model=schemas.GraphOut, responses=NOT_FOUND,
            tags=["resolutions"], summary="A resolution with all its runs and the edges between them")
def get_graph(srv: Srv, resolution_id: ResolutionId) -> dict:
    res = srv.store.get_resolution(resolution_id)
    if res is None:
        raise not_found("resolution", resolution_id)
    runs = srv.store.runs_of_root(resolution_id)
    runs.sort(key=lambda r: (r.created_at is None, r.created_at, r.id))
    return {"resolution": res.to_dict(), "runs": [r.to_dict() for r in runs],
            "edges": edges.edges(runs, resolution_id)}


@router.post("/resolutions/{resolution_id}/rerun", status_code=202, response_model=schemas.RerunOut,
             responses={**NOT_FOUND, 409: {"description": "the resolution is still running"},
                        501: {"description": "this server cannot start reruns"}},
             tags=["actions"], summary="Re-run a resolution, or re-run it from one of its runs")
def rerun(srv: Srv, request: Request, resolution_id: ResolutionId, body: schemas.RerunIn) -> dict:
    """Starts a new resolution that clones this one: ``rerun_from`` (default: the root, i.e. everything)
    and what depends on it execute again, every other run is reused. Returns the new id at once."""
    res = srv.store.get_resolution(resolution_id)
    if res is None:
        raise not_found("resolution", resolution_id)
    target = body.rerun_from or resolution_id
    run = srv.store.get_run(target)
    if run is None:
        raise not_found("run", target)
    if run.root_id != resolution_id:
        raise HTTPException(422, f"run {target} belongs to resolution {run.root_id}, not {resolution_id}")
    if body.mode == "continue" and target != resolution_id:
        raise HTTPException(422, "mode 'continue' re-runs a whole resolution: leave rerun_from null")
    if res.state not in (RESOLVED, FAILED, CANCELED):
        raise HTTPException(409, f"resolution {resolution_id} is {res.state}: wait for it to end, or cancel it")
    cloud = (res.settings or {}).get("kind") == "cloud"
    if srv.launcher is None and not cloud:
        raise HTTPException(501, "this server cannot start reruns: its artifact storage is not a local "
                                 "HOME/storage directory and no rerun launcher is configured")
    new_id = uuid.uuid4().hex
    root_run = srv.store.get_run(resolution_id)
    launcher = CloudLauncher() if cloud else srv.launcher
    launcher.launch(RerunRequest(  # type: ignore[union-attr]
        new_id=new_id, rerun_of=resolution_id, rerun_from=target, mode=body.mode,
        root_func_path=res.root_func_path, image=res.image, build_hash=res.build_hash,
        server_url=srv.self_url or _own_url(request),
        api_key=srv.auth.internal_key if srv.auth.required else None,
        max_parallelism=int((res.settings or {}).get("max_parallelism") or 1), settings=res.settings,
        root_source_file=root_run.source_file if root_run else None))
    return {"resolution_id": new_id, "rerun_of": resolution_id}


@router.post("/resolutions/{resolution_id}/cancel", status_code=202, response_model=schemas.CancelOut,
             responses={**NOT_FOUND, 409: {"description": "the resolution has already ended"}},
             tags=["actions"], summary="Ask a running resolution to cancel")
def cancel(srv: Srv, resolution_id: ResolutionId) -> dict:
    """Marks it ``canceling``; its resolution loop notices within about a second, cancels its runs
    and records ``canceled``."""
    with srv.write_lock:
        state = srv.store.request_cancel(resolution_id)
    if state is None:
        raise not_found("resolution", resolution_id)
    if state != CANCELING:
        raise HTTPException(409, f"resolution {resolution_id} is already {state}")
    srv.bus.publish([{"type": "resolution", "id": resolution_id, "root_id": resolution_id, "state": state}])
    return {"resolution_id": resolution_id, "state": state}


def _own_url(request: Request) -> str:
    """This server's address as the connection arrived (the socket, never the client's Host header)."""
    host, port = request.scope["server"]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
