"""Per-run capture of stdout and stderr for funcs executing in this process."""

from __future__ import annotations

import contextvars
import io
import sys
import threading
from typing import Any, TextIO

_buffer: contextvars.ContextVar[io.StringIO | None] = contextvars.ContextVar("sematic_k8s_log", default=None)
_lock = threading.Lock()
_installed = 0
_originals: tuple[TextIO, TextIO] | None = None


class _Tee(io.TextIOBase):
    """Writes to the original stream and, inside a run, to that run's buffer."""

    def __init__(self, original: TextIO) -> None:
        self.original = original

    def write(self, s: str) -> int:
        buf = _buffer.get()
        if buf is not None:
            buf.write(s)
        return self.original.write(s)

    def flush(self) -> None:
        self.original.flush()

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


def start() -> tuple[io.StringIO, contextvars.Token]:
    """Begin capturing for the current (run's) context."""
    buf = io.StringIO()
    return buf, _buffer.set(buf)


def stop(token: contextvars.Token) -> None:
    _buffer.reset(token)
