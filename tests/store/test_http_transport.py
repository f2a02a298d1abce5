"""The HTTP store's connections, against a small real HTTP/1.1 server: kept alive across requests, shared by
threads, a connection the server closed while idle replaced without a retry, HTTPS verified against the CA
settings httpx would use, and a proxy named in the environment gone through (httpx's way)."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from kube_model.certs import self_signed
from sematic_k8s.errors import ServerError
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.http_connections import Connections, ProxiedConnections

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")


class Stub(http.server.ThreadingHTTPServer):
    """Answers ``GET .../store/cancel_requested/ID`` with JSON; records each request's target, client port and
    API key; ``close_each``: closes every connection after its answer (without saying so, as a server whose
    keep-alive timeout ran out does); ``drop_reused``: closes a kept-alive connection as its next request comes,
    unanswered (as a server does whose keep-alive timeout, or shutdown, closes it while the request is on its way)."""

    daemon_threads = True

    def __init__(self, close_each: bool = False, tls: ssl.SSLContext | None = None, drop_reused: bool = False) -> None:
        self.close_each, self.drop_reused = close_each, drop_reused
        self.tls = tls
        self.seen: list[tuple[str, int, str | None]] = []
        self.authorization: list[str | None] = []
        self.closed = threading.Semaphore(0)  # released once per connection closed by this server
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server_address[1]}"

    def get_request(self):  # noqa: ANN201 - (socket, address)
        sock, address = super().get_request()
        return (self.tls.wrap_socket(sock, server_side=True) if self.tls else sock), address

    def shutdown_request(self, request) -> None:  # noqa: ANN001 - a socket
        super().shutdown_request(request)
        self.closed.release()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: Stub

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        self.server.seen.append((self.path, self.client_address[1], self.headers.get("X-API-Key")))
        if self.server.drop_reused and getattr(self, "answered", False):
            self.close_connection = True
            return
        self.answered = True
        self.server.authorization.append(self.headers.get("Authorization"))
        body = json.dumps({"cancel_requested": self.path.endswith("/yes")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = self.server.close_each

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        """Too large: answered 413 after the first 64 KiB of the body, the connection closed with the rest unread
        (as the server's request cap does)."""
        self.server.seen.append((self.path, self.client_address[1], self.headers.get("X-API-Key")))
        self.rfile.read(64 * 1024)
        body = b'{"detail":"request body over the cap"}'
        self.send_response(413)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def stub(close_each: bool = False, tls: ssl.SSLContext | None = None, drop_reused: bool = False) -> Iterator[Stub]:
    server = Stub(close_each, tls, drop_reused)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_requests_reuse_one_kept_alive_connection() -> None:
    with stub() as server:
        store = HttpStore(server.url + "/behind/", "k1")
        assert isinstance(store.connections, Connections)
        assert [store.cancel_requested(x) for x in ("no", "yes", "no", "a b")] == [False, True, False, False]
        assert [path for path, _, _ in server.seen] == [
            "/behind/api/v1/store/cancel_requested/no", "/behind/api/v1/store/cancel_requested/yes",
            "/behind/api/v1/store/cancel_requested/no", "/behind/api/v1/store/cancel_requested/a%20b"]
        assert len({port for _, port, _ in server.seen}) == 1
        assert {key for _, _, key in server.seen} == {"k1"} and server.authorization == [None] * 4
        store.close()


def test_a_urls_user_info_is_sent_as_basic_authentication() -> None:
    with stub() as server:
        store = HttpStore(server.url.replace("//", "//ann%40example:s%3Acret@"))
        assert store.cancel_requested("yes") is True
        assert server.authorization == ["Basic " + base64.b64encode(b"ann@example:s:cret").decode()]
        store.close()


def test_a_urls_password_is_never_in_an_error_or_a_log(caplog) -> None:
    """A server that refuses connections: the warnings while retrying and the error at the end name the server
    without the user info's password."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = HttpStore(f"http://ann:s3cret@127.0.0.1:{port}", retry_window=0.5)
    with caplog.at_level(logging.WARNING, logger="sematic_k8s"), pytest.raises(ServerError) as refused:
        store.cancel_requested("yes")
    store.close()
    assert f"127.0.0.1:{port}" in str(refused.value) and caplog.records
    assert "s3cret" not in str(refused.value) and "s3cret" not in caplog.text


def test_a_connection_the_server_closed_is_replaced_without_a_retry(caplog) -> None:
    with stub(close_each=True) as server, caplog.at_level(logging.WARNING, logger="sematic_k8s"):
        store = HttpStore(server.url, retry_window=30)
        for _ in range(3):
            assert store.cancel_requested("no") is False
            assert server.closed.acquire(timeout=10)  # closed while the store holds it idle
        assert len(server.seen) == 3 and len({port for _, port, _ in server.seen}) == 3
        assert "retrying" not in caplog.text  # each was found closed before use, not failed on
        store.close()


def test_a_kept_alive_connection_closed_as_a_request_went_out_is_replaced_without_a_retry(caplog) -> None:
    """The server closes a kept-alive connection as the next request arrives on it, unanswered (its keep-alive
    timeout or its shutdown meeting the request): the request is sent again at once on a new connection, with no
    warning and no backoff (was: the store's retry, 'RemoteDisconnected ...; retrying for up to 120 s')."""
    with stub(drop_reused=True) as server, caplog.at_level(logging.WARNING, logger="sematic_k8s"):
        store = HttpStore(server.url, retry_window=30)
        assert [store.cancel_requested(x) for x in ("no", "yes", "no")] == [False, True, False]
        assert [path.rsplit("/", 1)[1] for path, _, _ in server.seen] == ["no", "yes", "yes", "no", "no"]
        assert len({port for _, port, _ in server.seen}) == 3
        assert "retrying" not in caplog.text
        store.close()


def test_an_answer_before_the_whole_body_was_taken_is_read() -> None:
    """A body far larger than the sockets' buffers, refused (413) by a server that closes with it unread: the
    sending fails (the connection reset), and the answer sent before is read and reported, not retried."""
    with stub() as server:
        store = HttpStore(server.url, retry_window=30)
        with pytest.raises(ServerError, match="HTTP 413: request body over the cap") as info:
            store._request("POST", "/store/write", content=b"x" * 64_000_000)
        assert info.value.status == 413 and len(server.seen) == 1
        store.close()


def test_a_process_holding_many_files_still_reuses_its_connections() -> None:
    """1,100 files open in this process: the store's sockets are descriptors past select()'s 1,024; its kept-alive
    connection is still reused. Was: every idle connection taken for closed, one connection per request."""
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with stub() as server:
            store = HttpStore(server.url)
            assert [store.cancel_requested(x) for x in ("no", "yes", "no")] == [False, True, False]
            assert len({port for _, port, _ in server.seen}) == 1
            store.close()
    finally:
        for fd in held:
            os.close(fd)


def test_threads_share_one_store() -> None:
    with stub() as server:
        store = HttpStore(server.url)
        answers: list[bool] = []

        def ask(n: int) -> None:
            for i in range(20):
                answers.append(store.cancel_requested("yes" if (n + i) % 2 else "no"))

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(answers) == 160 and answers.count(True) == 80
        assert len({port for _, port, _ in server.seen}) <= 8  # connections reused, not one per request
        store.close()


def test_https_is_verified_against_the_ca_settings_httpx_would_use(tmp_path, monkeypatch) -> None:
    """A server whose certificate a private CA signed: refused with certifi's bundle (the default), answered
    with $SSL_CERT_FILE naming that CA, over one kept-alive TLS connection."""
    _, cert, key = self_signed(str(tmp_path))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with stub(tls=tls) as server:
        with pytest.raises(ServerError, match="CERTIFICATE_VERIFY_FAILED"):
            HttpStore(server.url, retry_window=0).cancel_requested("no")
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.crt"))
        store = HttpStore(server.url, "k3")
        assert [store.cancel_requested(x) for x in ("yes", "no")] == [True, False]
        assert [port for _, port, _ in server.seen][0] == server.seen[1][1]
        store.close()


def test_a_proxy_in_the_environment_is_gone_through(monkeypatch) -> None:
    """With $HTTP_PROXY set the store goes through httpx, which sends its requests to the proxy (here the stub,
    answering in the server's place: it sees the server's whole URL)."""
    with stub() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        store = HttpStore("http://sematic-server.invalid:8000", "k2")
        assert isinstance(store.connections, ProxiedConnections)
        assert store.cancel_requested("yes") is True
        assert proxy.seen[0][0] == "http://sematic-server.invalid:8000/api/v1/store/cancel_requested/yes"
        assert proxy.seen[0][2] == "k2"
        store.close()
