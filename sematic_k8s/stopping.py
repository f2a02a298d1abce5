"""A stop that ends the calls under way (:class:`Stop`): a process that stops (a server asked to) sets it, and a read
blocked on a socket it was told of returns at once (a connect under way fails), rather than at that call's deadline
(a Kubernetes API that holds its answers: :func:`sematic_k8s.k8s.client.make_api_client`'s ``stop``); a retry's
pause waiting on it ends too (:func:`sematic_k8s.k8s.client.api_call`'s)."""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref


class Stop(threading.Event):
    """An event (waits that ask it end when it is set, as any event's) whose :meth:`set` also shuts down, from the
    thread that sets it, the sockets of the calls under way it was told of (:meth:`opened`, until :meth:`closed`):
    a read blocked on one returns at once (an end of stream)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()  # one dropped unclosed is not kept alive

    def set(self) -> None:
        with self._lock:  # held while shutting down: a socket told closed (:meth:`closed`, before its close) is not
            super().set()  # shut down after, its descriptor perhaps another file's by then
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):  # closed unsaid (its descriptor -1), or a detached one
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # a TLS socket's own: its raw socket's, as any

    def opened(self, sock: socket.socket) -> bool:
        """``sock`` is a call's, to be shut down when the stop is set; False, untold, when it is set already."""
        with self._lock:
            if self.is_set():
                return False
            self._sockets.add(sock)
            return True

    def closed(self, sock: socket.socket) -> None:
        """``sock`` is to be closed (told before its close): nothing to shut down."""
        with self._lock:
            self._sockets.discard(sock)
