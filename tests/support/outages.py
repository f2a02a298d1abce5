"""Services that a fault test can kill and start again, on loopback: the sematic-k8s server as a real process,
a private S3 API server (moto) and a private Docker registry on ports of their own, a TCP proxy that can drop every
connection or lose the answer to one request, one that holds back a request past its client's timeout, to deliver it
late, one that stalls a request's body, one that pauses an answer midway (a registry serving a large blob slowly),
one that passes an answer slowly throughout (a slow path to the Docker engine), one that answers one request itself
(the Docker engine's 409 to a remove already under way), and one that answers "too many requests" (429), or another
status, in the target's place (an S3 API's, or a registry's before the Docker engine's pull:
:func:`registry_answering`); a port whose connects are never completed (:func:`unaccepting_port`), and one
whose connects are completed and never answered (:func:`unanswering_port`: a TLS handshake with it stalls), and a
TLS listener that reads requests and never answers them (:class:`HoldingTLSPort`)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from serving import free_port, wait_for


class _KilledAndStarted:
    """A service in a process of its own, on a fixed port: :meth:`kill` is kill -9, :meth:`stop` a SIGTERM (then
    kill -9 after 15 s); :meth:`start` (the subclass's) starts it again. ``what`` names it, ``health`` is the URL
    that answers 200 once it is up, ``log`` its output."""

    what: str
    health: str
    proc: subprocess.Popen[bytes] | None
    log: Path

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the {self.what} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(self.health, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """kill -9: no graceful shutdown, requests in flight are cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class ServerProcess(_KilledAndStarted):
    """``sematic-k8s server --local`` over ``home`` (or ``db_url``; ``args`` appended) on a fixed port, in a process
    of its own: :meth:`kill` is kill -9, :meth:`start` starts it again on the same port and database. ``local=False``:
    API keys required (its reruns' drivers get a token)."""

    def __init__(self, home: Path, *, db_url: str | None = None, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = (), local: bool = True) -> None:
        self.home, self.db_url, self.args, self.local = home, db_url, args, local
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / f"server-{self.port}.log"
        self.what, self.health = "server", f"{self.url}/api/v1/health"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "sematic_k8s_server.cli", "server", *(["--local"] if self.local else []),
               "--port", str(self.port), "--home", str(self.home)]
        if self.db_url:
            cmd += ["--db-url", self.db_url]
        cmd += self.args
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        wait_for(self._up, 60, what=f"the server on port {self.port} (log: {self.log})")


@contextlib.contextmanager
def running(*services: _KilledAndStarted) -> Iterator[None]:
    """The block with ``services`` started (in order), each stopped afterwards, however the block ended."""
    try:
        for service in services:
            service.start()
        yield
    finally:
        for service in services:
            service.stop()


