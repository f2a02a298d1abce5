"""The HTTP store's connections to the server: :mod:`http.client` over kept-alive connections (a driver imports
it in a fraction of httpx's time), or httpx where a proxy may be set (:func:`proxy_possible`), which httpx
honours."""

from __future__ import annotations

import http.client
import json
import os
import select
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

    import httpx

# refused, dropped or timed-out connections (socket timeouts are OSErrors), answers cut short or garbled
TRANSIENT = (OSError, http.client.HTTPException)
CONNECTIONS = 32  # the most connections a store has open at once (a thread beyond waits for one)


class Answer:
    """The server's answer to one request, read in full: ``status_code``, ``headers``, ``content`` (bytes)."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: http.client.HTTPMessage, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        """The body decoded as its Content-Type's charset says (UTF-8 without one), bad bytes replaced."""
        charset = self.headers.get_content_charset() or "utf-8"
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON (ValueError if it is not)."""
        return json.loads(self.content)


class Connections:
    """Kept-alive HTTP/1.1 connections (:mod:`http.client`) to the server at ``scheme://netloc``, for threads to
    share: a request takes an idle connection (dropping any the server has closed meanwhile) or opens one (and goes
    again at once on a new one when the server closed the idle one as it arrived, unanswered), and gives it back
    once the answer is read; at most ``limit`` are in use at once. HTTPS is verified against
    the CA settings httpx would use: $SSL_CERT_FILE, else $SSL_CERT_DIR, else certifi's bundle."""

    transient: tuple[type[BaseException], ...] = TRANSIENT

    def __init__(self, scheme: str, netloc: str, timeout: float, limit: int = CONNECTIONS) -> None:
        self._netloc = netloc
        self.timeout = timeout
        self._context = _ssl_context() if scheme == "https" else None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(limit)
        self._idle: list[http.client.HTTPConnection] = [self._open()]  # a bad host or port is refused here

    def _open(self) -> http.client.HTTPConnection:  # it connects on its first request
        if self._context is not None:
            return http.client.HTTPSConnection(self._netloc, timeout=self.timeout, context=self._context)
        return http.client.HTTPConnection(self._netloc, timeout=self.timeout)

    def request(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        """One request and its whole answer; OSError or http.client.HTTPException when the connection fails."""
        if not self._slots.acquire(timeout=self.timeout):
            raise TimeoutError(f"no connection to the server free within {self.timeout:g} s")
        try:
            conn = self._take()
            reused = conn.sock is not None
            try:
                return self._exchange(conn, method, target, body, headers)
            except http.client.RemoteDisconnected:
                if not reused:
                    raise
            # the server closed this kept-alive connection as the request came (its keep-alive timeout, its shutdown),
            # unanswered: sent again at once on a new connection, as HTTP clients do (every request here may be)
            return self._exchange(self._open(), method, target, body, headers)
        finally:
            self._slots.release()

    def _exchange(self, conn: http.client.HTTPConnection, method: str, target: str, body: bytes | None,
                  headers: dict[str, str]) -> Answer:
        try:
            try:
                conn.request(method, target, body=body, headers=headers)
            except ConnectionError as e:
                response = _early_answer(conn, e)
            else:
                response = conn.getresponse()
            answer = Answer(response.status, response.headers, response.read())
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._idle.append(conn)  # closed already if the server said it closes it: reopens when next used
        return answer

    def _take(self) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._open()
            if not _closed_by_peer(conn):
                return conn
            conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _early_answer(conn: http.client.HTTPConnection, error: ConnectionError) -> http.client.HTTPResponse:
    """The answer a server sent before it had taken the whole request, and closed the connection (413: too large),
    read as httpx reads it; else ``error`` (the connection reset or the pipe broken while sending) is raised."""
    if conn.sock is not None:
        try:
            return conn.getresponse()
        except (OSError, http.client.HTTPException):
            pass
    raise error


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection has something to read: the server closed it (or sent what it should not)."""
    if conn.sock is None:
        return False  # not connected: it connects when used
    poller = select.poll()  # not select.select: a descriptor past 1024 (a process holding many files) is a
    # ValueError there, every kept-alive connection taken for closed
    try:
        poller.register(conn.sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _ssl_context() -> ssl.SSLContext:
    """The CA certificates httpx verifies against (its ``verify=True`` with ``trust_env``)."""
    import ssl

    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class ProxiedConnections:
    """The same over httpx, for when a proxy may be set: httpx finds it (in the environment, or macOS's and
    Windows' settings) and goes through it, minding $NO_PROXY."""

    def __init__(self, base_url: str, timeout: float, limit: int = CONNECTIONS) -> None:
        from sematic_k8s.store.lean_httpx import httpx

        self.client = httpx.Client(base_url=base_url, timeout=timeout,
                                   limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit))
        self.transient = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ProxyError)

    def request(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> httpx.Response:
        return self.client.request(method, target, content=body, headers=headers)

    def close(self) -> None:
        self.client.close()


def proxy_possible() -> bool:
    """Whether httpx might send requests through a proxy: one named in the environment ($HTTP_PROXY, $HTTPS_PROXY,
    $ALL_PROXY, any case) or, on macOS and Windows, in the system's settings."""
    if sys.platform in ("darwin", "win32"):
        return True
    return any(v and k.lower() in ("http_proxy", "https_proxy", "all_proxy") for k, v in os.environ.items())
