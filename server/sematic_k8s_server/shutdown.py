"""A server asked to stop (SIGTERM: a rolling update, a node drain, ``helm upgrade``; Ctrl-C): what never ends by
itself ends, so that uvicorn's graceful shutdown waits only for the requests under way.

uvicorn sets its own SIGTERM and SIGINT handlers while it serves (and puts back the ones it found afterwards);
:func:`on_stop`, called as the app starts (in each ``--workers`` process), puts a handler before them that lets
uvicorn's run, then tells the app once no process listens on the server's socket any more: live event streams end
cleanly, and their followers connect again, to another replica, rather than being cut when the graceful shutdown's
time is up. Ended before, a follower could connect again to this server: to this process (ended at the signal), or
under ``--workers N`` to another process sharing the socket that had not closed it yet, which took the connection
and then cut it unanswered (or the system reset it) as it shut down in turn.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import threading
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)
LISTENER_WAIT = 2.0  # seconds: the longest wait for the server's socket to be closed (uvicorn looks every 0.1 s)
TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")  # Linux: the sockets of this network namespace
TCP_LISTEN = "0A"  # a listening socket's state in them


def on_stop(stopping: Callable[[], None]) -> Callable[[], None]:
    """Call ``stopping()`` on the running event loop once a signal asked the server to stop and it no longer
    listens. A function that takes the handler off again. Does nothing off the main thread (no signal reaches one)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    before: dict[int, Any] = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def handler(sig: int, frame: FrameType | None) -> None:
        previous = before[sig]
        uvicorn_server = getattr(previous, "__self__", None)
        sockets = _listening_sockets(uvicorn_server)  # before uvicorn closes them
        loop.call_soon_threadsafe(lambda: loop.create_task(_when_not_listening(uvicorn_server, sockets, stopping)))
        if callable(previous):
            previous(sig, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    for sig in SIGNALS:
        signal.signal(sig, handler)

    def off() -> None:
        for sig, previous in before.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)
    return off


async def _when_not_listening(uvicorn_server: Any, sockets: Mapping[int, str],  # noqa: ANN401
                              stopping: Callable[[], None]) -> None:
    """``stopping()`` once ``uvicorn_server`` (whose handler the signal went to) closed its listeners and no process
    listens on their ``sockets`` any more (the other ``--workers`` processes and their parent closed theirs too),
    or after :data:`LISTENER_WAIT` (listeners that cannot be seen; one process of several stopped alone)."""
    deadline = asyncio.get_running_loop().time() + LISTENER_WAIT
    while asyncio.get_running_loop().time() < deadline:
        listeners = getattr(uvicorn_server, "servers", None)
        if listeners is not None and not any(s.is_serving() for s in listeners) and \
                not await asyncio.to_thread(_listened_on, sockets):  # off the loop: it serves the requests under way
            break
        await asyncio.sleep(0.02)
    stopping()


def _listening_sockets(uvicorn_server: Any) -> dict[int, str]:  # noqa: ANN401 - uvicorn.Server
    """``uvicorn_server``'s listening TCP sockets (one socket, shared by ``--workers`` processes): inode number ->
    its local port as :data:`TCP_TABLES` write it (``:1F90 ``)."""
    listeners = getattr(uvicorn_server, "servers", None) or []
    return {os.fstat(sock.fileno()).st_ino: f":{sock.getsockname()[1]:04X} "
            for server in listeners for sock in server.sockets or ()
            if sock.fileno() >= 0 and sock.family in (socket.AF_INET, socket.AF_INET6)}


def _listened_on(sockets: Mapping[int, str]) -> bool:
    """Whether any of ``sockets`` (inode number -> local port, :func:`_listening_sockets`) still listens, in any
    process: it does until the last process holding it closes it. Where the system does not tell (no ``/proc``), no.
    Reads tables as long as the node has sockets (its network namespace's): run it off the event loop; only the
    lines naming one of their ports are parsed."""
    if not sockets:
        return False
    ports = frozenset(sockets.values())
    for table in TCP_TABLES:
        try:
            with open(table) as lines:
                next(lines, None)  # the heading
                for line in lines:
                    if not any(port in line for port in ports):  # another port's socket
                        continue
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == TCP_LISTEN and int(fields[9]) in sockets:
                        return True
        except OSError:
            continue
    return False


def exit_on_sigterm() -> Any:  # noqa: ANN401 - a signal handler
    """SIGTERM makes the process exit 0 (it was asked to stop, and it did), rather than die of the signal (exit 143
    in Kubernetes' words, an error): before the server serves, at once; while it serves, uvicorn's handler shuts it
    down gracefully and then raises the signal again, which lands here. The handler it replaces."""
    def handler(sig: int, frame: FrameType | None) -> None:
        raise SystemExit(0)
    return signal.signal(signal.SIGTERM, handler)


def run_processes(config: Any) -> None:  # noqa: ANN401 - uvicorn.Config, imported lazily
    """uvicorn's ``--workers`` run of ``config`` (its app: the import path of the app's factory), but the parent
    process stops listening as soon as a signal asks it to stop. (uvicorn's parent keeps the listening socket open
    until its processes have exited: meanwhile the system goes on taking connections that no process will answer,
    then resets them.) Needs uvicorn 0.30 or newer, the floor pyproject.toml sets: the process manager's
    ``handle_term``/``handle_int`` extended here came with it (0.29's manager never calls them)."""
    from uvicorn.supervisors import Multiprocess

    class Processes(Multiprocess):
        def handle_term(self) -> None:
            self.stop_listening()
            super().handle_term()

        def handle_int(self) -> None:
            self.stop_listening()
            super().handle_int()

        def stop_listening(self) -> None:
            for sock in self.sockets:  # the processes close their own copies as they shut down
                sock.close()

    sockets = [config.bind_socket()]
    if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn before its processes ran their own servers
        from uvicorn import Server

        Processes(config, target=Server(config).run, sockets=sockets).run()  # type: ignore[call-arg]
        return
    Processes(config, sockets=sockets).run()