class RegistryProcess(_KilledAndStarted):
    """A Docker registry of its own (Debian's ``docker-registry``, as ``infra/up.sh`` starts the shared one) on a free
    port of 127.0.0.1, its storage under ``home``, deletes enabled: :meth:`kill` is kill -9, :meth:`start` starts it
    again on the same port and storage (the images pushed before are still there). Never the shared registry."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / f"registry-{self.port}.log"
        self.config = home / f"registry-{self.port}.yml"
        self.what, self.health = "registry", f"http://{self.host}/v2/"
        self.config.write_text(f"version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: "
                               f"{home / 'registry-data'}}}\n  delete: {{enabled: true}}\n"
                               f"http: {{addr: {self.host}}}\n")

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(["docker-registry", "serve", str(self.config)], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(self._up, 30, what=f"the registry on {self.host} (log: {self.log})")


@contextlib.contextmanager
def pulled_from_own_registry(home: Path, image: str, repo: str, tag: str, *, whole: bool = False,
                             layered: bool = False, big_mb: int = 0) -> Iterator[tuple[RegistryProcess, str]]:
    """``image`` (a name the engine has) pushed as ``repo:tag`` to a registry of the test's own (never the shared
    one: others pull from it), then taken off the engine by that name, so a container of it must be pulled: (the
    registry, running; the image by digest there). ``whole``: ``image`` with a label of its own is pushed (a
    configuration new to the engine, its layers the same) and taken off the engine whole, so that its pull
    downloads its configuration (a blob's request); ``layered``: with a layer of its own too (a file), so that its
    pull downloads that layer (:func:`last_layer`) after its configuration; ``big_mb`` (with ``layered``): a layer of
    that many MB of random bytes before it, downloaded in the pull's sight. The registry is killed and the pulled
    image removed after."""
    import pytest
    from docker import errors as docker_errors

    from infra import docker_client

    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry (Debian's package) is not installed: the test needs a registry of its own")
    client = docker_client()
    registry = RegistryProcess(home)
    registry.start()
    ref, relabelled = None, f"sk-test-relabelled:{uuid.uuid4().hex[:12]}"
    try:
        if whole or layered:
            big = f"RUN head -c {big_mb}000000 /dev/urandom > /tmp/sk-test-big\n" if big_mb else ""
            layer = f"{big}RUN echo {relabelled} > /tmp/sk-test-layer\n" if layered else ""
            client.images.build(fileobj=io.BytesIO(f"FROM {image}\nLABEL sk-test={relabelled}\n{layer}".encode()),
                                tag=relabelled, rm=True)
        name = f"{registry.host}/{repo}"
        client.images.get(relabelled if whole or layered else image).tag(name, tag)
        client.images.push(name, tag)
        [ref] = [d for d in client.images.get(f"{name}:{tag}").attrs["RepoDigests"] if d.startswith(name)]
        for pushed in (f"{name}:{tag}", ref, relabelled):
            with contextlib.suppress(docker_errors.ImageNotFound):
                client.images.remove(pushed)
        yield registry, ref
    finally:
        registry.kill()
        for pulled in (ref, relabelled):
            with contextlib.suppress(docker_errors.ImageNotFound):
                if pulled is not None:
                    client.images.remove(pulled)


def last_layer(registry: RegistryProcess, ref: str) -> bytes:
    """The digest of the last layer of ``ref`` (an image by digest in ``registry``), as its blob's path ends."""
    repo, _, digest = ref.partition("/")[2].partition("@")
    manifest = httpx.get(f"http://{registry.host}/v2/{repo}/manifests/{digest}", headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json"}).json()
    return manifest["layers"][-1]["digest"].encode()


@contextlib.contextmanager
def called_in(seconds: float, call: Callable[[], object]) -> Iterator[None]:
    """``call()`` made ``seconds`` from now, on a thread of its own; never after the block."""
    later = threading.Timer(seconds, call)
    later.start()
    try:
        yield
    finally:
        later.cancel()
        later.join()


def restarted_in(service: _KilledAndStarted, seconds: float) -> contextlib.AbstractContextManager[None]:
    """``service`` (stopped) started again ``seconds`` from now; never after the block (the test's end stops it)."""
    return called_in(seconds, service.start)


@contextlib.contextmanager
def unaccepting_port() -> Iterator[int]:
    """A port on 127.0.0.1 whose listener accepts nothing and whose accept queue is full: a connect to it is never
    completed (its SYNs dropped, as by a host that drops them), until its own deadline. Checked: a connect of 1 s
    times out."""
    listener = socket.socket()
    queued: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(64):  # filled with connections never accepted, until one is not completed
            sock = socket.socket()
            sock.settimeout(1)
            try:
                sock.connect(("127.0.0.1", port))
            except TimeoutError:
                sock.close()
                break
            queued.append(sock)
        else:
            raise RuntimeError("a listener's full accept queue did not hold back a connect")
        yield port
    finally:
        for sock in queued:
            sock.close()
        listener.close()


@contextlib.contextmanager
def unanswering_port() -> Iterator[int]:
    """A port on 127.0.0.1 whose listener completes connects (into its accept queue: its kernel does) and never
    accepts them: nothing is ever read or answered there, so a TLS handshake with it waits for the server's hello
    (its ClientHello sent, unanswered) until its own deadline. Checked: a handshake of 1 s times out."""
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            try:
                ssl.create_default_context().wrap_socket(sock, server_hostname="127.0.0.1")
            except TimeoutError:
                pass
            else:
                raise RuntimeError("a TLS handshake with a listener that never accepts was answered")
        yield port
    finally:
        listener.close()


class HoldingTLSPort:
    """A TLS listener on 127.0.0.1 (its certificate from a throwaway CA, :attr:`ca` its path) that completes the
    handshake, reads each request (:attr:`held`: how many) and never answers it: a read of the answer waits until its
    own deadline. A context manager: closed (its connections too) at the end."""

    def __init__(self, directory: Path) -> None:
        from kube_model.certs import self_signed

        directory.mkdir(parents=True, exist_ok=True)
        _, cert, key = self_signed(str(directory))
        self.ca = str(directory / "ca.crt")
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert, key)
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.url = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                conn.settimeout(10)
                tls = self._context.wrap_socket(conn, server_side=True)
                if tls.recv(65536):  # the request (its head), never answered
                    with self._lock:
                        self._held.append(tls)
                    continue
                tls.close()
            except OSError:
                conn.close()

    def __enter__(self) -> HoldingTLSPort:
        return self

    def __exit__(self, *_: object) -> None:
        self._listener.close()
        with self._lock:
            for tls in self._held:
                tls.close()


class NotNow(NamedTuple):
    """A registry's "not now" to the engine's pull, as :func:`registry_answering` answers it, and the engine's words
    for it."""

    status: int  # 0: no answer at all, the connection held silent; -1: the registry's, cut mid-body (CUT); -2: the
    # registry's, held back until the proxy passes (HELD)
    headers: dict[str, str]
    json: str  # a registry's error document ("" a bare answer: a rate-limiting or failing proxy's)
    words: str


DOCKER_HUB_429 = json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": "You have reached your pull rate "
                                         "limit. You may increase the limit by authenticating and upgrading: "
                                         "https://www.docker.com/increase-rate-limit"}]})
