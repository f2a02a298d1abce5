"""A server process stopped as Kubernetes stops it (SIGTERM) while clients are mid-request: the request under way is
answered, live event streams end (not cut), the process exits 0 at once and its log says it plainly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import types
import uuid

import httpx

from outages import BalancingProxy, ServerProcess
from sematic_k8s.settings import LOG_LEVEL_ENV
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s.store.sql import SqlStore
from sematic_k8s.store.wire import batch_to_json, dumps
from serving import free_port, wait_for


def a_write() -> tuple[str, bytes]:
    """A resolution and its root run, as the body of ``POST /api/v1/store/write``; the resolution's id."""
    root = uuid.uuid4().hex
    batch = Batch()
    batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:f", state="resolved", created_at=utcnow()))
    batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path="m:f", func_name="f", state="resolved",
                            created_at=utcnow()))
    return root, dumps(batch_to_json(batch))


def test_sigterm_answers_the_request_under_way_ends_streams_and_exits_0(tmp_path) -> None:
    # uvicorn's trace lines say when a request has begun ("ASGI [n] Started scope=..."): the SIGTERM is sent only
    # once the write is under way (a connection still in the listener's backlog, or whose request line is unread,
    # is not a request under way: a busy machine may take a while to accept it)
    server = ServerProcess(tmp_path, env={LOG_LEVEL_ENV: "trace"})
    server.start()
    try:
        ends: list[str] = []

        def follow() -> None:
            try:
                with httpx.stream("GET", f"{server.url}/api/v1/events", timeout=60) as r:
                    for _ in r.iter_lines():
                        pass
                ends.append("end")
            except httpx.HTTPError as e:
                ends.append(f"{type(e).__name__}: {e}")
        followers = [threading.Thread(target=follow, daemon=True) for _ in range(3)]
        for t in followers:
            t.start()
        with socket.create_connection(("127.0.0.1", server.port)) as gone:  # a follower that goes away (a tab closed)
            gone.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
            assert gone.recv(100).startswith(b"HTTP/1.1 200")
        wait_for(lambda: server.log.read_text().count("GET /api/v1/events") == 4, 30, what="the streams")
        root, body = a_write()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:  # a write whose body is on its way
            sock.sendall(f"POST /api/v1/store/write HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                         + body[:10])
            wait_for(lambda: re.search(r"Started scope=.*'path': '/api/v1/store/write'", server.log.read_text()),
                     30, what="the write's request to begin")
            assert "POST /api/v1/store/write" not in server.log.read_text()  # not answered yet: its body is on its way
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "Shutting down" in server.log.read_text(), 10, what="the shutdown")
            sock.sendall(body[10:])
            answer = sock.makefile("rb").readline()
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert server.proc.wait(15) == 0  # well within any grace period, the streams ended
        for t in followers:
            t.join(5)
        assert ends == ["end"] * 3, ends
        store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}", create=False)
        assert store.get_resolution(root) is not None  # the write under way was recorded
        store.close()
        log = server.log.read_text()
        assert "Traceback" not in log and "ERROR" not in log and "Task was destroyed" not in log, log
    finally:
        server.stop()


def test_the_cli_goes_past_a_replica_closing_its_connection_unanswered(tmp_path) -> None:
    """A CLI command through a load balancer whose first replica closes each connection unanswered (a replica that
    stops: it took the connection as it closed its listener): the command's first look at the server (its health)
    goes to the next replica, and the command answers (was: "Error: the sematic-k8s server at ... did not answer
    (RemoteProtocolError: Server disconnected without sending a response.)", exit 1)."""
    closing = socket.create_server(("127.0.0.1", 0))

    def close_each() -> None:
        while True:
            try:
                conn, _ = closing.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()
    threading.Thread(target=close_each, daemon=True).start()
    server = ServerProcess(tmp_path)
    server.start()
    proxy = BalancingProxy(closing.getsockname()[1], server.port)
    try:
        proc = subprocess.run([sys.executable, "-m", "sematic_k8s.cli", "runs", "list"], capture_output=True,
                              text=True, env={**os.environ, "SEMATIC_K8S_SERVER": proxy.url}, timeout=120)
        assert proc.returncode == 0, proc.stderr
    finally:
        proxy.close()
        closing.close()
        server.stop()


