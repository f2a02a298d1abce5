"""Per-run capture of stdout and stderr for funcs executing in this process.

Inside a run, what a func writes reaches the process's own stream a whole line at a time (a partial line is held
until its end, a flush, or the run's end): funcs printing on several threads at once (``max_parallelism``) do not
cut into each other's lines, as ``print``'s two writes (the text, then its newline) otherwise let them."""

from __future__ import annotations

import contextvars
import io
import sys
import threading
from typing import Any, TextIO


class Capture(io.StringIO):
    """One run's captured output, and the partial line each of the process's streams holds for it."""

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[_Tee, str] = {}


_buffer: contextvars.ContextVar[Capture | None] = contextvars.ContextVar("sematic_k8s_log", default=None)
_lock = threading.Lock()
_installed = 0
_originals: tuple[TextIO, TextIO] | None = None


class _Tee(io.TextIOBase):
    """Writes to the original stream and, inside a run, to that run's buffer."""

    def __init__(self, original: TextIO) -> None:
        self.original = original

    def write(self, s: str) -> int:
        buf = _buffer.get()
        if buf is None:
            return self.original.write(s)
        buf.write(s)
        text = buf.held.pop(self, "") + s
        end = max(text.rfind("\n"), text.rfind("\r")) + 1  # a progress bar's "\r" ends what it shows too
        if end < len(text):
            buf.held[self] = text[end:]
        if end:
            self.original.write(text[:end])
        return len(s)

    def flush(self) -> None:
        buf = _buffer.get()
        if buf is not None:
            self.release(buf)
        self.original.flush()

    def release(self, buf: Capture) -> None:
        """Write the partial line held for ``buf``'s run."""
        text = buf.held.pop(self, "")
        if text:
            self.original.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


def install() -> None:
    """Route sys.stdout/sys.stderr through the tee (reference-counted)."""
    global _installed, _originals
    with _lock:
        if _installed == 0:
            _originals = (sys.stdout, sys.stderr)
            sys.stdout, sys.stderr = _Tee(sys.stdout), _Tee(sys.stderr)
        _installed += 1


def uninstall() -> None:
    global _installed
    with _lock:
        _installed -= 1
        if _installed == 0 and _originals is not None:
            if isinstance(sys.stdout, _Tee):
                sys.stdout = _originals[0]
            if isinstance(sys.stderr, _Tee):
                sys.stderr = _originals[1]


def start() -> tuple[Capture, contextvars.Token]:
    """Begin capturing for the current (run's) context."""
    buf = Capture()
    return buf, _buffer.set(buf)


def stop(token: contextvars.Token) -> None:
    """End the run's capture: a partial line it left is written out."""
    buf = _buffer.get()
    _buffer.reset(token)
    if buf is not None:
        for tee in list(buf.held):
            tee.release(buf)