REGISTRY_NOT_NOW = {
    "503": NotNow(503, {}, "", "received unexpected HTTP status: 503 Service Unavailable"),
    "429": NotNow(429, {"Retry-After": "2"}, "", 'error parsing HTTP 429 response body: unexpected end of JSON input: '
                                                 '""'),
    "429-json": NotNow(429, {"Retry-After": "2"}, DOCKER_HUB_429, "toomanyrequests: You have reached your pull rate "
                       "limit. You may increase the limit by authenticating and upgrading: "
                       "https://www.docker.com/increase-rate-limit"),
    "500": NotNow(500, {}, "", "received unexpected HTTP status: 500 Internal Server Error"),
    "502": NotNow(502, {}, "", "received unexpected HTTP status: 502 Bad Gateway"),
    "504": NotNow(504, {}, "", "received unexpected HTTP status: 504 Gateway Timeout"),
}
SILENT = NotNow(0, {}, "", "the pull made no progress for ")  # the engine says nothing: these words are ours
CUT = NotNow(-1, {}, "", "")  # the registry's answer cut after half its body: the engine retries the blob, no words
HELD = NotNow(-2, {}, "", "")  # passed on only once the proxy passes: a registry that answers late, no words


@contextlib.contextmanager
def registry_answering(registry: RegistryProcess, ref: str, answer: NotNow, *,
                       paths: tuple[bytes, ...] = (b"/manifests/", b"/blobs/"),
                       ) -> Iterator[tuple[ThrottlingProxy, str]]:
    """A :class:`ThrottlingProxy` before ``registry`` that answers the engine's requests for an image's manifest or
    blobs (those whose path has one of ``paths``) itself with ``answer`` (a 5xx or 429, bare or with a registry's
    error JSON, with its headers: a 429's ``Retry-After``; :data:`SILENT`: never, the connection held open; :data:`CUT`:
    the registry's answer, its connection closed after half its body; :data:`HELD`: the registry's, once the proxy
    passes), as a failing, rate-limiting, hung, cut or late registry (or the proxy before it) does, until its
    :meth:`~ThrottlingProxy.passing`; its ``/v2/`` ping passes.
    (The proxy, ``ref`` (an image by digest in ``registry``) named by the proxy's host, as the engine is to pull
    it: plain HTTP, the engine's registries on 127.0.0.0/8 being insecure.) The image pulled by that name is taken
    off the engine after."""
    from docker import errors as docker_errors

    from infra import docker_client

    proxy = ThrottlingProxy(registry.port, lambda head: any(path in head.split(b"\r\n", 1)[0] for path in paths),
                            sys.maxsize, status=answer.status, code="", headers=answer.headers, json=answer.json)
    image = f"127.0.0.1:{proxy.port}/{ref.partition('/')[2]}"
    try:
        yield proxy, image
    finally:
        proxy.close()
        with contextlib.suppress(docker_errors.ImageNotFound):
            docker_client().images.remove(image)


