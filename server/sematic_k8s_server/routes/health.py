"""``/health``: liveness, answered without an API key."""

from __future__ import annotations

from fastapi import APIRouter

from sematic_k8s_server import schemas
from sematic_k8s_server.deps import API

router = APIRouter(prefix=API, tags=["health"])


@router.get("/health", response_model=schemas.Health, summary="Liveness (no API key needed)")
def health() -> dict[str, bool]:
    return {"ok": True}