def test_a_server_refused_at_start_leaves_its_callers_sigterm_handler(tmp_path) -> None:
    """``server`` run in a process of the caller's (click's CliRunner, a test) and refused before it serves: SIGTERM
    is handled again as the caller had it (the server's own handler, exit 0, is for a process it serves in)."""
    from click.testing import CliRunner

    from sematic_k8s_server.cli import main

    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(main, ["server", "--home", str(tmp_path), "--port", str(free_port()),
                                       "--db-url", "nosuchdb://x"])
    assert result.exit_code == 1 and "cannot open the metadata database nosuchdb://x" in result.output
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_listener_tables_are_read_off_the_event_loop(tmp_path, monkeypatch) -> None:
    """Once its listener closed, a process stopping reads the system's TCP tables until no process listens on its
    socket (``shutdown._when_not_listening``): a read as long as the node has sockets. It is made off the event loop,
    which meanwhile serves the requests under way (was: on it, each read blocking them). The table here is a FIFO
    whose writer writes only once another coroutine of the loop ran while the read waited (was: never, the read
    blocking the loop until the writer gave up)."""
    from sematic_k8s_server import shutdown

    table = tmp_path / "tcp"
    os.mkfifo(table)
    monkeypatch.setattr(shutdown, "TCP_TABLES", (str(table),))
    reading = asyncio.Event()  # set on the loop once the read began
    ran = threading.Event()  # set by a coroutine of the loop while the read waits
    said: list[bool] = []

    def slow_writer(loop: asyncio.AbstractEventLoop) -> None:
        fd = os.open(table, os.O_WRONLY)  # returns once the reader opened the table
        loop.call_soon_threadsafe(reading.set)
        said.append(ran.wait(60))  # the failure's way out: no loop ran, the table written anyway
        os.write(fd, b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout "
                     b"inode\n")  # the heading alone: no socket listens
        os.close(fd)

    async def stopping() -> list[str]:
        order: list[str] = []
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        uvicorn_server = types.SimpleNamespace(servers=[server])  # what it reads of uvicorn.Server
        sockets = shutdown._listening_sockets(uvicorn_server)
        server.close()
        await server.wait_closed()
        writer = threading.Thread(target=slow_writer, args=(asyncio.get_running_loop(),), daemon=True)
        writer.start()

        async def another() -> None:  # a request under way
            await reading.wait()
            order.append("another coroutine ran")
            ran.set()
        other = asyncio.create_task(another())
        await shutdown._when_not_listening(uvicorn_server, sockets, lambda: order.append("stopping"))
        await other
        writer.join(60)
        return order

    assert asyncio.run(stopping()) == ["another coroutine ran", "stopping"]
    assert said == [True], "the loop ran nothing while the table was read"


def test_a_listening_socket_is_found_in_the_tcp_tables_until_it_is_closed() -> None:
    """``_listened_on`` tells a socket listening, in the system's own tables (only lines of its port parsed), and
    not once it is closed."""
    from sematic_k8s_server import shutdown

    async def look() -> list[bool]:
        seen = []
        for host in ("127.0.0.1", "::1"):
            server = await asyncio.start_server(lambda r, w: None, host, 0)
            sockets = shutdown._listening_sockets(types.SimpleNamespace(servers=[server]))
            assert len(sockets) == 1, sockets
            seen.append(shutdown._listened_on(sockets))
            server.close()
            await server.wait_closed()
            seen.append(shutdown._listened_on(sockets))
        return seen

    assert asyncio.run(look()) == [True, False, True, False]