class S3Server:
    """moto's S3 API in this process on a fixed port. :meth:`stop` closes its socket (connections are refused);
    :meth:`start` listens again on the same port; the buckets and objects stay (moto keeps them in memory)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        deadline = time.monotonic() + 30
        while True:
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            try:
                server.start()
                break
            except OSError:  # the old socket is not released yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            inner = self._server._server
            self._server.stop()
            if inner is not None:
                inner.server_close()
            self._server = None

    def client(self):  # noqa: ANN201 - a boto3 S3 client
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test",
                            config=Config(s3={"addressing_style": "path"}))


@contextlib.contextmanager
def private_s3(monkeypatch, bucket: str = "faults") -> Iterator[tuple[S3Server, str]]:
    """A private S3 server with ``bucket``, this process's AWS settings pointing at it; (server, storage URL)."""
    s3 = S3Server()
    s3.start()
    for name, value in {"AWS_ENDPOINT_URL_S3": s3.endpoint, "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "SEMATIC_K8S_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    s3.client().create_bucket(Bucket=bucket)
    try:
        yield s3, f"s3://{bucket}/artifacts"
    finally:
        s3.stop()


def _copy(source: socket.socket, sink: socket.socket, *,
          each: Callable[[bytes, Callable[[bytes], None]], bool] | None = None,
          sink_end: int | None = socket.SHUT_RDWR, source_end: int | None = None) -> None:
    """``source``'s bytes sent on to ``sink`` as they come, until ``source`` ends, ``each`` says to stop, or either
    fails. ``each(chunk, send)``, when given, sends each chunk read itself (whole, in parts with a wait between
    them, or held back) and says whether to go on. Then ``sink`` is shut down ``sink_end`` (by default both ways:
    its peer hears the end) and ``source`` ``source_end`` (None: left as it is)."""
    try:
        while data := source.recv(65536):
            if each is None:
                sink.sendall(data)
            elif not each(data, sink.sendall):
                return
    except OSError:
        pass
    finally:
        for sock, how in ((sink, sink_end), (source, source_end)):
            if how is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(how)


def _forward(client: socket.socket, upstream: socket.socket, pick: Callable[[bytes], None]) -> None:
    """``client``'s bytes sent on to ``upstream`` as they come, each piece shown to ``pick`` first (to mark the
    request under way as one whose answer the proxy treats), until ``client`` ends or either fails; then both are
    closed."""
    try:
        while data := client.recv(65536):
            pick(data)
            upstream.sendall(data)
    except OSError:
        pass
    finally:
        client.close()
        upstream.close()


class _LoopbackProxy:
    """A TCP proxy on 127.0.0.1 to ``target_port`` (or a Unix socket's path: a Docker engine's): accepts connections
    on a port of its own (``url``) and gives each, with its own connection to the target, to :meth:`_serve` on a
    thread; :meth:`_refused` may close one first. Subclasses set their own state before calling ``__init__``, which
    starts accepting."""

    def __init__(self, target_port: int | str, name: str) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True, name=name)
        self._acceptor.start()

    def close(self) -> None:
        """Stop accepting: the accepting thread ends (closing the listener alone left it blocked in accept())."""
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        self.listener.close()
        self._acceptor.join(5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self._refused(client):
                threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _refused(self, client: socket.socket) -> bool:
        return False

    def _connect(self, client: socket.socket) -> None:
        try:
            if isinstance(self.target_port, str):
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(self.target_port)
            else:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        self._serve(client, upstream)

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        raise NotImplementedError


class DroppingProxy(_LoopbackProxy):
    """A TCP proxy on 127.0.0.1 to ``target_port``. While :attr:`dropping`, every connection (new or open) is
    closed at once, as a failing load balancer would. :meth:`lose_answer` loses the answer to one request."""

    def __init__(self, target_port: int | str) -> None:
        self.dropping = False
        self.dropped = 0
        self.lost = 0  # answers lost (see lose_answer)
        self._lose: tuple[bytes, bytes, Callable[[], None] | None] | None = None
        self._open: set[socket.socket] = set()
        super().__init__(target_port, "dropping-proxy")

    def lose_answer(self, request_start: bytes, instead: bytes = b"",
                    meanwhile: Callable[[], None] | None = None) -> None:
        """Of the requests whose bytes start with ``request_start`` (e.g. ``b"PUT /bucket/key "``), the first one
        the target carries out (a 2xx answer) never has its answer reach the client: ``meanwhile()`` is called
        (e.g. another client writes), then the client's connection is closed, after ``instead`` (e.g. a proxy's
        502 answer) when given. Once."""
        with self._lock:
            self._lose = (request_start, instead, meanwhile)

    def _matches(self, request: bytes) -> bool:
        lose = self._lose
        return lose is not None and request.startswith(lose[0])

    def _take(self) -> bytes | None:
        """What to answer instead of an answer to lose, once ``meanwhile`` ran (the loss is then used up); None
        when none is to be lost."""
        with self._lock:
            lose, self._lose = self._lose, None
        if lose is None:
            return None
        if lose[2] is not None:
            lose[2]()
        return lose[1]

    def drop(self, on: bool = True) -> None:
        self.dropping = on
        if on:
            with self._lock:
                for s in list(self._open):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        super().close()
        self.drop()

    def _refused(self, client: socket.socket) -> bool:
        if self.dropping:
            self.dropped += 1
            client.close()
        return self.dropping

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            self._open.update((client, upstream))
        matching = False  # the request under way is one whose answer may be lost
        try:
            while not self.dropping:
                ready, _, _ = select.select([client, upstream], [], [], 0.1)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is client:
                        matching = matching or self._matches(data)
                        upstream.sendall(data)
                        continue
                    if matching:
                        interim, final = _split_interim(data)
                        client.sendall(interim)
                        if not final:
                            continue
                        matching = False
                        if final.startswith(b"HTTP/1.1 2") and (instead := self._take()) is not None:
                            client.sendall(instead)  # the target carried the request out; the client never hears
                            self.lost += 1
                            return
                        data = final
                    client.sendall(data)
        except OSError:
            pass
        finally:
            if self.dropping:
                self.dropped += 1
            with self._lock:
                self._open.difference_update((client, upstream))
            client.close()
            upstream.close()


class AnsweringOnceProxy(_LoopbackProxy):
    """A TCP proxy on 127.0.0.1 to ``target_port`` (a Docker engine's socket) that answers the first request whose
    bytes match ``pattern`` itself, not forwarded: ``meanwhile(request)`` runs first (e.g. another client carries that
    request out), then ``answer(request)`` (a whole HTTP/1.1 answer) goes back on its connection, which stays open.
    Every other request and every answer passes unchanged. ``answered``: the requests so answered."""

    def __init__(self, target_port: int | str, pattern: bytes, answer: Callable[[bytes], bytes],
                 meanwhile: Callable[[bytes], None] | None = None) -> None:
        self.pattern = re.compile(pattern)
        self.answer, self.meanwhile = answer, meanwhile
        self.answered: list[bytes] = []
        super().__init__(target_port, "answering-proxy")

    def _take(self, data: bytes) -> bool:
        with self._lock:
            if self.answered or not self.pattern.match(data):
                return False
            self.answered.append(data)
        return True

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 0.1)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is upstream:
                        client.sendall(data)
                    elif self._take(data):
                        if self.meanwhile is not None:
                            self.meanwhile(data)
                        client.sendall(self.answer(data))
                    else:
                        upstream.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()


