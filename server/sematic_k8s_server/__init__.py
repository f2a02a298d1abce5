"""sematic-k8s server: a thin FastAPI layer over the SQL store (REST API, reruns, cancel, live events)."""

from sematic_k8s_server.app import create_app

__all__ = ["create_app"]
