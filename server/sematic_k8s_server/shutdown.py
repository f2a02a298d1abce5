"""A server asked to stop (SIGTERM: a rolling update, a node drain, ``helm upgrade``; Ctrl-C): what never ends by
itself ends, so that uvicorn's graceful shutdown waits only for the requests under way.

uvicorn sets its own SIGTERM and SIGINT handlers while it serves (and puts back the ones it found afterwards);
:func:`on_stop`, called as the app starts (in each ``--workers`` process), puts a handler before them that lets
uvicorn's run, then tells the app once uvicorn has stopped listening: live event streams end cleanly, and their
followers connect again, to another replica (ended before, a follower could connect again to this one, to be cut by
the shutdown), rather than being cut when the graceful shutdown's time is up.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)
LISTENER_WAIT = 1.0  # seconds: the longest wait for uvicorn to stop listening (it looks every 0.1 s)


def on_stop(stopping: Callable[[], None]) -> Callable[[], None]:
    """Call ``stopping()`` on the running event loop once a signal asked the server to stop and it no longer
    listens. A function that takes the handler off again. Does nothing off the main thread (no signal reaches one)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    before: dict[int, Any] = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def handler(sig: int, frame: FrameType | None) -> None:
        previous = before[sig]
        loop.call_soon_threadsafe(lambda: loop.create_task(_when_not_listening(getattr(previous, "__self__", None),
                                                                               stopping)))
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


async def _when_not_listening(uvicorn_server: Any, stopping: Callable[[], None]) -> None:  # noqa: ANN401
    """``stopping()`` once ``uvicorn_server`` (whose handler the signal went to) closed its listeners, or after
    :data:`LISTENER_WAIT` when they cannot be seen."""
    deadline = asyncio.get_running_loop().time() + LISTENER_WAIT
    while asyncio.get_running_loop().time() < deadline:
        listeners = getattr(uvicorn_server, "servers", None)
        if listeners is not None and not any(s.is_serving() for s in listeners):
            break
        await asyncio.sleep(0.02)
    stopping()


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
