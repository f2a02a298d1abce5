"""The Docker engine's client, made in one place: an engine that does not answer (stopped, hung, an unreachable
$DOCKER_HOST) is :class:`~sematic_k8s.errors.DockerUnavailable` in plain words, within :data:`PROBE_TIMEOUT`,
for image builds, driver containers and the Docker executor alike; requests that may be repeated ridden through
its outages (:func:`engine_retried`); a container's stdout attached and read (:func:`attach_stdout`).

The rest of the Docker code is beside it: an image's pull (:mod:`sematic_k8s.docker_pull`), its progress and words
(:mod:`sematic_k8s.docker_pull_progress`), the wait for an image whose registry does not answer
(:mod:`sematic_k8s.docker_pull_wait`), the secrets containers get as files (:mod:`sematic_k8s.docker_secrets`)."""

from __future__ import annotations

import contextlib
import http.client
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sematic_k8s.errors import DockerUnavailable
from sematic_k8s.retries import retrying

PROBE_TIMEOUT = 10.0  # seconds the engine has to answer the first request (its API version)
DEFAULT_HOST = "unix:///var/run/docker.sock"
T = TypeVar("T")


def docker_client(timeout: float = 60.0, **options: Any) -> Any:
    """A docker SDK client for the environment ($DOCKER_HOST etc.), its API version asked of the engine at once;
    later requests may take ``timeout`` seconds. ``options`` go to ``docker.from_env`` (``max_pool_size``)."""
    import docker

    try:
        client = docker.from_env(version="auto", timeout=min(timeout, PROBE_TIMEOUT), **options)
    except docker.errors.DockerException as e:
        raise DockerUnavailable(f"the Docker engine at {engine_address()} does not answer ({_root_cause(e)}): is it "
                                "running? Start it, or set $DOCKER_HOST to one that is") from None
    client.api.timeout = timeout
    return client


@contextlib.contextmanager
def engine_calls(doing: str) -> Iterator[None]:
    """Requests to the engine made inside: a connection to it that is refused, cut or left silent past the client's
    timeout (the engine stopped or hung while ``doing``, e.g. "building IMAGE") is :class:`DockerUnavailable`."""
    try:
        yield
    except Exception as e:
        if not unanswered(e):
            raise
        raise DockerUnavailable(f"the Docker engine at {engine_address()} stopped answering while {doing} "
                                f"({_root_cause(e)}): is it running? Start it, or set $DOCKER_HOST to one that is, "
                                "then try again") from None


def engine_retried(doing: str, call: Callable[[], T], window: float | None = None) -> T:
    """``call()``, requests to the engine that may be repeated (lists, inspects, waits, attaches, removals),
    tried again while the engine does not answer (its connection refused, cut or silent: restarted, a blip)
    for the retry window (``window``, default $SEMATIC_K8S_RETRY_WINDOW), as the store's and storage's requests
    are; then :class:`DockerUnavailable` saying what it was ``doing``. The one path of the Docker executor's requests
    and of a CloudResolver's follow of its driver container."""
    with engine_calls(doing):
        for attempt in retrying(f"the Docker engine at {engine_address()}", unanswered, window):
            with attempt:
                return call()
    raise AssertionError("unreachable: retrying() returns or raises")  # pragma: no cover


def unanswered(e: BaseException) -> bool:
    """Whether ``e`` (raised by a docker SDK call) says the engine did not answer: its connection refused, cut or
    left silent past the client's timeout, not an answer of its own (an APIError)."""
    import requests
    import urllib3

    return isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                          requests.exceptions.Timeout, urllib3.exceptions.HTTPError))


def attach_stdout(client: Any, container: str) -> Any:
    """The container's stdout, attached: what it printed so far, then what it prints, to be read with
    :func:`stdout_frames` until the container's (or the connection's) end. Read through the engine's HTTP answer's
    own buffer: the bytes that came with the answer's head are there (the SDK's ``attach_socket`` hands out the socket
    beneath that buffer, and the start of a stdout replayed to a container attached again was lost in it, often whole).
    No timeout: a worker may print nothing for hours."""
    sock = client.api.attach_socket(container, params={"stdout": 1, "stream": 1, "logs": 1})
    getattr(sock, "_sock", sock).settimeout(None)
    return sock._response.raw._fp.fp  # the SDK's own way to that socket, one step short of it


def stdout_frames(stdout: Any) -> Iterator[bytes]:
    """The bytes of an attached stream (:func:`attach_stdout`), as they come: the engine sends them in frames, each an
    8-byte head (its stream; its size, big-endian, in the last 4) before that many bytes."""
    while True:
        head = stdout.read(8)
        if len(head) < 8:
            return
        size = int.from_bytes(head[4:], "big")
        while size:
            chunk = stdout.read1(size)
            if not chunk:
                return
            size -= len(chunk)
            yield chunk


def engine_address() -> str:
    """The engine this process's clients talk to ($DOCKER_HOST, else the default socket)."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def _root_cause(e: BaseException) -> str:
    """The innermost cause's words ("Connection refused", "timed out"), not the HTTP libraries' wrappings."""
    while e.__cause__ is not None or e.__context__ is not None:
        if isinstance(e, http.client.IncompleteRead):  # its causes are the chunk parser's ("invalid literal ...")
            return "the connection was cut mid-answer"
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__
