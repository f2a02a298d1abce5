"""``/health`` (liveness) and ``/ready`` (readiness), answered without an API key."""

from __future__ import annotations

from fastapi import APIRouter, Request

from sematic_k8s_server import schemas
from sematic_k8s_server.deps import API
from sematic_k8s_server.problems import ApiError
from sematic_k8s_server.state import Server

router = APIRouter(prefix=API, tags=["health"])


@router.get("/health", response_model=schemas.Health, summary="Liveness (no API key needed)",
            description="200 while the server process answers, whatever its database does: restart it only when "
                        "this fails.")
def health() -> dict[str, bool]:
    return {"ok": True}


@router.get("/ready", response_model=schemas.Health, summary="Readiness (no API key needed)",
            description="200 when the server can serve requests now: its database answers. 503 with the reason "
                        "while it does not (the database unreachable, the server stopping): send requests to "
                        "another replica meanwhile, but do not restart this one for it.")
def ready(request: Request) -> dict[str, bool]:
    srv: Server = request.app.state.server
    why = srv.readiness.check()
    if why is not None:
        raise ApiError(503, f"not ready: {why}", {"Retry-After": "5"})
    return {"ok": True}
