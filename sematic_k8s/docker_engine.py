"""The Docker engine's client, made in one place: an engine that does not answer (stopped, hung, an unreachable
$DOCKER_HOST) is :class:`~sematic_k8s.errors.DockerUnavailable` in plain words, within :data:`PROBE_TIMEOUT`,
for image builds, driver containers and the Docker executor alike; an image's pull, failing in the engine's words
(:func:`pull`), a worker's and a driver's alike (the wait for an image whose registry does not answer:
:mod:`sematic_k8s.docker_pull_wait`; its progress and words:
:mod:`sematic_k8s.docker_pull_progress`; the secrets containers get as files: :mod:`sematic_k8s.docker_secrets`)."""

from __future__ import annotations

import contextlib
import http.client
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sematic_k8s.docker_pull_progress import PullProgress
from sematic_k8s.errors import DockerUnavailable
from sematic_k8s.retries import retrying

PROBE_TIMEOUT = 10.0  # seconds the engine has to answer the first request (its API version)
DEFAULT_HOST = "unix:///var/run/docker.sock"
T = TypeVar("T")
PULL_SILENCE = 60.0  # seconds a pull may say nothing before it is ended (a registry that hangs; kubelet's 1 min)
PULL_TICK = 0.5  # seconds between a pull's askings of its abandon() while its stream says nothing


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


def pull(client: Any, image: str, silence: float | None = None,  # noqa: ANN401 - a docker client
         progress: PullProgress | None = None, abandon: Callable[[], bool] | None = None) -> None:
    """Pull ``image``. A failure the engine tells only in its pull's stream (a download of the image's configuration
    or a layer that failed: its registry's 5xx or 429 to a blob's request, after the manifest came) is a
    ``docker.errors.APIError`` in its words, as a failure it answers at once is; the SDK's ``images.pull`` drops them
    and says "No such image". A pull of which the engine says nothing for ``silence`` seconds (by default
    :data:`PULL_SILENCE`: its registry took the connection and does not answer, the engine waits for it without end
    and sends not even its answer's head) is ended, and is an ``APIError`` too, :func:`silence_words`, a registry
    that does not answer (:func:`registry_unanswered`). The SDK's own ``pull`` has no timeout at all. (The engine's
    own request to that registry stays open: a later pull of a layer it is stuck on joins it, and fails the same
    way.) ``progress`` is handed each line of the stream; ``abandon()``, asked after each and every
    :data:`PULL_TICK` seconds while the stream is silent, saying yes ends the pull (:class:`PullAbandoned`). The
    stream is read on a thread of its own (:class:`_PullStream`) over a connection of its own to the engine, closed
    when the pull ends however it ends: the engine then ends its own (its tries of a layer it retries), no one
    waiting for it."""
    import docker.errors

    silence = PULL_SILENCE if silence is None else silence
    stream = _PullStream(client.api, image, silence)
    heard = time.monotonic()
    try:
        while True:
            try:
                line = stream.lines.get(timeout=PULL_TICK)
            except queue.Empty:
                line = None
            if line is _PullStream.END:
                return
            if isinstance(line, BaseException):
                raise line
            if isinstance(line, dict):
                heard = time.monotonic()
                if line.get("error"):
                    said = str((line.get("errorDetail") or {}).get("message") or line["error"])
                    raise docker.errors.APIError(said, explanation=said)
                if progress is not None:
                    progress.seen(line)
            if abandon is not None and abandon():
                raise PullAbandoned(image)
            if time.monotonic() - heard >= silence:
                said = silence_words(silence)
                raise docker.errors.APIError(said, explanation=said)
    finally:
        stream.cut()


def silence_words(silent: float) -> str:
    """A pull's failure when the engine said nothing of it for ``silent`` seconds: its registry took the connection
    and does not answer."""
    return f"the pull made no progress for {silent:g} s: its registry does not answer"


class _PullStream:
    """The engine's pull stream of ``image`` (``POST /images/create``), read on a daemon thread of its own, started at
    once, its lines (dicts) put on :attr:`lines`, then :attr:`END`, or what it raised (an ``APIError``; the engine's
    connection refused or cut: ``requests.exceptions.ConnectionError``). Over a connection to the engine of its own
    (made by the client's pool for that URL, never put back in it), which the engine has :data:`PROBE_TIMEOUT` to
    accept: :meth:`cut` shuts it from any thread, even while the engine has not yet sent its answer's head (it sends
    it only once its registry answered the manifest), or, while it is still being made, has it closed once made,
    its request unsent."""

    END = object()

    def __init__(self, api: Any, image: str, silence: float) -> None:  # noqa: ANN401 - a docker APIClient
        import requests
        from docker import auth
        from docker.utils import parse_repository_tag

        repository, tag = parse_repository_tag(image)
        header = auth.get_config_header(api, auth.resolve_repository_name(repository)[0])
        self.request = api.prepare_request(requests.Request(
            "POST", api._url("/images/create"), params={"fromImage": repository, "tag": tag or "latest"},
            headers={"X-Registry-Auth": header} if header else {}))
        self.api, self.adapter = api, api.get_adapter(self.request.url)
        pool = self.adapter.get_connection_with_tls_context(self.request, api.verify, cert=api.cert)
        self.conn = pool._new_conn()
        self.conn.timeout = PROBE_TIMEOUT  # its connect's; then silence + PROBE_TIMEOUT, a backstop only (pull()
        self.silence = silence  # judges the silence itself)
        self.lines: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._cut = False
        self._thread = threading.Thread(target=self._read, name="sk-docker-pull-stream", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        import requests

        try:
            try:
                self.conn.connect()
                with self._lock:
                    self._sock = self.conn.sock
                    cut = self._cut
                if cut:  # abandoned while it was being made (cut() did not wait for it): closed, nothing sent
                    self.conn.close()
                    return
                self.conn.timeout = self.silence + PROBE_TIMEOUT
                self.conn.request(self.request.method, self.adapter.request_url(self.request, {}),
                                  body=self.request.body, headers=self.request.headers, preload_content=False,
                                  decode_content=False)
                response = self.adapter.build_response(self.request, self.conn.getresponse())
            except OSError as e:  # the engine's connection refused or cut: as the client's requests say it
                raise requests.exceptions.ConnectionError(e) from e
            with contextlib.closing(response):
                self.api._raise_for_status(response)
                for line in self.api._stream_helper(response, decode=True):
                    self.lines.put(line)
            self.lines.put(self.END)
        except BaseException as e:  # noqa: BLE001 - raised by pull(), on its caller's thread
            self.lines.put(e)

    def cut(self) -> None:
        """Close its connection (at once, whatever reads it), and wait for its thread to end; while the connection is
        still being made (an engine slow to accept it), not waited for: its thread closes it once made, or ends at
        its connect's timeout (:data:`PROBE_TIMEOUT`)."""
        with self._lock:
            self._cut = True
            sock = self._sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if sock is not None:
            self._thread.join(PROBE_TIMEOUT)
            with contextlib.suppress(OSError):
                self.conn.close()


class PullAbandoned(Exception):
    """A pull ended by its caller (:func:`pull`'s ``abandon``): no one waits for it any more."""


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
