"""The Docker engine's client, made in one place: an engine that does not answer (stopped, hung, an unreachable
$DOCKER_HOST) is :class:`~sematic_k8s.errors.DockerUnavailable` in plain words, within :data:`PROBE_TIMEOUT`,
for image builds, driver containers and the Docker executor alike."""

from __future__ import annotations

import contextlib
import http.client
import os
from collections.abc import Iterator
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
        raise DockerUnavailable(f"the Docker engine at {_where()} does not answer ({_root_cause(e)}): is it running? "
                                "Start it, or set $DOCKER_HOST to one that is") from None
    client.api.timeout = timeout
    return client


@contextlib.contextmanager
def engine_calls(doing: str) -> Iterator[None]:
    """Requests to the engine made inside: a connection to it that is refused, cut or left silent past the client's
    timeout (the engine stopped or hung while ``doing``, e.g. "building IMAGE") is :class:`DockerUnavailable`."""
    import requests
    import urllib3

    try:
        yield
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.Timeout, urllib3.exceptions.HTTPError) as e:
        raise DockerUnavailable(f"the Docker engine at {_where()} stopped answering while {doing} ({_root_cause(e)}): "
                                "is it running? Start it, or set $DOCKER_HOST to one that is, then try "
                                "again") from None


def _where() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def _root_cause(e: BaseException) -> str:
    """The innermost cause's words ("Connection refused", "timed out"), not the HTTP libraries' wrappings."""
    while e.__cause__ is not None or e.__context__ is not None:
        if isinstance(e, http.client.IncompleteRead):  # its causes are the chunk parser's ("invalid literal ...")
            return "the connection was cut mid-answer"
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__
