"""Build the FastAPI application: the REST API over the same SqlStore the embedded mode uses, and the dashboard.

The endpoints live in :mod:`sematic_k8s_server.routes`, one module per resource; what they share
(:class:`~sematic_k8s_server.state.Server`) is made here once per app. In front of everything sits the
:class:`~sematic_k8s_server.guard.Guard` (credentials before bodies, the size cap, local-mode defences); every
error answers as JSON (:mod:`~sematic_k8s_server.problems`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

import sematic_k8s
from sematic_k8s.specs import DriverSpec
from sematic_k8s.storage.base import Storage
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server import auth, fastpath, problems, shutdown
from sematic_k8s_server.config import ServerConfig
from sematic_k8s_server.dashboard import mount_api_docs, mount_dashboard
from sematic_k8s_server.deps import may_act, query_without_nul, require_key
from sematic_k8s_server.fastpath import WriteFastPath
from sematic_k8s_server.guard import Guard
from sematic_k8s_server.headers import secured
from sematic_k8s_server.reruns import Reruns
from sematic_k8s_server.routes import (
    artifacts,
    events,
    health,
    keys,
    labels,
    logs,
    overview,
    pipelines,
    resolutions,
    runs,
    store,
)
from sematic_k8s_server.state import Server

PUBLIC_ROUTERS: tuple[APIRouter, ...] = (health.router,)
KEYED_ROUTERS: tuple[APIRouter, ...] = (resolutions.router, runs.router, logs.router, artifacts.router,
                                        events.router, store.router, keys.router, pipelines.router,
                                        labels.router, overview.router)


def create_app(store: SqlStore, storage: Storage, config: ServerConfig | None = None, *,
               api_keys_required: bool | None = None, self_url: str | None = None,
               rerun_launcher: Callable[[DriverSpec, Mapping[str, str]], None] | None = None) -> FastAPI:
    """The API over ``store`` (already migrated) and ``storage``, set up by ``config``.

    ``api_keys_required`` overrides ``config``'s (False only for local mode). Drivers of reruns record
    through this server at ``self_url`` (default: the address the request came in on). ``rerun_launcher``
    replaces the configured launcher (for embedding the server).
    """
    config = config or ServerConfig()
    if api_keys_required is not None:
        config = dataclasses.replace(config, api_keys_required=api_keys_required)
    authenticator = auth.Authenticator(store.engine, required=config.api_keys_required)
    server = Server(store, storage, config, authenticator, Reruns(config.reruns, rerun_launcher), self_url)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        off = shutdown.on_stop(server.stopping)  # live streams end as soon as a signal asks the server to stop
        yield
        off()
        server.close()

    # redirect_slashes=False: a path with a slash too many (or too few) is a 404, not a redirect to the host its
    # request's Host header names; every route refuses a query parameter holding a NUL character (query_without_nul)
    app = Api(title="sematic-k8s", version=sematic_k8s.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
              redirect_slashes=False, dependencies=[Depends(query_without_nul)],
              description="Resolutions, runs, artifacts and logs recorded by sematic-k8s; rerun and cancel "
                          f"actions; live events. Send an API key in the `{auth.HEADER}` header.")
    app.state.server = server
    server.start()
    for router in PUBLIC_ROUTERS:
        app.include_router(router, responses=problems.ERRORS)
    for router in KEYED_ROUTERS:
        app.include_router(router, dependencies=[Depends(require_key), Depends(may_act)], responses=problems.ERRORS)
    mount_dashboard(app)
    mount_api_docs(app)  # Swagger UI from the vendored files
    problems.install(app, store.engine)
    reads = reads_by_post(KEYED_ROUTERS)
    app.add_middleware(Guard, authenticator=authenticator, config=config, reads=reads)
    app.front = WriteFastPath(app.stack, server=server, guard=Guard(app.stack, authenticator=authenticator,
                                                                    config=config, reads=reads),
                              handlers=app.exception_handlers)
    return app


def reads_by_post(routers: tuple[APIRouter, ...]) -> frozenset[str]:
    """The paths of the POST routes of ``routers`` marked as reads (``openapi_extra={auth.READ_BY_POST: True}``: their
    body carries what a URL could not, and they write nothing), which the Guard lets a read-only key send. A marked
    route has a fixed path (the Guard matches it as sent), its router's prefix in it (included with none of its
    own)."""
    marked = [r for router in routers for r in router.routes
              if isinstance(r, APIRoute) and (r.openapi_extra or {}).get(auth.READ_BY_POST)]
    for route in marked:
        if route.methods != {"POST"} or "{" in route.path:
            raise ValueError(f"{route.path}: a route marked {auth.READ_BY_POST} takes POST alone, on a fixed path")
    return frozenset(r.path for r in marked)


class Api(FastAPI):
    """The FastAPI app, but ``POST /api/v1/store/write`` (the request a server gets most: every state change of
    every run) goes straight to :attr:`front` (:mod:`~sematic_k8s_server.fastpath`), without FastAPI's own
    middleware (its telemetry check, its body limit: the Guard's cap applies) and routing. A write the fast
    path does not take goes on to :meth:`stack`, already guarded."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            send = secured(send)  # every answer's security headers (headers.py)
        if self.front is not None and fastpath.takes(scope):
            scope["app"] = self
            await self.front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app as FastAPI serves it, for a request that the fast path's Guard has passed."""
        await super().__call__(scope, receive, send)

