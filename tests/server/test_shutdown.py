"""A server process stopped as Kubernetes stops it (SIGTERM) while clients are mid-request: the request under way is
answered, live event streams end (not cut), the process exits 0 at once and its log says it plainly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
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
