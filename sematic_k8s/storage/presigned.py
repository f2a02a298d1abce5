"""A worker's view of S3 storage through presigned URLs: no botocore, no credentials.

The executor that launches a worker in a container or a pod (which holds an S3 client already) presigns
the exact requests the worker needs, with a short expiry, and puts them in its
:class:`~sematic_k8s.specs.TaskSpec` (``urls``): a GET for each input artifact and a PUT for the outcome
document (:func:`~sematic_k8s.specs.outcome_key`), plus a PUT for a staging object
(:func:`~sematic_k8s.specs.staged_key`) where a large output goes. The worker's output value and its logs
travel in the outcome document (small values, base64) or the staging object (large ones); the executor checks
them against their content id and stores them itself (:func:`sematic_k8s.executors.remote.adopt_outcome`).

Requests go through a small HTTP/1.1 client on a socket (kept alive per host; :mod:`http.client`, with the
email package it imports, would be a quarter of a worker's imports); refused and dropped connections, timeouts,
malformed answers and 5xx/429 answers are
retried for the retry window ($SEMATIC_K8S_RETRY_WINDOW), then raise :class:`~sematic_k8s.errors.StorageError`
(the worker exits 75 and the driver runs the attempt again, with fresh URLs). A refused URL (403: expired)
raises it at once. URLs are never logged: messages name the storage key only.
"""

from __future__ import annotations

import socket
from typing import BinaryIO
from urllib.parse import SplitResult, urlsplit

from sematic_k8s.errors import StorageError
from sematic_k8s.retries import RetryLater, retrying

TIMEOUT = 60.0  # seconds for a connection or a read
MAX_LINE = 65536  # bytes of a status or header line
_RETRY_STATUSES = {429, 500, 502, 503, 504}
_TRANSIENT = (OSError,)  # refused, dropped, timed out, malformed (all OSErrors here)
_PORTS = {"http": 80, "https": 443}


class PresignedStorage:
    """Bytes by key, for the keys a :class:`~sematic_k8s.specs.TaskSpec`'s ``urls`` name ("GET key" / "PUT
    key" -> URL). Only :meth:`get` and :meth:`put` of those keys; anything else is a programming error."""

    def __init__(self, urls: dict[str, str], retry_window: float | None = None) -> None:
        self.urls = urls
        self.retry_window = retry_window
        self._connections: dict[tuple[str, str], Connection] = {}

    def get(self, key: str) -> bytes:
        """The bytes at ``key``; KeyError when absent."""
        status, body = self._request("GET", key, None)
        if status == 404:
            raise KeyError(key)
        return body

    def put(self, key: str, data: bytes, *, repair: bool = False) -> None:
        """Write ``data`` at ``key`` (a key of this attempt's own: the outcome or the staging object)."""
        self._request("PUT", key, data)

    def exists(self, key: str) -> bool:
        raise KeyError(f"no presigned HEAD for storage key {key!r}")

    def append(self, key: str, data: bytes) -> None:
        raise KeyError(f"no presigned append for storage key {key!r}: logs travel in the outcome document")

    def _request(self, method: str, key: str, data: bytes | None) -> tuple[int, bytes]:
        url = self.urls.get(f"{method} {key}")
        if url is None:
            raise KeyError(f"no presigned {method} for storage key {key!r}")
        try:
            return self._once(method, key, url, data)  # the usual case: tenacity is imported only to retry
        except (*_TRANSIENT, RetryLater):
            pass
        try:
            for attempt in retrying(f"storage ({method} {key})", _TRANSIENT, self.retry_window):
                with attempt:
                    return self._once(method, key, url, data)
        except (*_TRANSIENT, RetryLater) as e:
            raise StorageError(f"cannot reach storage to {method} {key!r}: {type(e).__name__}: {e}") from None
        raise AssertionError("unreachable: retrying() returns or raises")  # pragma: no cover

    def _once(self, method: str, key: str, url: str, data: bytes | None) -> tuple[int, bytes]:
        parts = urlsplit(url)
        conn = self._connections.get((parts.scheme, parts.netloc))
        if conn is None:
            conn = self._connections[(parts.scheme, parts.netloc)] = Connection(parts)
        headers = {"Content-Type": "application/octet-stream"} if data is not None else {}
        try:
            status, response_headers, body = conn.request(
                method, parts.path + (f"?{parts.query}" if parts.query else ""), data, headers)
        except OSError:
            conn.close()
            self._connections.pop((parts.scheme, parts.netloc), None)
            raise
        if status in _RETRY_STATUSES:
            after = response_headers.get("retry-after")
            raise RetryLater(f"{method} of storage key {key!r}: HTTP {status}",
                             float(after) if after and after.isdigit() else None)
        if status == 404 and method == "GET":
            return 404, b""
        if status >= 300:
            code = _error_code(body)
            raise StorageError(f"storage refused the {method} of {key!r}: HTTP {status}{code} (the worker's "
                               "presigned URL expired or was not valid: the attempt is run again with new ones)")
        return status, body

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()