def _split_interim(data: bytes) -> tuple[bytes, bytes]:
    """An answer's bytes as (its interim ``1xx`` answers, the rest: the start of the final answer)."""
    interim = b""
    while data.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in data:
        end = data.index(b"\r\n\r\n") + 4
        interim, data = interim + data[:end], data[end:]
    return interim, data


def writes_end(root_id: str, state: str) -> Callable[[bytes], bool]:
    """A :class:`HoldingProxy` ``hold``: whether a request is a store write recording resolution ``root_id`` ended in
    ``state`` (a resolver's or CloudResolver's record of its end)."""
    def pick(request: bytes) -> bool:
        if not request.startswith(b"POST /api/v1/store/write"):
            return False
        try:
            body = json.loads(request.split(b"\r\n\r\n", 1)[1])
        except ValueError:
            return False
        return (body.get("resolution_updates") or {}).get(root_id, {}).get("state") == state
    return pick


class HoldingProxy(_LoopbackProxy):
    """A TCP proxy on 127.0.0.1 to ``target_port`` that reads the HTTP/1.1 requests passing through it and holds
    back the first one ``hold`` picks: not forwarded, its connection left unanswered (the client's read times out
    and it sends the request again, which passes), until :meth:`release` sends it to the server on a connection of
    its own, as a request held up in the network or a load balancer would arrive late. Every other request and
    every answer passes unchanged. ``until_release``: every request ``hold`` picks is left unanswered until then (the
    client's retries too, as a path to the server that stays down for a while), the first one kept to be sent."""

    def __init__(self, target_port: int, hold: Callable[[bytes], bool], *, until_release: bool = False) -> None:
        self.hold = hold
        self.held: bytes | None = None
        self.until_release = until_release
        self.released = False
        super().__init__(target_port, "holding-proxy")

    def release(self) -> tuple[int, bytes]:
        """Send the held request to the server now; its answer's status and body."""
        assert self.held is not None, "no request was held"
        with self._lock:
            self.released = True
        with socket.create_connection(("127.0.0.1", self.target_port), timeout=60) as upstream:
            upstream.sendall(self.held)
            reader = upstream.makefile("rb")
            head, body = _read_message(reader)
        return int(head.split(b" ", 2)[1]), body

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        threading.Thread(target=_copy, args=(upstream, client), daemon=True).start()
        reader = client.makefile("rb")
        try:
            while True:
                head, body = _read_message(reader)
                request = head + body
                with self._lock:
                    held = (self.held is None or (self.until_release and not self.released)) and self.hold(request)
                    if held and self.held is None:
                        self.held = request
                if held:  # leave the client waiting: it times out, closes, and sends the request again
                    while reader.read(65536):
                        pass
                    return
                upstream.sendall(request)
        except (OSError, EOFError):
            pass
        finally:
            client.close()
            upstream.close()


