"""Clients that are slow, idle or hostile on the network, over real sockets against a real ``sematic-k8s server``
process (API keys on): connections that never send a request, headers a byte at a time, a head of hundreds of MB,
bodies declared and never sent, event streams that are never read. Each is closed within its bound while the server
goes on answering everyone else; each test failed before the bound it checks (``sematic_k8s_server/connections.py``,
the Guard's body timeout)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from outages import StallingProxy
from sematic_k8s.serialization import content_id
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s.store.wire import batch_to_json, dumps
from sematic_k8s_server import auth
from sematic_k8s_server.db import open_store
from serving import record_resolution, server_process, wait_for

MiB = 1024 * 1024
TCP_ESTABLISHED = 1  # the first byte of TCP_INFO: the connection's state (linux/tcp_states.h)
HEAD = b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"


class Keyed:
    """A server process with API keys: its process, URL and a key."""

    def __init__(self, proc: object, url: str, key: str) -> None:
        self.proc, self.url, self.key = proc, url, key
        self.port = int(url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.proc.pid  # type: ignore[attr-defined]

    def connect(self, *, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket()
        if rcvbuf is not None:  # before connecting: the window it advertises
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", self.port))
        return sock

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": self.key}, timeout=30)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Keyed]]:
    """Start a server process with these flags (short timeouts); stopped after the test."""
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    key = auth.create_key(store.engine, "tests")
    store.close()
    with contextlib.ExitStack() as started:
        def start_with(*args: str) -> Keyed:
            proc, url = started.enter_context(server_process(tmp_path, *args))
            return Keyed(proc, url, key)

        yield start_with


def sockets_held(pid: int) -> int:
    """The server process's open sockets (its listener and database connections included)."""
    held = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            held += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except FileNotFoundError:  # closed meanwhile
            pass
    return held


def peers_held(pid: int) -> set[int]:
    """The ports of the clients on 127.0.0.1 whose connections the server process holds (from its socket fds, by
    inode, in the kernel's TCP table): each connection named by its client's port, whatever else the server holds or
    lets go meanwhile (a connection of its own start's health check, closing)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    with open(f"/proc/{pid}/net/tcp") as table:
        rows = [line.split() for line in list(table)[1:]]
    return {int(row[2].rsplit(":", 1)[1], 16) for row in rows if row[9] in inodes}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed (or cut) ``sock``'s connection, seen without reading from it (a read would make
    room in a full window): its TCP state is no longer ESTABLISHED (CLOSE_WAIT after a close, CLOSE after a cut)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_ESTABLISHED


def answer(sock: socket.socket, timeout: float = 60) -> bytes:
    """What the server sends on ``sock`` until it closes the connection (``timeout``: for each read)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def one_batch(runs: int = 1) -> tuple[str, Batch]:
    """A new resolution with ``runs`` runs (its root among them), and its id."""
    root, batch = uuid.uuid4().hex, Batch()
    batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:f", state="running", settings={"kind": "local"},
                                          created_at=utcnow()))
    for i in range(runs):
        batch.add_run(RunRecord(id=root if i == 0 else uuid.uuid4().hex, root_id=root, parent_id=None if i == 0
                                else root, func_path="m:f", func_name="f", state="created", created_at=utcnow()))
    return root, batch


def others_are_answered(served: Keyed) -> None:
    """Health, a store write (read back) and the dashboard's page, each answered as usual."""
    with served.client() as c:
        assert c.get("/api/v1/health").status_code == 200
        root, batch = one_batch()
        assert c.post("/api/v1/store/write", content=batch_body(batch),
                      headers={"Content-Type": "application/json"}).status_code == 200
        assert c.get(f"/api/v1/resolutions/{root}").status_code == 200
        page = c.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()


def batch_body(batch: Batch) -> bytes:
    return dumps(batch_to_json(batch))


# -- connections that never finish a request's head -------------------------------------------------------------

def test_idle_and_trickling_connections_are_closed_while_the_server_answers_others(start: Callable[..., Keyed]) -> None:
    """100 connections that send nothing and 100 that send a request's headers a byte every half second (slowloris),
    never finishing: meanwhile health, a store write and the dashboard page are answered; each of the 200 is then
    closed by the server (``--header-timeout``) and the server holds none of their sockets. Was: all held for as long
    as their clients liked (uvicorn closes only a connection idle after an answer)."""
    keyed = start("--header-timeout", "2")
    idle = [keyed.connect() for _ in range(100)]
    trickling = [keyed.connect() for _ in range(100)]
    ports = {sock.getsockname()[1] for sock in idle + trickling}
    for sock in trickling:
        sock.sendall(HEAD + b"X-Trickle: ")
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.5):
            for sock in trickling:
                try:
                    sock.send(b"a")
                except OSError:  # closed by the server
                    pass

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        # each held, or already closed by the server (on a loaded machine the first may pass --header-timeout
        # before the last is taken); each counted as itself (was: the server's sockets against a count taken
        # before, which a socket of its own, closing then, left one short for ever)
        def taken() -> bool:
            held = peers_held(keyed.pid)
            return all(sock.getsockname()[1] in held or closed_by_server(sock) for sock in idle + trickling)
        wait_for(taken, 30, what="the server to take the 200 connections")
        others_are_answered(keyed)
        wait_for(lambda: all(closed_by_server(s) for s in idle + trickling), 60,
                 what="the server to close the idle and trickling connections")
        wait_for(lambda: not ports & peers_held(keyed.pid), 30, what="the server to let their sockets go")
        others_are_answered(keyed)
    finally:
        stop.set()
        thread.join()
        for sock in idle + trickling:
            sock.close()


