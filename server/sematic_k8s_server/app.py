"""Build the FastAPI application: the REST API over the same SqlStore the embedded mode uses, and the dashboard.

The endpoints live in :mod:`sematic_k8s_server.routes`, one module per resource; what they share
(:class:`~sematic_k8s_server.state.Server`, the API-key check) is made here once per app.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import sqlalchemy.exc
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

import sematic_k8s
from sematic_k8s.storage.base import Storage
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server import auth
from sematic_k8s_server.dashboard import mount_dashboard
from sematic_k8s_server.deps import require_key
from sematic_k8s_server.reruns import LocalProcessLauncher, RerunLauncher
from sematic_k8s_server.routes import (
    artifacts,
    events,
    health,
    labels,
    logs,
    overview,
    pipelines,
    resolutions,
    runs,
    store,
)
from sematic_k8s_server.state import Server
from sematic_k8s_server.storages import Storages

PUBLIC_ROUTERS: tuple[APIRouter, ...] = (health.router,)
KEYED_ROUTERS: tuple[APIRouter, ...] = (resolutions.router, runs.router, logs.router, artifacts.router,
                                        events.router, store.router, pipelines.router, labels.router,
                                        overview.router)


def create_app(store: SqlStore, storage: Storage, *, api_keys_required: bool,
               rerun_launcher: RerunLauncher | None = None, self_url: str | None = None,
               allowed_storages: Iterable[str] = ()) -> FastAPI:
    """The API over ``store`` (already migrated) and ``storage``.

    ``api_keys_required=False`` only for explicit local mode. Reruns start with ``rerun_launcher``;
    by default, when ``storage`` is a local ``HOME/storage`` directory, as local background processes
    recording through this server at ``self_url`` (default: the address the request came in on).
    """
    authenticator = auth.Authenticator(store.engine, required=api_keys_required)
    server = Server(store, storage, authenticator, None, self_url)
    server.storages = Storages(storage, allowed_storages)
    if rerun_launcher is None and isinstance(storage, LocalStorage) and storage.root.name == "storage":
        rerun_launcher = LocalProcessLauncher(Path(storage.root).parent, server.rerun_failed)
    server.launcher = rerun_launcher

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        server.close()

    app = FastAPI(title="sematic-k8s", version=sematic_k8s.__version__, lifespan=lifespan,
                  description="Resolutions, runs, artifacts and logs recorded by sematic-k8s; rerun and cancel "
                              f"actions; live events. Send an API key in the `{auth.HEADER}` header.")
    app.state.server = server
    app.add_exception_handler(sqlalchemy.exc.OperationalError, _database_unavailable)
    app.add_exception_handler(sqlalchemy.exc.TimeoutError, _database_unavailable)
    server.sweeper.start()
    for router in PUBLIC_ROUTERS:
        app.include_router(router)
    for router in KEYED_ROUTERS:
        app.include_router(router, dependencies=[Depends(require_key)])
    mount_dashboard(app)
    return app


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """503 (clients retry) when the metadata database cannot be reached or is busy, rather than a bare 500."""
    reason = getattr(exc, "orig", None) or exc
    return JSONResponse({"detail": f"the metadata database is unavailable: {type(reason).__name__}: {reason}"},
                        status_code=503, headers={"Retry-After": "1"})
