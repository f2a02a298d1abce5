"""The server's connections as a client on the network may hold them: uvicorn's HTTP protocol (httptools) with the
bounds it lacks, so that a slow, idle or hostile client holds no connection, no memory and no event stream for long.

uvicorn closes a kept-alive connection idle for 5 s after an answer, and nothing else: a connection that never sends
a request, or sends its headers a byte at a time, stays open for ever; a request's headers are gathered however large
they grow (a few hundred MB of one header line were as many of the server's memory); an answer to a client that
reads nothing (a live-events stream to a stopped laptop: a full TCP window) waits for ever. :class:`BoundedHttp`:

- a request's head (request line and headers) must arrive within ``header_timeout`` seconds of the connection's
  opening or of its previous answer, else the connection is closed (nothing is answered: a client may be sending
  its request as the server closes, and it sends it again on a new connection, as after a keep-alive timeout);
- a head still incomplete after :data:`MAX_HEAD_BYTES` gets 431 and its connection is closed;
- an answer whose client reads none of it for ``send_timeout`` seconds (the server's buffer for it full and not
  draining) has its connection cut.

A request's body has a deadline too, kept by the :class:`~sematic_k8s_server.guard.Guard` (408).
:func:`uvicorn_config` is uvicorn's whole setting for the server, one for ``sematic-k8s server`` (one process or
``--workers N``) and the tests' in-process servers alike.
"""

from __future__ import annotations

import array
import asyncio
import copy
import fcntl
import functools
import socket
import struct
import termios
from dataclasses import dataclass
from typing import Any

import uvicorn
import uvicorn.config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sematic_k8s.log_lines import SafeStreamHandler

MAX_HEAD_BYTES = 64 * 1024  # a request line and headers; browsers send a few KiB, nginx takes 4 x 8 KiB lines
BACKLOG = 4096  # connections the system queues before the server accepts them (a burst of drivers' requests)
WORKER_HEALTHCHECK = 60  # seconds a --workers process may take to answer its parent's ping before it is killed and
# started again: uvicorn's 5 killed processes still starting on a loaded node, over and over (a minute to start)


@dataclass(frozen=True)
class ConnectionLimits:
    """``header_timeout``: seconds for a request's head, from the connection's opening or its previous answer;
    ``send_timeout``: seconds an answer may wait for a client that reads none of it."""

    header_timeout: float = 10.0
    send_timeout: float = 60.0


def protocol(limits: ConnectionLimits) -> Any:  # noqa: ANN401 - what uvicorn.Config takes as ``http``
    """uvicorn's ``http`` setting for :class:`BoundedHttp` with ``limits`` (it pickles: ``--workers`` processes
    get it)."""
    return functools.partial(BoundedHttp, limits=limits)


def uvicorn_config(app: Any, *, host: str, port: int, limits: ConnectionLimits,  # noqa: ANN401 - an ASGI app
                   shutdown_timeout: float, log_level: str = "info", workers: int = 1) -> uvicorn.Config:
    """uvicorn's settings for the server: ``app`` (an app, or with ``workers`` > 1 the import path of its factory)
    on ``host``:``port`` over :class:`BoundedHttp` with ``limits``, requests under way given ``shutdown_timeout``
    seconds once asked to stop."""
    config = uvicorn.Config(app, host=host, port=port, http=protocol(limits), backlog=BACKLOG, log_level=log_level,
                            log_config=log_config(),
                            # typed int, used as asyncio's timeout: a fraction of a second is kept, as the CLI took it
                            timeout_graceful_shutdown=shutdown_timeout,  # type: ignore[arg-type]
                            workers=workers, factory=isinstance(app, str))
    config.timeout_worker_healthcheck = WORKER_HEALTHCHECK  # a setting from uvicorn 0.37 (before: 5 s, fixed)
    return config


def log_config() -> dict[str, Any]:
    """uvicorn's logging (its formatters, streams and levels) with :class:`~sematic_k8s.log_lines.SafeStreamHandler`
    for its handlers: others' words in its lines (the client's address from ``X-Forwarded-For`` in the access log, an
    error quoted) safe on a terminal, and no line break in them forging a line (each ``--workers`` process configures
    it again from this dictionary)."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    for handler in config["handlers"].values():
        handler["class"] = f"{SafeStreamHandler.__module__}.{SafeStreamHandler.__name__}"
    return config


class BoundedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of the module docstring."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._head_timer: asyncio.TimerHandle | None = None  # armed while a request's head is awaited
        self._head_bytes: int | None = None  # bytes received since a head began, while it is incomplete
        self._send_timer: asyncio.TimerHandle | None = None  # armed while the answer's buffer is full
        self._unsent = 0  # the buffer's size when the send timer was armed

    # -- a request's head: in time, and bounded --------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_bytes is None or self.transport.is_closing():
            return
        self._head_bytes += len(data)  # the whole packet: a head that began in it may have less of it
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is None or self.cycle.response_complete:  # no request of this connection is under way
            self._await_head()

    def _await_head(self) -> None:
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self.transport.close)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse_head(self) -> None:
        """431 (unless an answer is under way on the connection: a pipelined request's) and the connection
        closed; what was gathered of the head goes with the connection's parser."""
        if self.cycle is None or self.cycle.response_complete:
            detail = f"request head larger than {MAX_HEAD_BYTES} bytes"
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; "
                                 b"charset=utf-8\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(detail), detail.encode()))
        self.transport.close()

    # -- an answer to a client that reads nothing --------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._unsent = self._unsent_bytes()
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_send_timer()

    def _send_stalled(self) -> None:
        """The send timer's end: cut the connection if its client read nothing since it was armed, else wait
        again (a slow reader reads on)."""
        self._send_timer = None
        unsent = self._unsent_bytes()
        if unsent < self._unsent:
            self._unsent = unsent
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_stalled)
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:  # a reset: a close would leave the system sending the buffer, for minutes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _unsent_bytes(self) -> int:
        """What the connection has yet to send: the transport's buffer and, where the system says (Linux), its
        own send queue, which a slow reader drains long before the transport's buffer shrinks."""
        sock = self.transport.get_extra_info("socket")
        queued = array.array("i", [0])
        try:
            fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, queued)  # SIOCOUTQ: not yet acknowledged by the client
        except (AttributeError, OSError):
            queued[0] = 0
        return self.transport.get_write_buffer_size() + queued[0]

    def _cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_send_timer()
        super().connection_lost(exc)