def test_a_request_head_over_64_kib_is_refused_without_memory_growth(start: Callable[..., Keyed]) -> None:
    """A header line of 64 MiB, sent as fast as the server reads, by a client with no key: the connection is closed
    once its head passes 64 KiB, and the server's memory does not grow with it; a head just over 64 KiB, sent and
    then waited on, is answered 431. Was: gathered whole, unauthenticated (a few hundred MB of one header line were
    as many of the server's memory, and more for each such client), and the 431 never came."""
    keyed = start()
    httpx.get(keyed.url + "/api/v1/health")  # warm
    before = rss_kib(keyed.pid)
    sock = keyed.connect()
    sent = 0
    try:
        sock.sendall(HEAD + b"X-Big: ")
        while sent < 64 * MiB:
            sock.sendall(b"a" * MiB)
            sent += MiB
    except OSError:  # reset: the server closed the connection while it was sent
        pass
    finally:
        sock.close()
    assert sent < 64 * MiB, "the server took all of a 64 MiB head"
    assert rss_kib(keyed.pid) - before < 16 * 1024, "the server's memory grew with the head"
    sock = keyed.connect()
    sock.sendall(HEAD + b"X-Big: " + b"a" * (64 * 1024))  # never ended
    reply = answer(sock, timeout=30)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    others_are_answered(keyed)


# -- bodies that never all arrive -------------------------------------------------------------------------------

def test_a_body_never_sent_trickled_or_never_ended_gets_408_and_is_not_recorded(start: Callable[..., Keyed]) -> None:
    """Three store writes whose body would record a resolution: one declared by Content-Length and only half sent,
    one trickled a byte every 0.3 s, one chunked and never ended; and a cache look-up half sent. Each gets 408 naming
    ``--body-timeout`` and its connection is closed; none of the resolutions is recorded; the server answers everyone
    else meanwhile. A live-events stream whose declared body never comes is ended whole (its last chunk), then closed
    (was: cut mid-answer, uvicorn's "ASGI callable returned without completing response" in the log). The same
    stalled body without a key gets 401 at once, its body never waited for. Was: each waited for its body for ever."""
    keyed = start("--body-timeout", "3")
    bodies = {name: one_batch() for name in ("half", "trickled", "chunked")}
    head = (f"POST /api/v1/store/write HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {keyed.key}\r\n"
            "Content-Type: application/json\r\n").encode()
    socks = {name: keyed.connect() for name in bodies}
    half = batch_body(bodies["half"][1])
    socks["half"].sendall(head + b"Content-Length: %d\r\n\r\n" % len(half) + half[: len(half) // 2])
    trickled = batch_body(bodies["trickled"][1])
    socks["trickled"].sendall(head + b"Content-Length: %d\r\n\r\n" % len(trickled))
    chunk = batch_body(bodies["chunked"][1])
    socks["chunked"].sendall(head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    socks["routed"] = keyed.connect()  # a request the app routes (not the write's fast path): the same
    socks["routed"].sendall(head.replace(b"/store/write", b"/store/cached") + b"Content-Length: 100\r\n\r\n"
                            b'{"keys": [')
    answered = threading.Event()

    def trickle() -> None:
        for byte in trickled:
            if answered.wait(0.3):
                return
            try:
                socks["trickled"].send(bytes([byte]))
            except OSError:
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    replies: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=name: replies.__setitem__(n, answer(socks[n])), daemon=True)
               for name in socks]
    try:
        for reader in readers:
            reader.start()
        others_are_answered(keyed)
        for reader in readers:
            reader.join(90)
        answered.set()
    finally:
        answered.set()
        thread.join()
        for sock in socks.values():
            sock.close()
    for name, reply in replies.items():
        assert reply.startswith(b"HTTP/1.1 408"), (name, reply[:300])
        assert b"--body-timeout" in reply and b"connection: close" in reply.lower(), (name, reply[:300])
    assert set(replies) == set(socks)  # each connection closed after its answer (answer() read to its end)
    with keyed.client() as c:
        for name, (root, _) in bodies.items():
            assert c.get(f"/api/v1/resolutions/{root}").status_code == 404, name
    stream = keyed.connect()  # a live-events stream whose declared body never comes: ended whole, then closed
    stream.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {keyed.key}\r\n"
                   "Content-Length: 10\r\n\r\n".encode())
    reply = answer(stream)
    stream.close()
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n0\r\n\r\n"), reply[-300:]
    unkeyed = keyed.connect()
    unkeyed.sendall(b"POST /api/v1/store/write HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n")
    reply = answer(unkeyed)
    unkeyed.close()
    assert reply.startswith(b"HTTP/1.1 401"), reply[:300]
    others_are_answered(keyed)