class Connection:
    """One HTTP/1.1 connection to the host of ``url`` (http or https, verified as :mod:`http.client` does),
    opened on the first request and kept alive between requests while the server allows. Every failure is an
    OSError: refused, dropped, timed out, or an answer that is not HTTP/1.x."""

    def __init__(self, url: SplitResult, timeout: float = TIMEOUT) -> None:
        if url.scheme not in _PORTS or not url.hostname:
            raise ValueError(f"not an http(s) URL of storage: scheme {url.scheme!r}")
        self.scheme = url.scheme
        self.host = url.hostname
        self.port = url.port or _PORTS[url.scheme]
        netloc = url.netloc.rpartition("@")[2]
        if url.port == _PORTS[url.scheme]:  # the Host header as http.client sends it: without a default port
            netloc = netloc.rpartition(":")[0]
        self.host_header = netloc
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: BinaryIO | None = None  # buffered, over the socket

    def request(self, method: str, target: str, body: bytes | None,
                headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body) of one request."""
        if self._sock is None:
            self._open()
        assert self._sock is not None and self._reader is not None
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}", "Accept-Encoding: identity",
                 *(f"{k}: {v}" for k, v in headers.items())]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        while True:
            version, status = self._status_line()
            response_headers = self._headers()
            if status >= 200:
                break  # 1xx: an interim answer, the final one follows
        data = b"" if method == "HEAD" or status in (204, 304) else self._body(response_headers)
        if (response_headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                or "content-length" not in response_headers
                and "chunked" not in response_headers.get("transfer-encoding", "").lower()):
            self.close()
        return status, response_headers, data

    def close(self) -> None:
        for closable in (self._reader, self._sock):
            if closable is not None:
                closable.close()
        self._sock = self._reader = None

    def _open(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        if self.scheme == "https":
            import ssl  # here: storage on plain http (in-cluster MinIO, tests) never needs it

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._reader = sock, sock.makefile("rb")

    def _line(self) -> bytes:
        assert self._reader is not None
        line = self._reader.readline(MAX_LINE + 1)
        if not line.endswith(b"\n"):
            raise ConnectionError("storage closed the connection" if not line else "storage sent too long a line")
        return line.rstrip(b"\r\n")

    def _status_line(self) -> tuple[str, int]:
        parts = self._line().decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ConnectionError(f"storage answered something other than HTTP/1.x: {' '.join(parts)[:80]!r}")
        return parts[0], int(parts[1])

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        while line := self._line():
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise ConnectionError(f"storage sent a malformed header line: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        return headers

    def _body(self, headers: dict[str, str]) -> bytes:
        assert self._reader is not None
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while size := self._chunk_size():
                chunks.append(self._exactly(size))
                self._line()  # the CRLF after a chunk
            while self._line():  # trailers, up to the blank line
                pass
            return b"".join(chunks)
        if "content-length" in headers:
            try:
                return self._exactly(int(headers["content-length"]))
            except ValueError:
                raise ConnectionError(f"storage sent a bad Content-Length: {headers['content-length']!r}") from None
        return self._reader.read()  # to the end of the connection

    def _chunk_size(self) -> int:
        line = self._line().split(b";", 1)[0].strip()
        try:
            return int(line, 16)
        except ValueError:
            raise ConnectionError(f"storage sent a bad chunk size: {line[:80]!r}") from None

    def _exactly(self, n: int) -> bytes:
        assert self._reader is not None
        data = self._reader.read(n)
        if len(data) != n:
            raise ConnectionError(f"storage closed the connection {len(data)} of {n} bytes into an answer")
        return data


def _error_code(body: bytes) -> str:
    """S3's error code from an XML error body (``<Code>AccessDenied</Code>``), as ", Code"; "" if none."""
    text = body[:2000].decode(errors="replace")
    start, end = text.find("<Code>"), text.find("</Code>")
    return f", {text[start + 6:end]}" if 0 <= start < end else ""

