"""PostgreSQL's refusal of a new connection told by its SQLSTATE, whatever the language of its words.

libpq keeps a refused connection's SQLSTATE to itself: psycopg's error for it has none (``sqlstate`` and
``diag.sqlstate`` None: a plain ``OperationalError``), only the server's words, in its ``lc_messages`` language; a
connection's ``options='-c lc_messages=C'`` does not help: the server applies it after its refusals for want of a
connection slot, of a database or at its start, and refuses it to a role that is no superuser. :func:`learn` reads
the SQLSTATE from an attempt of the same connection traced by libpq (``PQtrace``: the ``C`` field of the server's
ErrorResponse, in no language), and keeps it under the refusal's words when the attempt was refused in the same
words; :func:`sqlstate` tells it from then on, without connecting, for any refusal in those words (they name the
server's host and port, so a server's refusals are learned apart).
"""

from __future__ import annotations

import logging
import re
import selectors
import tempfile
import threading
import time
from collections import OrderedDict
from typing import Any

KEPT = 64  # refusals' words whose SQLSTATE is kept (a few per server: its host, port, user and database in them)
AGAIN_AFTER = 5.0  # seconds before a refusal an attempt learned nothing of (accepted, refused otherwise) is tried again
ATTEMPT_TIMEOUT = 3.0  # seconds a traced attempt may take (a server that answers refuses within milliseconds)
# the server's first ErrorResponse in libpq's trace: its fields S (severity, in the server's language), V (severity,
# in none; PostgreSQL 9.6 and later) then C (the SQLSTATE), in the order the server sends them
_TRACED_ERROR = re.compile(r'^B\t\S+\tErrorResponse\t S "[^"]*"(?: V "[^"]*")? C "([0-9A-Z]{5})"', re.M)

log = logging.getLogger("sematic_k8s")
_LOCK = threading.Lock()
_LEARNED: OrderedDict[bytes, str] = OrderedDict()  # a refusal's words (libpq's) -> its SQLSTATE
_UNLEARNED: OrderedDict[bytes, float] = OrderedDict()  # a refusal's words -> when to try learning it again
_TRYING: set[bytes] = set()  # refusals an attempt is under way for


def _refused(e: BaseException) -> tuple[bytes, Any] | None:
    """A connection refused before it was made, without a SQLSTATE (psycopg's ``OperationalError`` at connect, its
    ``pgconn`` the failed attempt's, never connected): its words (libpq's) and that ``pgconn``; else None."""
    orig = getattr(e, "orig", None) or e
    pgconn = getattr(orig, "pgconn", None)
    if pgconn is None or getattr(orig, "sqlstate", "") is not None:
        return None
    if getattr(pgconn, "backend_pid", None):  # a session the server had started: lost, not refused
        return None
    words = getattr(pgconn, "error_message", b"")
    return (words, pgconn) if words else None


def sqlstate(e: BaseException) -> str | None:
    """``e``'s SQLSTATE: its own, or a refused connection's as :func:`learn` learned it; None when neither."""
    orig = getattr(e, "orig", None) or e
    own = getattr(orig, "sqlstate", None)
    if own is not None:
        return str(own)
    refused = _refused(e)
    if refused is None:
        return None
    with _LOCK:
        return _LEARNED.get(refused[0])


def learn(e: BaseException) -> None:
    """For a connection refused without a SQLSTATE (:func:`_refused`) in words not learned yet: an attempt of the same
    connection, traced, reads the SQLSTATE the server refuses it with now, kept for those words when it is refused in
    the same ones (up to :data:`ATTEMPT_TIMEOUT` seconds; at most once per :data:`AGAIN_AFTER` seconds for words it
    learned nothing of, and by one caller at a time: the others learn nothing meanwhile)."""
    refused = _refused(e)
    if refused is None:
        return
    words, pgconn = refused
    with _LOCK:
        if words in _LEARNED or words in _TRYING or time.monotonic() < _UNLEARNED.get(words, 0.0):
            return
        _TRYING.add(words)
    said: tuple[bytes, str | None] = (b"", None)
    try:
        said = _traced_attempt(_conninfo(pgconn))
    except Exception:  # noqa: BLE001 - learning is a second opinion: it never replaces the refusal it is about
        log.debug("a traced attempt of a refused connection learned nothing", exc_info=False)
    finally:
        with _LOCK:
            _TRYING.discard(words)
            if said[0] == words and said[1] is not None:
                _keep(_LEARNED, words, said[1])
                _UNLEARNED.pop(words, None)
            else:
                _keep(_UNLEARNED, words, time.monotonic() + AGAIN_AFTER)


def _keep(kept: OrderedDict[bytes, Any], words: bytes, value: Any) -> None:
    kept[words] = value
    kept.move_to_end(words)
    while len(kept) > KEPT:
        kept.popitem(last=False)


def _conninfo(pgconn: Any) -> bytes:
    """The connection string of ``pgconn``'s attempt (libpq's options as it used them: its password too), in libpq's
    bytes (a password from $PGPASSWORD or a .pgpass file need not be UTF-8), each value quoted as libpq reads it."""

    def quoted(value: bytes) -> bytes:
        return b"'" + value.replace(b"\\", b"\\\\").replace(b"'", b"\\'") + b"'"

    return b" ".join(o.keyword + b"=" + quoted(o.val) for o in pgconn.info if o.val is not None)


def _traced_attempt(conninfo: bytes) -> tuple[bytes, str | None]:
    """A connection to ``conninfo`` attempted with libpq's trace on, then closed: libpq's words of its refusal (empty
    when it was made, or took longer than :data:`ATTEMPT_TIMEOUT`) and the SQLSTATE of the server's error (None when
    the server sent none). The trace (which holds a password message, if one is sent) is an unnamed temporary file,
    read and gone; libpq's stream on it is flushed before the file is closed, and never written again."""
    import psycopg
    from psycopg import pq

    deadline = time.monotonic() + ATTEMPT_TIMEOUT
    with tempfile.TemporaryFile() as trace:
        pgconn = pq.PGconn.connect_start(conninfo)
        try:
            pgconn.trace(trace.fileno())
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            polled = pq.PollingStatus.WRITING
            while polled in (pq.PollingStatus.READING, pq.PollingStatus.WRITING) and pgconn.status != pq.ConnStatus.BAD:
                left = deadline - time.monotonic()
                if left <= 0 or not _ready(pgconn.socket, polled == pq.PollingStatus.READING, left):
                    return b"", None
                polled = pq.PollingStatus(pgconn.connect_poll())
            words = b"" if polled == pq.PollingStatus.OK else pgconn.error_message
        except psycopg.Error:  # no trace on this platform, no socket: nothing learned
            return b"", None
        finally:
            pgconn.untrace()
            pgconn.finish()
        trace.seek(0)
        found = _TRACED_ERROR.search(trace.read().decode("utf-8", "replace"))
    return words, found.group(1) if found else None


def _ready(socket: int, reading: bool, timeout: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(socket, selectors.EVENT_READ if reading else selectors.EVENT_WRITE)
        return bool(selector.select(timeout))