# -- answers that are never read ---------------------------------------------------------------------------------

def test_event_streams_never_read_are_cut_and_a_reading_follower_goes_on(start: Callable[..., Keyed]) -> None:
    """Ten live-event streams (``/api/v1/events``) whose clients read nothing (a window of 4 KiB, full), and one
    follower that reads, while runs are recorded until the server's buffers for the ten are full: each of the ten is
    cut (``--send-timeout``) and the server holds none of their sockets; the follower's stream goes on (it gets the
    next write's event). Was: each stream, its buffers and its queue of events held for as long as its client
    liked."""
    keyed = start("--send-timeout", "3")
    before = sockets_held(keyed.pid)
    head = f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {keyed.key}\r\n\r\n".encode()
    stalled = [keyed.connect(rcvbuf=4096) for _ in range(10)]
    for sock in stalled:
        sock.sendall(head)
    lines: list[str] = []
    stop = threading.Event()

    def follow() -> None:
        with keyed.client() as c, c.stream("GET", "/api/v1/events", timeout=None) as r:
            for line in r.iter_lines():
                lines.append(line)
                if stop.is_set():
                    return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    wait_for(lambda: lines, 30, what="the follower's stream")
    store = HttpStore(keyed.url, keyed.key)
    try:
        for _ in range(150):  # 1,000 runs a write: about 110 KB of events a stream
            store.write(one_batch(1000)[1])
            if all(closed_by_server(s) for s in stalled):
                break
        wait_for(lambda: all(closed_by_server(s) for s in stalled), 60, what="the unread streams to be cut")
        wait_for(lambda: sockets_held(keyed.pid) <= before + 2, 30, what="the server to let their sockets go")
        root, batch = one_batch()
        store.write(batch)
        wait_for(lambda: any(root in line for line in lines[-50:]), 30, what="the follower's next event")
        assert follower.is_alive()
        others_are_answered(keyed)
    finally:
        stop.set()
        store.close()
        for sock in stalled:
            sock.close()


def test_a_slow_reader_of_a_large_answer_is_not_cut(start: Callable[..., Keyed], tmp_path: Path) -> None:
    """An artifact of 8 MiB (more than the system buffers for the connection) read by a client that takes 64 KiB
    every tenth of a second: it gets every byte, though the server's buffer for it stays full for far longer than
    ``--send-timeout`` (it is cut only when its client reads none of it for that long)."""
    keyed = start("--send-timeout", "1")
    payload = os.urandom(8 * MiB)
    record_resolution(keyed.url, keyed.key, kind="local", inputs={"x": ("pickle", payload)},
                      storage=LocalStorage(tmp_path / "storage"))
    artifact = content_id("pickle", payload)
    sock = keyed.connect(rcvbuf=65536)
    sock.sendall(f"GET /api/v1/artifacts/{artifact}/data HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {keyed.key}\r\n"
                 "Connection: close\r\n\r\n".encode())
    sock.settimeout(30)
    data = b""
    try:
        while chunk := sock.recv(64 * 1024):
            data += chunk
            time.sleep(0.1)
    except OSError as e:
        raise AssertionError(f"cut after {len(data)} bytes: {errno.errorcode.get(e.errno or 0, e)}") from None
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert body == payload


# -- a client's own write, stalled on its way --------------------------------------------------------------------

def test_a_store_write_whose_body_stalls_on_the_way_is_sent_again(start: Callable[..., Keyed]) -> None:
    """A driver's write whose body stops half-way on the network (a proxy passing its head and half its body, then
    nothing) meets the server's 408 at ``--body-timeout``; the HTTP store sends it again (writes are idempotent) and
    it is recorded. Was: 408 was not among the answers it retries, so the write failed with ServerError."""
    keyed = start("--body-timeout", "2")
    proxy = StallingProxy(keyed.port, b"POST /api/v1/store/write ")
    store = HttpStore(proxy.url, keyed.key, retry_window=60)
    try:
        root, batch = one_batch(runs=3)
        store.write(batch)
        assert proxy.stalled == 1
        resolution = store.get_resolution(root)
        assert resolution is not None and resolution.state == "running"
        assert len(store.runs_of_root(root)) == 3
    finally:
        store.close()
        proxy.close()
