"""A func container's end, made final: a simulated container that runs a Python function in a thread of this
process cannot be killed as a process is, so at its reported end its threads are cut off from everything they
could still do. A container's threads are the one running its function and every thread those start (Python 3.11
audits no thread's start: :meth:`threading.Thread.start` is wrapped, once, to say whose a new thread is). Once its
:class:`Life` ends, any audited operation on one of them (``open``, ``os.*`` (rename, remove, mkdir, ...),
``socket.*`` (a new socket, connect, sendto), ``http.client.connect``/``send`` (also on a connection kept alive
from before), ``subprocess.Popen``, ``time.sleep``: see :pep:`578`) and a thread's start raise
:class:`ContainerKilled`, which ``except Exception`` does not catch: its storage writes, its HTTP requests (to the
server, to S3, presigned or not) and its outcome never land, as a killed process's would not.

Not cut: what a thread does without an audited operation (memory the test shares with it, a write on a file
opened before its end, a send on a raw socket outside http.client connected before its end, which the product's
HTTP clients do not make: theirs go through http.client).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

_ATTR = "_kube_model_life"  # on a container's threads (threading.Thread objects): its Life
_lock = threading.RLock()  # reentrant: the hook may run on a thread holding it (an audited operation in a block)
_wrapped = False  # threading.Thread.start wrapped
_audited = False  # the audit hook added
_cut: dict[int, threading.Thread] = {}  # thread ident -> the thread, for every running thread of an ended container


class ContainerKilled(BaseException):
    """Raised on a thread of a func container that has ended, at anything it does that a dead process could not."""


class Life:
    """One func container's life: its threads while it runs; ``end()`` cuts them off."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ended = False
        self.threads: list[threading.Thread] = []

    def enter(self) -> None:
        """The calling thread runs this container's function."""
        _wrap_thread_start()
        me = threading.current_thread()
        setattr(me, _ATTR, self)
        with _lock:
            self.threads.append(me)
            if self.ended:
                _cut[me.ident or 0] = me
                _audit()

    def leave(self) -> None:
        """The calling thread no longer runs this container's function (a pool's thread, used again)."""
        me = threading.current_thread()
        with _lock:
            if getattr(me, _ATTR, None) is self:
                delattr(me, _ATTR)
            if _cut.get(me.ident or 0) is me:
                del _cut[me.ident or 0]
            if me in self.threads:
                self.threads.remove(me)

    def end(self) -> None:
        """The container ended (its exit reported): its threads, from now on, can do nothing that lands."""
        with _lock:
            self.ended = True
            for t in self.threads:
                if t.ident is not None and t.is_alive() and getattr(t, _ATTR, None) is self:
                    _cut[t.ident] = t
            if _cut:
                _audit()


def _audit() -> None:
    """The audit hook, added once a thread is cut, not before: a hook is never removed, and it costs every audited
    operation of the process (``id()``, so each ``copy.deepcopy``) a Python call."""
    global _audited
    if not _audited:
        sys.addaudithook(_hook)
        _audited = True


def _wrap_thread_start() -> None:
    global _wrapped
    with _lock:
        if not _wrapped:
            threading.Thread.start = _start  # type: ignore[method-assign]
            _wrapped = True


_thread_start = threading.Thread.start


def _start(self: threading.Thread) -> None:
    """A thread started by a container's thread is the container's; none is started by an ended one."""
    life = getattr(threading.current_thread(), _ATTR, None)
    if life is not None:
        if life.ended:
            raise ContainerKilled(f"container {life.name} ended: a thread's start refused")
        setattr(self, _ATTR, life)
        with _lock:
            life.threads.append(self)
    _thread_start(self)


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _cut:
        return
    ident = threading.get_ident()
    t = _cut.get(ident)
    if t is not None and t is threading.current_thread():
        life = getattr(t, _ATTR, None)
        raise ContainerKilled(f"container {life.name if life else '?'} ended: {event} refused")
    if t is not None:  # that thread ended, its ident used again
        with _lock:
            if _cut.get(ident) is t:
                del _cut[ident]
