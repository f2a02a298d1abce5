"""The Docker engine's client, made in one place: an engine that does not answer (stopped, hung, an unreachable
$DOCKER_HOST) is :class:`~sematic_k8s.errors.DockerUnavailable` in plain words, within :data:`PROBE_TIMEOUT`,
for image builds, driver containers and the Docker executor alike; and the secrets those containers get as files
(:func:`secret_archive`, copied in before they start), never as environment variables that ``docker inspect``
shows."""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import tarfile
import time
from collections.abc import Iterator
from typing import Any

from sematic_k8s.errors import DockerUnavailable

PROBE_TIMEOUT = 10.0  # seconds the engine has to answer the first request (its API version)
DEFAULT_HOST = "unix:///var/run/docker.sock"
SECRETS_DIR = "sematic-k8s-secrets"  # at a container's root: a driver's secrets, a worker's task (0400 files)


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


def image_user(client: Any, image: str) -> tuple[int, int]:
    """The numeric uid and gid the image runs as (root unless its USER says a number)."""
    user = (client.images.get(image).attrs.get("Config") or {}).get("User") or ""
    uid, _, gid = user.partition(":")
    return (int(uid) if uid.isdigit() else 0, int(gid) if gid.isdigit() else int(uid) if uid.isdigit() else 0)


def secret_archive(secrets: dict[str, str], owner: tuple[int, int]) -> bytes:
    """A tar of ``SECRETS_DIR/`` (0700) holding each of ``secrets`` (its path -> its text; 0400), owned by
    ``owner``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        now = time.time()
        directory = tarfile.TarInfo(SECRETS_DIR)
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o700, now
        directory.uid, directory.gid = owner
        tar.addfile(directory)
        for path, text in secrets.items():
            data = text.encode()
            file = tarfile.TarInfo(path.lstrip("/"))
            file.size, file.mode, file.mtime = len(data), 0o400, now
            file.uid, file.gid = owner
            tar.addfile(file, io.BytesIO(data))
    return out.getvalue()


def _where() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def _root_cause(e: BaseException) -> str:
    """The innermost cause's words ("Connection refused", "timed out"), not the HTTP libraries' wrappings."""
    while e.__cause__ is not None or e.__context__ is not None:
        if isinstance(e, http.client.IncompleteRead):  # its causes are the chunk parser's ("invalid literal ...")
            return "the connection was cut mid-answer"
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__
