"""The dashboard: a static page of plain HTML/CSS and JavaScript ES modules (no build step) served by the API
server; and the API's own docs page (Swagger UI), from the same static files."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from html import escape
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from sematic_k8s_server.headers import PAGE_CSP

STATIC_DIR = Path(__file__).resolve().parent / "static"
JAVASCRIPT = "text/javascript; charset=utf-8"
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate on every load (ETag): never mix modules of two versions
VENDOR = "/static/vendor"  # libraries as published on the npm registry (static/vendor/README.md)
# The API docs page runs in an opaque origin: its scripts get none of this origin's storage or cookies, nor an answer
# of the server to read (a fetch is a CORS request of origin "null")
DOCS_SANDBOX = "sandbox allow-scripts"


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
    page works on a machine or cluster without internet). The app is made with ``docs_url=None, redoc_url=None``: no
    ReDoc.

    The page is sandboxed (``sandbox allow-scripts``, no ``allow-same-origin``): it runs in an opaque origin, so
    neither Swagger UI's code nor a flaw in it can read this origin's storage (the dashboard's API key in its
    localStorage). Such a page cannot fetch ``/openapi.json`` (a CORS request, and the server answers no CORS), so
    the spec is in the page, the app's own ``app.openapi()``, made once at the first ``/docs`` (every route included
    by then) and never from a request; "Try it out" is off (its requests would be cross-origin too). Its policy is
    the dashboard's with the page's one inline script allowed by its hash, and the sandbox: this answer's alone
    (every other gets the page's own: headers.py)."""

    @functools.cache
    def page() -> tuple[str, str]:
        return api_docs_page(app.openapi(), title=f"{app.title} API")

    @app.get("/docs", include_in_schema=False)
    def api_docs() -> HTMLResponse:
        html, policy = page()
        return HTMLResponse(html, headers={**NO_CACHE, "Content-Security-Policy": policy})


def api_docs_page(spec: dict[str, Any], title: str) -> tuple[str, str]:
    """Swagger UI's page showing ``spec`` (HTML-safe JSON in its inline script: no ``</script>`` in a description
    ends it), and the page's policy: see :func:`mount_api_docs`."""
    options = {"spec": spec, "dom_id": "#swagger-ui", "layout": "BaseLayout", "deepLinking": True,
               "showExtensions": True, "showCommonExtensions": True,
               "validatorUrl": None,  # validator.swagger.io: none
               "supportedSubmitMethods": [], "queryConfigEnabled": False}  # no "Try it out"; no ?url= or ?config=
    script = f"SwaggerUIBundle({{...{html_safe_json(options)}, presets: [SwaggerUIBundle.presets.apis]}});"
    html = (f'<!DOCTYPE html>\n<html>\n<head>\n<meta name="viewport" content="width=device-width, initial-scale=1.0">\n'
            f'<link type="text/css" rel="stylesheet" href="{VENDOR}/swagger-ui.css">\n'
            f'<link rel="shortcut icon" href="data:,">\n<title>{escape(title)}</title>\n</head>\n<body>\n'
            f'<div id="swagger-ui"></div>\n<script src="{VENDOR}/swagger-ui-bundle.js"></script>\n'
            f"<script>{script}</script>\n</body>\n</html>\n")
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = PAGE_CSP.replace("script-src 'self'", f"script-src 'self' 'sha256-{digest}'") + f"; {DOCS_SANDBOX}"
    return html, policy


def html_safe_json(value: Any) -> str:
    """``value`` as JSON with ``<``, ``>`` and ``&`` escaped (``\\u003c`` ...): safe inside a ``<script>``."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