class StallingProxy(_LoopbackProxy):
    """A TCP proxy on 127.0.0.1 to ``target_port`` that stalls the body of the first request whose head starts with
    ``request_start``: its head and the first half of its body (by its Content-Length) reach the server, the rest
    never does (read and dropped, as bytes lost on a path that went quiet), while the server's answer still reaches
    the client. Every other request and answer passes unchanged."""

    def __init__(self, target_port: int, request_start: bytes) -> None:
        self.request_start = request_start
        self.stalled = 0
        super().__init__(target_port, "stalling-proxy")

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        threading.Thread(target=_copy, args=(upstream, client), daemon=True).start()
        pending = b""  # bytes of the next request's head, until it is whole
        body_left = 0  # bytes of the request under way's body still to pass
        stalled = False  # this connection's request was stalled: whatever else comes on it is dropped
        try:
            while data := client.recv(65536):
                while data and not stalled:
                    if body_left:
                        upstream.sendall(data[:body_left])
                        data, body_left = data[body_left:], body_left - len(data[:body_left])
                        continue
                    pending, data = pending + data, b""
                    if b"\r\n\r\n" not in pending:
                        break
                    end = pending.index(b"\r\n\r\n") + 4
                    head, data, pending = pending[:end], pending[end:], b""
                    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    with self._lock:
                        stalled = head.startswith(self.request_start) and self.stalled == 0
                        self.stalled += stalled
                    upstream.sendall(head)
                    body_left = length // 2 if stalled else length
                    if stalled:
                        upstream.sendall(data[:body_left])
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()


class PausingProxy(_LoopbackProxy):
    """A TCP proxy on 127.0.0.1 to ``target_port`` that pauses the answer to each request whose first line has
    ``request``: its first ``after`` bytes pass, the rest waits until :meth:`resume` (a registry that serves a large
    blob slowly: the download under way, not failed). Every other request and answer passes unchanged."""

    def __init__(self, target_port: int, request: bytes, after: int) -> None:
        self.request, self.after = request, after
        self.paused = 0  # answers paused so far (their first bytes passed)
        self._resumed = threading.Event()
        super().__init__(target_port, "pausing-proxy")

    def resume(self) -> None:
        """Let every paused answer go on, and pause none from now on."""
        self._resumed.set()

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        picked = threading.Event()  # this connection's request under way is one to pause (HTTP/1.1: one at a time)
        threading.Thread(target=self._answers, args=(upstream, client, picked), daemon=True).start()

        def pick(data: bytes) -> None:
            if data.split(b"\r\n", 1)[0].find(self.request) >= 0 and not self._resumed.is_set():
                picked.set()

        _forward(client, upstream, pick)

    def _answers(self, upstream: socket.socket, client: socket.socket, picked: threading.Event) -> None:
        passed = 0  # bytes of the picked answer passed so far

        def pausing(data: bytes, send: Callable[[bytes], None]) -> bool:
            nonlocal passed
            if picked.is_set() and passed + len(data) > self.after:
                head, data = data[:self.after - passed], data[self.after - passed:]
                send(head)
                with self._lock:
                    self.paused += 1
                self._resumed.wait()
                picked.clear()
            passed = passed + len(data) if picked.is_set() else 0
            send(data)
            return True

        _copy(upstream, client, each=pausing)


