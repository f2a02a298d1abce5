"""The dashboard: a static page of plain HTML/CSS and JavaScript ES modules (no build step) served by the API
server; and the API's own docs page (Swagger UI), from the same static files."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from sematic_k8s_server.headers import PAGE_CSP

STATIC_DIR = Path(__file__).resolve().parent / "static"
JAVASCRIPT = "text/javascript; charset=utf-8"
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate on every load (ETag): never mix modules of two versions
VENDOR = "/static/vendor"  # libraries as published on the npm registry (static/vendor/README.md)


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
        return FileResponse(index, media_type="text/html", headers=NO_CACHE)  # its policy: headers.py

    app.mount("/static", DashboardFiles(directory=STATIC_DIR), name="static")


def mount_api_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` from the vendored ``swagger-ui-dist`` (never a CDN, nor FastAPI's favicon: the
    page works on a machine or cluster without internet), under the dashboard's policy with the page's one inline
    script allowed by its hash: this answer's alone (every other gets the page's own: headers.py). The app is made
    with ``docs_url=None, redoc_url=None``: no ReDoc."""
    page = get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
                               swagger_js_url=f"{VENDOR}/swagger-ui-bundle.js",
                               swagger_css_url=f"{VENDOR}/swagger-ui.css", swagger_favicon_url="data:,",
                               swagger_ui_parameters={"validatorUrl": None}).body  # validator.swagger.io: none
    inline = re.search(rb"<script>(.*?)</script>", page, re.DOTALL)
    if inline is None:  # not expected: FastAPI's page starts Swagger UI in one
        raise RuntimeError("FastAPI's Swagger UI page has no inline script to allow")
    digest = base64.b64encode(hashlib.sha256(inline.group(1)).digest()).decode()
    policy = {"Content-Security-Policy": PAGE_CSP.replace("script-src 'self'", f"script-src 'self' 'sha256-{digest}'")}

    @app.get("/docs", include_in_schema=False)
    def api_docs() -> HTMLResponse:
        return HTMLResponse(page, headers={**NO_CACHE, **policy})
