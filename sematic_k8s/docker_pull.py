"""One try of an image's pull (:func:`pull`): the engine's stream read on a thread and a connection of its own
(:class:`_PullStream`), a failure told only in that stream raised in the engine's words, a silent one ended after
:data:`PULL_SILENCE`, and its caller free to abandon it (:class:`PullAbandoned`) within :data:`PULL_TICK`."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from sematic_k8s import docker_engine  # its PROBE_TIMEOUT, read at each use: one bound for every engine connection
from sematic_k8s.docker_pull_progress import PullProgress

PULL_SILENCE = 60.0  # seconds a pull may say nothing before it is ended (a registry that hangs; kubelet's 1 min)
PULL_TICK = 0.5  # seconds between a pull's askings of its abandon() while its stream says nothing


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
    (made by the client's pool for that URL, never put back in it), which the engine has
    :data:`~sematic_k8s.docker_engine.PROBE_TIMEOUT` to accept: :meth:`cut` shuts it from any thread, even while the
    engine has not yet sent its answer's head (it sends it only once its registry answered the manifest), or, while
    it is still being made, has it closed once made, its request unsent."""

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
        self.conn.timeout = docker_engine.PROBE_TIMEOUT  # its connect's; then silence + PROBE_TIMEOUT, a backstop
        self.silence = silence  # only (pull() judges the silence itself)
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
                self.conn.timeout = self.silence + docker_engine.PROBE_TIMEOUT
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
        its connect's timeout (:data:`~sematic_k8s.docker_engine.PROBE_TIMEOUT`)."""
        with self._lock:
            self._cut = True
            sock = self._sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if sock is not None:
            self._thread.join(docker_engine.PROBE_TIMEOUT)
            with contextlib.suppress(OSError):
                self.conn.close()


class PullAbandoned(Exception):
    """A pull ended by its caller (:func:`pull`'s ``abandon``): no one waits for it any more."""
