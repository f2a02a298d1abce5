"""Log lines that quote others' words, safe on the terminal they are written to (:mod:`sematic_k8s.terminal_safe`).

A log line quotes words the process did not write: a record's names and errors, a request's header (uvicorn's access
log names the client ``X-Forwarded-For`` says), a Kubernetes or Docker engine message, a storage's or a server's error.
:class:`SafeStreamHandler` writes a record with those words (its arguments, a message that is not a string, its
traceback) through :func:`~sematic_k8s.terminal_safe.log_words`: on a terminal every control character and bidi
control as its escape; on any stream, a line break in them as ``\\n``/``\\r``, so that no quoted word begins a line
that reads as the process's own (a pod's log, a file and a pipe keep the rest as written). The message's format string
is the process's own; a traceback keeps its lines (escaped on a terminal).

It is the handler of every log this package and the server write: the last resort (:func:`install`, a process that
configured no handler: the CLI, a worker, a program running a resolver), the driver's, and uvicorn's (the server).
"""

from __future__ import annotations

import copy
import logging
import operator
import sys
from collections.abc import Mapping
from typing import Any

from sematic_k8s.terminal_safe import log_words


class _Quoted:
    """An argument of a log record, shown (``%s``, ``%r``) through :func:`log_words`."""

    __slots__ = ("terminal", "value")

    def __init__(self, value: object, terminal: bool) -> None:
        self.value, self.terminal = value, terminal

    def __str__(self) -> str:
        return log_words(str(self.value), self.terminal)

    def __repr__(self) -> str:
        return log_words(repr(self.value), self.terminal)

    # a number of another type (a Decimal, numpy's) for %d, %x, %f: as it is
    def __int__(self) -> int:
        return int(self.value)  # type: ignore[call-overload]

    def __index__(self) -> int:
        return operator.index(self.value)  # type: ignore[arg-type]

    def __float__(self) -> float:
        return float(self.value)  # type: ignore[arg-type]


def _quoted(value: object, terminal: bool) -> object:
    return value if isinstance(value, (int, float)) else _Quoted(value, terminal)  # numbers: %d, %g take them


def safe_record(record: logging.LogRecord, terminal: bool, formatter: logging.Formatter) -> logging.LogRecord:
    """A copy of ``record`` whose others' words (arguments, a message not a string, a traceback) show as
    :func:`log_words` has them, to be formatted by ``formatter``."""
    safe = copy.copy(record)
    if isinstance(record.args, Mapping):
        safe.args = {k: _quoted(v, terminal) for k, v in record.args.items()}
    elif record.args:
        safe.args = tuple(_quoted(a, terminal) for a in record.args)
    if not isinstance(record.msg, str):  # an exception or an object logged as the message
        safe.msg = _Quoted(record.msg, terminal)
    if record.exc_info and not record.exc_text:
        safe.exc_text = formatter.formatException(record.exc_info)
    if terminal:  # a traceback (and a stack) keeps its lines
        safe.exc_text, safe.stack_info = _lines(safe.exc_text), _lines(record.stack_info)
    return safe


def _lines(text: str | None) -> str | None:
    """``text`` (a traceback) on a terminal: its lines kept, each through :func:`log_words`."""
    return text and "\n".join(log_words(line, True) for line in text.split("\n"))


class SafeStreamHandler(logging.StreamHandler):
    """A :class:`logging.StreamHandler` writing others' words in its records as :func:`safe_record` has them, on a
    terminal or not as its stream is (``stream``: default the current ``sys.stderr`` at each record)."""

    def __init__(self, stream: Any = None) -> None:  # noqa: ANN401 - a text stream, as StreamHandler takes
        super().__init__(stream)
        self._current_stderr = stream is None

    def format(self, record: logging.LogRecord) -> str:
        if self._current_stderr:
            self.stream = sys.stderr
        formatter = self.formatter or logging.Formatter()
        return formatter.format(safe_record(record, _terminal(self.stream), formatter))


def _terminal(stream: Any) -> bool:  # noqa: ANN401 - any stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or closed
        return False


def install() -> None:
    """The last resort (the handler of a record no handler took: :data:`logging.lastResort`, warnings and above on
    ``sys.stderr`` as they are) made a :class:`SafeStreamHandler`."""
    if type(logging.lastResort) is not SafeStreamHandler:
        logging.lastResort = SafeStreamHandler()
        logging.lastResort.setLevel(logging.WARNING)