class TricklingProxy(_LoopbackProxy):
    """A TCP proxy on 127.0.0.1 to ``target_port`` (or a Unix socket's path: a Docker engine's) that passes the
    answer to each request whose first line has ``request`` at ``rate`` bytes a second at most (each piece followed
    by the wait its size takes at that rate: slow, never stalled). Every other request and answer passes unchanged."""

    def __init__(self, target_port: int | str, request: bytes, rate: int) -> None:
        self.request, self.rate = request, rate
        self.trickled = 0  # answers slowed so far
        super().__init__(target_port, "trickling-proxy")

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        picked = threading.Event()  # this connection's request under way is one to slow (HTTP/1.1: one at a time)

        def trickling(data: bytes, send: Callable[[bytes], None]) -> bool:
            step = max(1, self.rate // 10)
            while data and picked.is_set():
                piece, data = data[:step], data[step:]
                send(piece)
                time.sleep(len(piece) / self.rate)  # however small the pieces the target sends
            if data:
                send(data)
            return True

        def pick(data: bytes) -> None:
            first = data.split(b"\r\n", 1)[0]
            if first.endswith(b" HTTP/1.1"):  # a request's start: slowed or not, its answer
                if self.request in first:
                    with self._lock:
                        self.trickled += 1
                    picked.set()
                else:
                    picked.clear()

        threading.Thread(target=_copy, args=(upstream, client), kwargs={"each": trickling}, daemon=True).start()
        _forward(client, upstream, pick)


class ThrottlingProxy(_LoopbackProxy):
    """A TCP proxy on 127.0.0.1 to an S3 API (or a registry) on ``target_port`` that answers the first ``times``
    requests ``throttle`` picks (by their head) itself, never passing them on, until :meth:`passing`: ``status``
    with an S3 error document of ``code`` and ``message`` (by default 429 TooManyRequests, as R2 and GCS answer more
    than one write to a key a second; 403 AccessDenied "Access Denied": S3's refusal by a bucket's policy; a bare
    answer when ``code`` is empty) or ``json`` (a registry's error document, as Docker
    Hub's 429 carries), and ``headers`` (``Retry-After``); ``status`` 0: no answer at all, the connection held open
    and silent (a registry that hangs); ``status`` -1: passed on, and the target's answer cut, its connection closed
    after the answer's head and half its body (a connection lost mid-download); ``status`` -2: held, silent, and
    passed on once the proxy passes (a registry that answers late). Every other request and answer passes. A
    request's ``Expect: 100-continue`` is answered here (its body is read before it is judged). :meth:`silent` makes
    it hold those it picks from then on (:attr:`held`: how many it held)."""

    def __init__(self, target_port: int, throttle: Callable[[bytes], bool], times: int, *, status: int = 429,
                 code: str = "TooManyRequests", message: str = "slow down", headers: dict[str, str] | None = None,
                 json: str = "") -> None:
        self.throttle, self.left, self.throttled, self.held = throttle, times, 0, 0
        self.answer = self._answer(status, code, message, headers, json)
        self.cuts, self.holds = status == -1, status == -2
        self._passing = threading.Event()  # set by passing(): held requests go on
        super().__init__(target_port, "throttling-proxy")

    @staticmethod
    def _answer(status: int, code: str, message: str, headers: dict[str, str] | None, json: str) -> bytes:
        """The answer of ``status`` (b"" for none of its own: 0, -1, -2), as :class:`ThrottlingProxy` describes it."""
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>" \
            if code and not json else json  # neither: a bare 429, as a rate-limiting proxy before S3 answers
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        kind = "application/json" if json else "application/xml"
        return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {kind}\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n{body}").encode() if status > 0 else b""

    def answering(self, status: int, *, code: str = "", message: str = "slow down",
                  headers: dict[str, str] | None = None, json: str = "") -> None:
        """Answer the requests it picks from now on with ``status`` (a 5xx or 429, with ``code``, ``headers`` and
        ``json`` as given to the constructor): a registry whose "not now" changes (a 503, then a 429)."""
        with self._lock:
            self.answer, self.cuts, self.holds = self._answer(status, code, message, headers, json), False, False

    def passing(self) -> None:
        """Pass every request from now on (and those held, :data:`HELD`)."""
        with self._lock:
            self.left = 0
        self._passing.set()

    def silent(self) -> None:
        """Answer none of the requests it picks from now on: each held, its connection open and silent (a registry
        that answered "not now", then hangs)."""
        with self._lock:
            self.answer, self.cuts = b"", False

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        cutting = threading.Event()  # the answer under way is to be cut
        threading.Thread(target=self._answers, args=(upstream, client, cutting), daemon=True).start()
        reader = client.makefile("rb")
        try:
            if reader.peek(1)[:1] == b"\x16":  # a TLS handshake (docker tries HTTPS first): passed on as bytes
                while data := reader.read1(65536):
                    upstream.sendall(data)
                return
            while True:
                head, body = _read_message(reader, continue_to=client)
                with self._lock:
                    throttled = self.left > 0 and self.throttle(head)
                    answer, cuts = self.answer, self.cuts
                    if throttled:
                        self.left -= 1
                        self.throttled += 1
                        self.held += not answer and not cuts
                if throttled and cuts:  # passed on, its answer cut by _answers
                    cutting.set()
                    upstream.sendall(head + body)
                    continue
                if throttled and self.holds:  # passed on once the proxy passes
                    while not self._passing.wait(1.0):
                        if self._closed:
                            return
                    upstream.sendall(head + body)
                    continue
                if throttled and not answer:  # silent: the connection held until its client gives up
                    while reader.read1(65536):
                        pass
                    return
                if throttled:
                    client.sendall(answer)  # one request at a time per connection: no answer of the target's due
                else:
                    upstream.sendall(head + body)
        except (OSError, EOFError):
            pass
        finally:
            client.close()
            upstream.close()

    @staticmethod
    def _answers(upstream: socket.socket, client: socket.socket, cutting: threading.Event) -> None:
        """The target's answers passed on as they come; once ``cutting`` is set, the next answer's head and half its
        body (by its Content-Length) only, then both connections closed."""
        taken = b""

        def cut(data: bytes, send: Callable[[bytes], None]) -> bool:
            nonlocal taken
            if not cutting.is_set():
                send(data)
                return True
            taken += data
            if b"\r\n\r\n" not in taken:
                return True
            end = taken.index(b"\r\n\r\n") + 4
            length = next((int(line.split(b":", 1)[1]) for line in taken[:end].split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(taken) < end + length // 2:
                return True
            send(taken[:end + length // 2])
            return False

        _copy(upstream, client, each=cut, source_end=socket.SHUT_RDWR)


def _read_message(reader: Any, continue_to: socket.socket | None = None) -> tuple[bytes, bytes]:
    """One HTTP/1.1 message's head (start line and headers, with the blank line) and its body (Content-Length
    bytes); EOFError at the end of the stream. With ``continue_to``, a request's ``Expect: 100-continue`` is taken out
    of its head and answered on that socket, so that its client sends the body."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline(65537)
        if not line:
            raise EOFError("the connection ended")
        if continue_to is not None and line.lower().replace(b" ", b"") == b"expect:100-continue\r\n":
            continue_to.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            continue
        head += line
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            chunked = value.strip().lower() == b"chunked"
    if chunked:  # a docker push's layer upload: chunks, then a zero chunk and trailers, passed on as they came
        return head, _read_chunks(reader)
    body = reader.read(length) if length else b""
    if len(body) < length:
        raise EOFError("the connection ended mid-body")
    return head, body


def _read_chunks(reader: Any) -> bytes:
    """A chunked body's bytes as sent (sizes, data, the zero chunk, trailers); EOFError when it is cut."""
    parts: list[bytes] = []
    while True:
        size_line = reader.readline(65537)
        if not size_line.endswith(b"\r\n"):
            raise EOFError("the connection ended mid-body")
        parts.append(size_line)
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            while (line := reader.readline(65537)) not in (b"\r\n", b""):
                parts.append(line)
            if not line:
                raise EOFError("the connection ended mid-body")
            return b"".join([*parts, line])
        data = reader.read(size + 2)
        if len(data) < size + 2:
            raise EOFError("the connection ended mid-body")
        parts.append(data)


class BalancingProxy:
    """A TCP load balancer on 127.0.0.1 before several targets (the server replicas behind a Service): each new
    connection goes to the next target in turn, skipping one that refuses it (a replica whose listener closed), its
    bytes piped both ways as they come; a target's closed connection closes the client's. :meth:`remove` takes a
    target out of the rotation (its endpoint removed), :meth:`add` puts one in."""

    def __init__(self, *target_ports: int) -> None:
        self.targets = list(target_ports)
        self.connections: dict[int, int] = dict.fromkeys(target_ports, 0)  # connections each target took
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._turn = 0
        self._acceptor = threading.Thread(target=self._accept, daemon=True, name="balancing-proxy")
        self._acceptor.start()

    def add(self, port: int) -> None:
        with self._lock:
            self.targets.append(port)
            self.connections.setdefault(port, 0)

    def remove(self, port: int) -> None:
        with self._lock:
            self.targets.remove(port)

    def close(self) -> None:
        """Stop accepting: the accepting thread ends (closing the listener alone left it blocked in accept())."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        self.listener.close()
        self._acceptor.join(5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        with self._lock:  # the first connection goes to the first target
            turn = self._turn % len(self.targets) if self.targets else 0
            order, self._turn = self.targets[turn:] + self.targets[:turn], self._turn + 1
        for port in order:
            try:
                upstream = socket.create_connection(("127.0.0.1", port))
            except OSError:
                continue
            with self._lock:
                self.connections[port] += 1
            break
        else:
            client.close()
            return
        back = threading.Thread(target=_copy, args=(upstream, client), daemon=True,  # each way ends on its own
                                kwargs={"sink_end": socket.SHUT_WR, "source_end": socket.SHUT_RD})
        back.start()
        _copy(client, upstream, sink_end=socket.SHUT_WR, source_end=socket.SHUT_RD)
        back.join()
        client.close()
        upstream.close()


NGINX_504 = (b"HTTP/1.1 504 Gateway Time-out\r\nServer: nginx/1.25.3\r\nContent-Type: text/html\r\n"
             b"Content-Length: 167\r\nConnection: close\r\n\r\n"
             b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway "
             b"Time-out</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>\r\n")


class TimingOutGateway(_LoopbackProxy):
    """A TCP proxy on 127.0.0.1 to ``target_port`` that, while :attr:`timing_out`, answers each new connection's
    request with nginx's 504 page (its upstream did not answer in time: a server restarting behind it) and closes it
    (:attr:`answered` counts them); otherwise passes both ways on."""

    def __init__(self, target_port: int) -> None:
        self.timing_out = True
        self.answered = 0
        super().__init__(target_port, "timing-out-gateway")

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        if self.timing_out:
            upstream.close()
            try:
                client.recv(65536)  # the request (its head, at least)
                client.sendall(NGINX_504)
                self.answered += 1
            except OSError:
                pass
            finally:
                client.close()
            return
        answers = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
        answers.start()
        _copy(client, upstream)
        answers.join(30)
