"""Live-event streams per credential, over raw sockets against a real ``sematic-k8s server`` process: one API key
holds at most ``--max-streams-per-key`` streams open (one more gets 429 and ``Retry-After``), another key is not
held back by it, and a slot comes back when a stream's client goes, whether it closes, resets or is killed. Before
the bound, one key opened as many streams as it asked for (each a socket and a queue of up to 10,000 events)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serving import create_api_key, server_process, wait_for

LIMIT = 3
CONNECTED = b": connected\n\n"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Served:
    port: int
    db_url: str
    home: Path

    def key(self, name: str) -> str:
        return create_api_key(self.db_url, self.home, name)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start a server process with these flags; stopped after the test."""
    db_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    with contextlib.ExitStack() as started:
        def start_with(*args: str) -> Served:
            _, url = started.enter_context(server_process(tmp_path, "--db-url", db_url, *args))
            return Served(int(url.rsplit(":", 1)[1]), db_url, tmp_path)

        yield start_with


def request_stream(port: int, key: str | None) -> tuple[socket.socket, Answer]:
    """``GET /api/v1/events`` on a new connection: the socket (its stream open on a 200) and the answer so far (a
    200's head and first comment, or a refusal's whole body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    key_header = f"X-API-Key: {key}\r\n" if key else ""
    sock.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n{key_header}Accept: text/event-stream\r\n\r\n"
                 .encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += _recv(sock)
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    status = int(lines[0].split()[1])
    if status == 200:
        while CONNECTED not in rest:
            rest += _recv(sock)
    else:
        while len(rest) < int(headers["content-length"]):
            rest += _recv(sock)
    return sock, Answer(status, headers, rest)


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    assert chunk, "the server closed the connection before its answer"
    return chunk


def open_stream(port: int, key: str | None) -> socket.socket:
    """A stream opened with ``key`` (asserted)."""
    sock, answer = request_stream(port, key)
    assert answer.status == 200, answer
    return sock


def refused(port: int, key: str | None) -> Answer:
    """The answer to a stream asked for with ``key``, refused (asserted)."""
    sock, answer = request_stream(port, key)
    sock.close()
    assert answer.status == 429, answer
    return answer


def opened_once_freed(port: int, key: str | None) -> socket.socket:
    """A stream opened with ``key`` as soon as a slot of the key is free again (a 429 until then)."""
    opened: list[socket.socket] = []

    def attempt() -> bool:
        sock, answer = request_stream(port, key)
        if answer.status == 200:
            opened.append(sock)
            return True
        sock.close()
        assert answer.status == 429, answer
        return False

    wait_for(attempt, 30, what="a stream slot given back")
    return opened[0]


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a reset (RST), as a crashed proxy or a client's network stack may."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


FOLLOWER = """
import socket, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.sendall(f"GET /api/v1/events HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nX-API-Key: {sys.argv[2]}\\r\\n\\r\\n".encode())
data = b""
while b": connected" not in data:
    data += sock.recv(65536)
print(data.split(b" ")[1].decode(), flush=True)
sys.stdin.read()
"""  # a follower in its own process: open a stream, say its status, hold it until killed


def test_one_key_holds_at_most_its_streams(start: Callable[..., Served]) -> None:
    served = start("--max-streams-per-key", str(LIMIT))
    key, other = served.key("laptop"), served.key("ci")
    streams = [open_stream(served.port, key) for _ in range(LIMIT)]

    answer = refused(served.port, key)  # one more: refused, in one line that names the bound and what to do
    detail = json.loads(answer.body)["detail"]
    assert f"{LIMIT} live-event streams are already open with API key 'laptop'" in detail
    assert "--max-streams-per-key" in detail and "close some" in detail and "\n" not in detail
    assert int(answer.headers["retry-after"]) > 0

    another = open_stream(served.port, other)  # another key is not held back by this one's
    streams[0].close()  # a follower that ends: its slot comes back
    streams[0] = opened_once_freed(served.port, key)
    refused(served.port, key)
    for sock in [*streams, another]:
        sock.close()


def test_a_stream_whose_client_is_killed_or_reset_gives_its_slot_back(start: Callable[..., Served]) -> None:
    served = start("--max-streams-per-key", str(LIMIT))
    key = served.key("laptop")
    follower = subprocess.Popen([sys.executable, "-c", FOLLOWER, str(served.port), key], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert follower.stdout is not None and follower.stdout.readline().strip() == "200"
        kept, cut = open_stream(served.port, key), open_stream(served.port, key)
        refused(served.port, key)

        follower.send_signal(signal.SIGKILL)  # its socket closed by the system, the process never told
        follower.wait(10)
        reset(cut)
        again = [opened_once_freed(served.port, key), opened_once_freed(served.port, key)]
        refused(served.port, key)  # both slots, and no more, came back
    finally:
        follower.kill()
        follower.wait(10)
    for sock in [kept, *again]:
        sock.close()


def test_local_mode_bounds_the_streams_of_this_machine(start: Callable[..., Served]) -> None:
    """Local mode has no keys: every client of this machine is one principal, and holds at most the bound."""
    served = start("--local", "--max-streams-per-key", str(LIMIT))
    streams = [open_stream(served.port, None) for _ in range(LIMIT)]
    detail = json.loads(refused(served.port, None).body)["detail"]
    assert "from this machine (local mode)" in detail and "--max-streams-per-key" in detail
    streams.pop().close()
    streams.append(opened_once_freed(served.port, None))
    for sock in streams:
        sock.close()


def test_streams_whose_clients_go_at_once_give_their_slots_back(start: Callable[..., Served]) -> None:
    """Clients that ask for a stream and reset their connection at once, before or as it opens (many: the server
    meets the reset at any point, down to before the stream's first byte), leave no slot held."""
    served = start("--max-streams-per-key", str(LIMIT))
    key = served.key("laptop")
    request = (f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n\r\n").encode()
    for _ in range(60):
        sock = socket.create_connection(("127.0.0.1", served.port))
        sock.sendall(request)
        reset(sock)
    streams = [opened_once_freed(served.port, key) for _ in range(LIMIT)]
    refused(served.port, key)
    for sock in streams:
        sock.close()
