"""The dashboard: a static page of plain HTML/CSS and JavaScript ES modules (no build step) served by the API
server."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"
JAVASCRIPT = "text/javascript; charset=utf-8"
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate on every load (ETag): never mix modules of two versions
# The page: never framed by another site (clickjacking its buttons), scripts only from this server (a string
# that slipped into the page as markup would run nothing), pictures of artifacts as data: URLs.
PAGE_POLICY = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",  # browsers without frame-ancestors
    "X-Content-Type-Options": "nosniff",
}


class DashboardFiles(StaticFiles):
    """The dashboard's files, revalidated on every load, with ``.js`` always served as JavaScript: browsers
    refuse a module script of any other type, and a host's MIME table may say ``text/plain`` (as some
    Windows registries do)."""

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(NO_CACHE)
        if response.status_code != 304 and Path(full_path).suffix in (".js", ".mjs"):
            response.headers["Content-Type"] = JAVASCRIPT
        return response


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard page at ``/`` and its assets (``app.js`` and the modules it imports) at ``/static``.

    The page itself needs no authentication (it holds no data); every API call it makes does.
    """
    index = STATIC_DIR / "index.html"

    @app.get("/", include_in_schema=False)
    def dashboard_index() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers={**NO_CACHE, **PAGE_POLICY})

    app.mount("/static", DashboardFiles(directory=STATIC_DIR), name="static")
