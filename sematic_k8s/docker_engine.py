"""The Docker engine's client, made in one place: an engine that does not answer (stopped, hung, an unreachable
$DOCKER_HOST) is :class:`~sematic_k8s.errors.DockerUnavailable` in plain words, within :data:`PROBE_TIMEOUT`,
for image builds, driver containers and the Docker executor alike."""

from __future__ import annotations

import os
from typing import Any

from sematic_k8s.errors import DockerUnavailable

PROBE_TIMEOUT = 10.0  # seconds the engine has to answer the first request (its API version)
DEFAULT_HOST = "unix:///var/run/docker.sock"


def docker_client(timeout: float = 60.0, **options: Any) -> Any:
    """A docker SDK client for the environment ($DOCKER_HOST etc.), its API version asked of the engine at once;
    later requests may take ``timeout`` seconds. ``options`` go to ``docker.from_env`` (``max_pool_size``)."""
    import docker

    try:
        client = docker.from_env(version="auto", timeout=min(timeout, PROBE_TIMEOUT), **options)
    except docker.errors.DockerException as e:
        where = os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        raise DockerUnavailable(f"the Docker engine at {where} does not answer ({_root_cause(e)}): is it running? "
                                "Start it, or set $DOCKER_HOST to one that is") from None
    client.api.timeout = timeout
    return client


def _root_cause(e: BaseException) -> str:
    """The innermost cause's words ("Connection refused", "timed out"), not the HTTP libraries' wrappings."""
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__
