"""The FastAPI application: REST API over the same SqlStore the embedded mode uses.

Read endpoints serve the dashboard and the HTTP store; ``/api/v1/store/*`` is the rest of the Store
interface for clients recording through the server; ``/api/v1/events`` streams live state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy.exc
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader

import sematic_k8s
from sematic_k8s.graph import CANCELED, FAILED, RESOLVED
from sematic_k8s.storage.base import Storage, artifact_key, log_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store.http import batch_from_json
from sematic_k8s.store.records import ArtifactRecord, Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s.store.sql import CANCELING, SqlStore
from sematic_k8s_server import auth, edges, schemas
from sematic_k8s_server.dashboard import mount_dashboard
from sematic_k8s_server.events import EventBus, RootIndex, batch_events
from sematic_k8s_server.reruns import CloudLauncher, LocalProcessLauncher, RerunLauncher, RerunRequest

log = logging.getLogger("sematic_k8s_server")
API = "/api/v1"
MAX_LIMIT = 1000
KEEPALIVE_SECONDS = 15.0
FIELDS = {
    "run": {f.name for f in dataclasses.fields(RunRecord)},
    "resolution": {f.name for f in dataclasses.fields(ResolutionRecord)},
    "artifact": {f.name for f in dataclasses.fields(ArtifactRecord)},
}

RunId = Annotated[str, PathParam(pattern=schemas.HEX_ID, description="a run id (hex)")]
ResolutionId = Annotated[str, PathParam(pattern=schemas.HEX_ID, description="a resolution id (its root run id)")]
ArtifactId = Annotated[str, PathParam(pattern=schemas.SHA256, description="an artifact id (sha256 hex)")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"page size, at most {MAX_LIMIT}")]
Offset = Annotated[int, Query(ge=0, description="items to skip")]
StateFilter = Annotated[str | None, Query(pattern=r"^[a-z]{1,16}$", description="only this state")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {  # FastAPI's type for responses=
    404: {"description": "unknown id", "content": {"application/json": {"example": {"detail": "..."}}}},
}

_key_header = APIKeyHeader(name=auth.HEADER, auto_error=False, description="an API key (sematic-k8s api-keys create)")


class Server:
    """What the endpoints share: the store, artifact storage, auth, live events, rerun launching."""

    def __init__(self, store: SqlStore, storage: Storage, authenticator: auth.Authenticator,
                 launcher: RerunLauncher | None, self_url: str | None) -> None:
        self.store, self.storage, self.auth = store, storage, authenticator
        self.launcher, self.self_url = launcher, self_url
        self.bus = EventBus()
        self.roots = RootIndex()
        # SQLite allows one writer: serialize writes here rather than make clients wait on busy_timeout
        sqlite = store.engine.dialect.name == "sqlite"
        self.write_lock: Any = threading.Lock() if sqlite else contextlib.nullcontext()

    def write(self, batch: Batch) -> None:
        with self.write_lock:
            self.store.write(batch)
        self.roots.learn(batch)
        if self.bus.active:
            self.bus.publish(batch_events(batch, self.root_of))

    def root_of(self, run_id: str) -> str | None:
        root = self.roots.get(run_id)
        if root is None:
            run = self.store.get_run(run_id)
            if run is not None:
                root = run.root_id
                self.roots.put(run_id, root)
        return root

    def rerun_failed(self, request: RerunRequest, message: str) -> None:
        """A rerun process ended badly: make sure its resolution says so."""
        res = self.store.get_resolution(request.new_id)
        batch = Batch()
        if res is None:
            batch.add_resolution(ResolutionRecord(
                id=request.new_id, root_func_path=request.root_func_path, state=FAILED, rerun_of=request.rerun_of,
                settings={"kind": "local", "rerun_of": request.rerun_of, "rerun_from": request.rerun_from,
                          "rerun_mode": request.mode},
                error=message, created_at=utcnow(), ended_at=utcnow()))
        elif res.state not in (RESOLVED, FAILED, CANCELED):
            batch.resolution_updates[request.new_id] = {"state": FAILED, "error": message, "ended_at": utcnow()}
        if batch:
            self.write(batch)


async def _server(request: Request) -> Server:  # async: no thread hop for a lookup
    return request.app.state.server


async def require_key(request: Request, key: Annotated[str | None, Security(_key_header)] = None) -> None:
    authenticator = request.app.state.server.auth
    ok = authenticator.check_cached(key)
    if ok is None:  # not seen recently: ask the database, off the event loop
        ok = await run_in_threadpool(authenticator.check, key)
    if not ok:
        raise HTTPException(401, auth.MESSAGE, headers={"WWW-Authenticate": auth.HEADER})


Srv = Annotated[Server, Depends(_server)]


def _404(what: str, id_: str) -> HTTPException:
    return HTTPException(404, f"no {what} with id {id_!r}")


def create_app(store: SqlStore, storage: Storage, *, api_keys_required: bool,
               rerun_launcher: RerunLauncher | None = None, self_url: str | None = None) -> FastAPI:
    """The API over ``store`` (already migrated) and ``storage``.

    ``api_keys_required=False`` only for explicit local mode. Reruns start with ``rerun_launcher``;
    by default, when ``storage`` is a local ``HOME/storage`` directory, as local background processes
    recording through this server at ``self_url`` (default: the address the request came in on).
    """
    authenticator = auth.Authenticator(store.engine, required=api_keys_required)
    server = Server(store, storage, authenticator, None, self_url)
    if rerun_launcher is None and isinstance(storage, LocalStorage) and storage.root.name == "storage":
        rerun_launcher = LocalProcessLauncher(Path(storage.root).parent, server.rerun_failed)
    server.launcher = rerun_launcher

    app = FastAPI(title="sematic-k8s", version=sematic_k8s.__version__,
                  description="Resolutions, runs, artifacts and logs recorded by sematic-k8s; rerun and cancel "
                              f"actions; live events. Send an API key in the `{auth.HEADER}` header.")
    app.state.server = server
    app.include_router(_public_router())
    app.include_router(_api_router(), dependencies=[Depends(require_key)])
    app.include_router(_store_router(), dependencies=[Depends(require_key)])
    mount_dashboard(app)
    return app


# -- routes -----------------------------------------------------------------------------------------

def _public_router() -> APIRouter:
    router = APIRouter(prefix=API, tags=["health"])

    @router.get("/health", response_model=schemas.Health, summary="Liveness (no API key needed)")
    def health() -> dict[str, bool]:
        return {"ok": True}

    return router


def _api_router() -> APIRouter:  # noqa: C901 - one closure per endpoint
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
            raise _404("resolution", resolution_id)
        return res.to_dict()

    @router.get("/resolutions/{resolution_id}/graph", response_model=schemas.GraphOut, responses=NOT_FOUND,
                tags=["resolutions"], summary="A resolution with all its runs and the edges between them")
    def get_graph(srv: Srv, resolution_id: ResolutionId) -> dict:
        res = srv.store.get_resolution(resolution_id)
        if res is None:
            raise _404("resolution", resolution_id)
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
            raise _404("resolution", resolution_id)
        target = body.rerun_from or resolution_id
        run = srv.store.get_run(target)
        if run is None:
            raise _404("run", target)
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
            raise _404("resolution", resolution_id)
        if state != CANCELING:
            raise HTTPException(409, f"resolution {resolution_id} is already {state}")
        srv.bus.publish([{"type": "resolution", "id": resolution_id, "root_id": resolution_id, "state": state}])
        return {"resolution_id": resolution_id, "state": state}

    @router.get("/runs", response_model=schemas.RunPage, tags=["runs"],
                summary="List runs, in creation order, filtered by resolution, state and func")
    def list_runs(srv: Srv, root_id: Annotated[str | None, Query(pattern=schemas.HEX_ID)] = None,
                  state: StateFilter = None,
                  func: Annotated[str | None, Query(max_length=512, description="func name or module:qualname")] = None,
                  limit: Limit = 100, offset: Offset = 0) -> dict:
        items = srv.store.list_runs(root_id=root_id, state=state, func=func, limit=limit, offset=offset)
        return {"items": [r.to_dict() for r in items], "limit": limit, "offset": offset}

    @router.get("/runs/{run_id}", response_model=schemas.RunOut, responses=NOT_FOUND, tags=["runs"],
                summary="One run")
    def get_run(srv: Srv, run_id: RunId) -> dict:
        run = srv.store.get_run(run_id)
        if run is None:
            raise _404("run", run_id)
        return run.to_dict()

    @router.get("/runs/{run_id}/logs", response_class=PlainTextResponse, responses=NOT_FOUND, tags=["runs"],
                summary="A run's captured stdout and stderr (empty if none)")
    def get_logs(srv: Srv, run_id: RunId) -> PlainTextResponse:
        if srv.store.get_run(run_id) is None:
            raise _404("run", run_id)
        try:
            text = srv.storage.get(log_key(run_id)).decode(errors="replace")
        except KeyError:
            text = ""
        return PlainTextResponse(text)

    @router.get("/artifacts/{artifact_id}", response_model=schemas.ArtifactOut, responses=NOT_FOUND,
                tags=["artifacts"], summary="An artifact's type and summary")
    def get_artifact(srv: Srv, artifact_id: ArtifactId) -> dict:
        art = srv.store.get_artifact(artifact_id)
        if art is None:
            raise _404("artifact", artifact_id)
        return art.to_dict()

    @router.get("/artifacts/{artifact_id}/data", response_class=Response, tags=["artifacts"],
                responses={**NOT_FOUND, 200: {"content": {"application/octet-stream": {}}}},
                summary="An artifact's serialized bytes")
    def get_artifact_data(srv: Srv, artifact_id: ArtifactId) -> Response:
        if srv.store.get_artifact(artifact_id) is None:
            raise _404("artifact", artifact_id)
        try:
            data = srv.storage.get(artifact_key(artifact_id))
        except KeyError:
            raise HTTPException(404, f"artifact {artifact_id} is recorded but its bytes are not in storage") from None
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{artifact_id}"'})

    @router.get("/events", tags=["events"], summary="Live state changes (Server-Sent Events)",
                response_class=StreamingResponse,
                responses={200: {"content": {"text/event-stream": {}},
                                 "description": 'one `data: {"type": "run"|"resolution", "id", "root_id", '
                                                '"state"}` line per change; `{"type": "overflow"}` means events '
                                                'were dropped: refetch'}})
    async def events(request: Request, root_id: Annotated[str | None, Query(pattern=schemas.HEX_ID)] = None
                     ) -> StreamingResponse:
        srv: Server = request.app.state.server
        sub = srv.bus.subscribe(root_id)

        async def stream() -> AsyncIterator[str]:
            try:
                yield ": connected\n\n"
                while True:
                    if sub.overflowed:
                        while not sub.queue.empty():
                            sub.queue.get_nowait()
                        sub.overflowed = False
                        yield 'data: {"type": "overflow"}\n\n'
                    try:
                        event = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_SECONDS)
                    except TimeoutError:
                        if await request.is_disconnected():
                            return
                        yield ": keepalive\n\n"
                        continue
                    yield f"data: {json.dumps(event)}\n\n"
            finally:
                srv.bus.unsubscribe(sub)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return router


def _store_router() -> APIRouter:
    router = APIRouter(prefix=API + "/store", tags=["store"])

    @router.post("/write", response_model=schemas.Written,
                 responses={409: {"description": "conflicts with recorded data"},
                            422: {"description": "unknown fields"}},
                 summary="Apply a batch of inserts and updates in one transaction")
    def write(srv: Srv, body: schemas.BatchIn) -> dict:
        """The HTTP store's ``write``: a ``Batch`` as JSON, datetimes as ISO 8601 strings."""
        _check_fields("run", [*body.new_runs.values(), *body.run_updates.values()])
        _check_fields("resolution", [*body.new_resolutions, *body.resolution_updates.values()])
        _check_fields("artifact", body.artifacts.values())
        try:
            batch = batch_from_json(body.model_dump())
        except (TypeError, ValueError) as e:
            raise HTTPException(422, f"bad batch: {e}") from None
        try:
            srv.write(batch)
        except sqlalchemy.exc.IntegrityError as e:
            raise HTTPException(409, f"batch conflicts with recorded data: {e.orig}") from None
        except sqlalchemy.exc.StatementError as e:
            raise HTTPException(422, f"bad batch: {e.orig}") from None
        return {"ok": True}

    @router.get("/runs_of_root/{root_id}", response_model=schemas.RunList, summary="Every run of a resolution")
    def runs_of_root(srv: Srv, root_id: ResolutionId) -> dict:
        return {"items": [r.to_dict() for r in srv.store.runs_of_root(root_id)]}

    @router.get("/cached/{cache_key}", response_model=schemas.RunOut, responses=NOT_FOUND,
                summary="The most recent resolved run with this cache key")
    def cached(srv: Srv, cache_key: Annotated[str, PathParam(pattern=schemas.SHA256)]) -> dict:
        run = srv.store.find_cached(cache_key)
        if run is None:
            raise HTTPException(404, f"no resolved run with cache key {cache_key}")
        return run.to_dict()

    @router.post("/artifacts", response_model=schemas.ArtifactList, summary="The artifacts with these ids")
    def artifacts(srv: Srv, body: schemas.ArtifactIds) -> dict:
        return {"items": [a.to_dict() for a in srv.store.artifacts(body.ids)]}

    @router.get("/cancel_requested/{resolution_id}", response_model=schemas.CancelRequested,
                summary="Whether a resolution was asked to cancel (polled by its resolution loop)")
    def cancel_requested(srv: Srv, resolution_id: ResolutionId) -> dict:
        return {"cancel_requested": srv.store.cancel_requested(resolution_id)}

    return router


def _check_fields(kind: str, rows: Any) -> None:
    allowed = FIELDS[kind]
    for row in rows:
        unknown = set(row) - allowed
        if unknown:
            raise HTTPException(422, f"unknown {kind} field(s): {', '.join(sorted(unknown))}")


def _own_url(request: Request) -> str:
    """This server's address as the connection arrived (the socket, never the client's Host header)."""
    host, port = request.scope["server"]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
