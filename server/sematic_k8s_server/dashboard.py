"""The dashboard: a single static page (plain HTML/JS/CSS, no build step) served by the API server."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard page at ``/`` and its assets at ``/static``.

    The page itself needs no authentication (it holds no data); every API call it makes does.
    """
    index = STATIC_DIR / "index.html"

    @app.get("/", include_in_schema=False)
    def dashboard_index() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
