"""The metadata database failing under requests, in one place: how the server's log says it and the words a client is
answered, whoever met it (the credential check, :mod:`~sematic_k8s_server.auth`; a route, through
:mod:`~sematic_k8s_server.problems`).

- An **outage** (PostgreSQL gives no connection: it is down, or has none to spare; or it ended the request's
  session) is said once in the database's words, with what met it first, until the engine gets a connection again
  (its ``engine_connect``: any request's, the sweeper's), then once "the metadata database answers again", and
  what waits for that is told (:meth:`Failures.on_back`: the server judges no silence for the heartbeat timeout
  from then, as from its start). With a key or without one (local mode) alike.
- The server's own **pool used up** (SQLAlchemy's ``TimeoutError``: every connection of its
  $SEMATIC_K8S_DB_POOL_SIZE busy with slower requests past $SEMATIC_K8S_DB_POOL_TIMEOUT) is no outage of the
  database: a 503 in its words (:func:`no_connection_words`), said once until a connection is had with one to spare.
- A query **canceled at the database's statement_timeout** (SQLSTATE 57014 raised where PostgreSQL raises its
  statement timeout's: :func:`at_statement_timeout`) is no outage: the request asks for more than its operator's limit
  allows, and will again. It is said once per route, with the limit (:func:`statement_timeout`).

The server tells them apart by SQLSTATE, class and error fields, never by the database's words: those are in its
``lc_messages`` language. A refused connection's SQLSTATE, which libpq keeps to itself, is learned from a traced
attempt of the same connection (:mod:`~sematic_k8s.store.pgrefusals`, by :meth:`Failures.failed`, which every
failure meets first, off the event loop): "no connection to spare" is its 53300 (:data:`TOO_MANY_CONNECTIONS`), "takes
no connections now" its 57P03 (:data:`CANNOT_CONNECT_NOW`: starting up, shutting down, recovering), still an outage.
- Any other failure is said once per request, as it is met.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy import event

from sematic_k8s import settings
from sematic_k8s.error_records import one_line
from sematic_k8s.store import pgrefusals

log = logging.getLogger("sematic_k8s_server")
# too_many_connections: PostgreSQL's refusal of a new connection when its max_connections is reached, or all but the
# slots it reserves (superuser_reserved_connections), or a role's or database's CONNECTION LIMIT
TOO_MANY_CONNECTIONS = "53300"
CANNOT_CONNECT_NOW = "57P03"  # cannot_connect_now: PostgreSQL starting up, shutting down, in recovery (no hot standby)
NOT_TAKING_CONNECTIONS = ("the metadata database takes no connections now: it is starting up, shutting down or "
                          "recovering (a restart or a failover under way)")
QUERY_CANCELED = "57014"  # query_canceled: by statement_timeout, or by a cancel request (pg_cancel_backend)
# a session ended by the server (admin_shutdown, crash_shutdown, cannot_connect_now), besides class 08 (connection)
ENDED_SESSION = frozenset({"57P01", "57P02", "57P03"})


def _orig(e: BaseException) -> BaseException:
    return getattr(e, "orig", None) or e


def words(e: BaseException) -> str:
    """The database's own words for ``e`` on one line (for the log: they may name its host, port and user)."""
    orig = _orig(e)
    return f"{type(orig).__name__}: {one_line(str(orig))}"


def pool_used_up(e: BaseException) -> bool:
    """The server's own pool had no connection for the request in time (every one busy with other requests)."""
    return isinstance(_orig(e), sa.exc.TimeoutError)


def no_connection_to_spare(e: BaseException) -> bool:
    """No connection for the request: the database has none to spare (its refusal's SQLSTATE, as learned when it
    was :meth:`Failures.failed`), or the server's pool (:func:`pool_used_up`)."""
    return pool_used_up(e) or pgrefusals.sqlstate(e) == TOO_MANY_CONNECTIONS


def not_taking_connections(e: BaseException) -> bool:
    """The database refused the connection as it takes none now (:data:`CANNOT_CONNECT_NOW`, as learned when it was
    :meth:`Failures.failed`)."""
    return pgrefusals.sqlstate(e) == CANNOT_CONNECT_NOW


def no_connection_words(e: BaseException) -> str:
    """What a client is told of a connection refused for lack of one to spare (no host or port): the database's, or
    the server's own pool's (its size is $SEMATIC_K8S_DB_POOL_SIZE: this server's setting)."""
    if pool_used_up(e):
        return (f"the server's {settings.db_pool_size()} database connections are all in use by slower requests: "
                f"tried again after Retry-After; raise ${settings.DB_POOL_SIZE_ENV} (the server's pool size) if this "
                "lasts")
    return ("the metadata database has no connection to spare (its max_connections, or a connection limit, is reached "
            f"by its clients): {type(e).__name__}")


def told(e: BaseException, engine: sa.Engine | None = None) -> str:
    """The words a client is told, and a record any key reads may keep, of the metadata database failing with ``e``:
    never its own (:func:`words`: for the log only). No connection to spare: :func:`no_connection_words`; a query
    canceled at its statement_timeout (told from a cancel request as :func:`at_statement_timeout` does, by
    ``engine``'s database): said so; a connection refused as the database takes none now:
    :data:`NOT_TAKING_CONNECTIONS`; anything else: "the metadata database is unavailable", with its kind (the error's
    type name). A refused connection's SQLSTATE is learned first (:func:`.pgrefusals.learn`: blocking, as it may
    connect)."""
    pgrefusals.learn(e)
    if no_connection_to_spare(e):
        return no_connection_words(_orig(e))
    if at_statement_timeout(e, engine):
        return "the metadata database canceled its query at its statement_timeout"
    if not_taking_connections(e):
        return NOT_TAKING_CONNECTIONS
    return f"the metadata database is unavailable ({type(_orig(e)).__name__}; the server's log has its words)"


def is_outage(e: BaseException) -> bool:
    """PostgreSQL's failures that are no request's own: no connection had (psycopg gives those no SQLSTATE), a
    connection's (class 08), the session ended by the server. SQLite's (no SQLSTATE at all) are not."""
    orig = _orig(e)
    if not hasattr(orig, "sqlstate"):
        return False
    state = orig.sqlstate
    return state is None or state.startswith("08") or state in ENDED_SESSION


def canceled(e: BaseException) -> bool:
    """A query PostgreSQL canceled (SQLSTATE 57014): at its statement_timeout, or by a cancel request."""
    return getattr(_orig(e), "sqlstate", None) == QUERY_CANCELED


def at_statement_timeout(e: BaseException, engine: sa.Engine | None = None) -> bool:
    """A query PostgreSQL canceled at its ``statement_timeout``: SQLSTATE 57014, which a cancel request
    (``pg_cancel_backend``) shares, raised at the place in PostgreSQL's source (its file and line, error fields in no
    language) where ``engine``'s database raises its statement timeout's (:func:`statement_timeout` learns it). Any
    57014 while that place is not known (no ``engine``; not asked yet, or asked by another request now)."""
    if not canceled(e):
        return False
    with _OF_LOCK:
        origin = _TIMEOUT_AT.get(engine) if engine is not None else None
    return origin is None or _origin(_orig(e)) == origin


def _origin(error: object) -> tuple[str, str] | None:
    """Where in PostgreSQL's source ``error`` was raised (its ``F`` and ``L`` fields); None when not said."""
    diag = getattr(error, "diag", None)
    place = (getattr(diag, "source_file", None), getattr(diag, "source_line", None))
    return (place[0], place[1]) if place[0] and place[1] else None


def _timeout_origin(conn: sa.Connection) -> tuple[str, str] | None:
    """Where the database raises its statement timeout's 57014: one caused on ``conn`` (1 ms, for its transaction,
    rolled back); None when none came."""
    try:
        conn.exec_driver_sql("SET LOCAL statement_timeout = 1")
        conn.exec_driver_sql("SELECT pg_sleep(1)")
    except sa.exc.DBAPIError as e:
        return _origin(e.orig) if canceled(e) else None
    finally:
        conn.rollback()
    return None


class Failures:
    """What the server's log has said of the failures of ``engine``'s database (see the module docstring): one for an
    engine (:func:`of`), shared by the server's credential check and its error handlers."""

    def __init__(self, engine: sa.Engine) -> None:  # not kept: the engine keeps it (:func:`of`)
        self._lock = threading.Lock()
        self._failing: str | None = None  # the outage's words, once said, until a connection is had again
        self._used_up = False  # the pool's being used up was said, until a connection is had with one to spare
        self._timed_out: set[str] = set()  # the routes whose statement timeout was said
        self._back: list[Callable[[], None]] = []  # told when the database answers again after an outage
        event.listen(engine, "engine_connect", self._connected)

    def on_back(self, tell: Callable[[], None]) -> None:
        """Have ``tell()`` called each time the database answers again after an outage (on the connection that finds
        it back, before its first statement)."""
        self._back.append(tell)

    def failed(self, e: BaseException, what: str) -> None:
        """Say that ``what`` (``cannot check credentials``, ``GET /api/v1/...``) met ``e``: an outage once, until the
        database answers again; anything else each time. A refused connection's SQLSTATE is learned first (blocking:
        called off the event loop), for :func:`told` and :func:`no_connection_to_spare`."""
        pgrefusals.learn(e)
        said = words(e)
        if pool_used_up(e):
            with self._lock:
                if self._used_up:
                    return
                self._used_up = True
            log.warning("%s: %s (said once: requests meeting it are answered 503 until one is free)", what,
                        no_connection_words(e))
            return
        if not is_outage(e):
            log.warning("%s: the metadata database failed: %s", what, said)
            return
        with self._lock:
            if said == self._failing:
                return
            self._failing = said
        log.warning("%s: the metadata database failed: %s (said once: requests meeting it are answered 503 until it "
                    "answers again)", what, said)

    def _connected(self, conn: sa.Connection) -> None:
        if self._used_up and _spare(conn.engine.pool):
            with self._lock:
                was, self._used_up = self._used_up, False
            if was:
                log.warning("the server's database connections are no longer all in use")
        if self._failing is None:  # the common case, without the lock
            return
        with self._lock:
            if self._failing is None:
                return
            self._failing = None
        log.warning("the metadata database answers again")
        for tell in self._back:
            tell()

    def timed_out(self, route: str, limit: str) -> None:
        """Say once for ``route`` that its query was canceled at the database's statement_timeout (``limit``)."""
        with self._lock:
            if route in self._timed_out:
                return
            self._timed_out.add(route)
        log.warning("%s: the metadata database canceled its query at its statement_timeout (%s), answered 504 (said "
                    "once per route): raise it for the server's role (ALTER ROLE ... SET statement_timeout), or ask "
                    "for less", route, limit)


def _spare(pool: sa.Pool) -> bool:
    """Whether ``pool`` has a connection to spare now, besides the one just had."""
    if not isinstance(pool, sa.QueuePool):
        return True
    return pool.checkedout() < pool.size() + max(0, getattr(pool, "_max_overflow", 0))  # its own: no API


def statement_timeout(engine: sa.Engine) -> str | None:
    """The database's statement_timeout for ``engine``'s sessions (set on its role or database), as PostgreSQL shows
    it ("500ms", "2s"); None when it cannot be asked. Asked once per :data:`SETTING_KEPT` seconds for an engine (what
    it answered, or that it could not): a burst of queries canceled at it (under a pool used up, each would wait for a
    connection to ask) asks once. Single-flight: while one request asks, the others tell what was asked before, or
    None, at once (was: each one of a burst that came before the first answer asked on a connection of its own). The
    first ask also learns where the database raises its statement timeout's error (:func:`at_statement_timeout`)."""
    now = time.monotonic()
    with _OF_LOCK:
        kept = _SETTINGS.get(engine)
        if kept is not None and now - kept[0] < SETTING_KEPT:
            return kept[1]
        if engine in _ASKING:  # another request asks it now
            return kept[1] if kept is not None else None
        _ASKING.add(engine)
    limit: str | None = None
    try:
        with engine.connect() as conn:
            limit = str(conn.exec_driver_sql("SELECT current_setting('statement_timeout')").scalar())
            if engine not in _TIMEOUT_AT:
                origin = _timeout_origin(conn)
                if origin is not None:
                    with _OF_LOCK:
                        _TIMEOUT_AT[engine] = origin
    except sa.exc.SQLAlchemyError:
        pass
    finally:
        with _OF_LOCK:
            _SETTINGS[engine] = (now, limit)
            _ASKING.discard(engine)
    return limit


SETTING_KEPT = 60.0  # seconds an engine's statement_timeout, once asked, is told without asking again
_SETTINGS: weakref.WeakKeyDictionary[sa.Engine, tuple[float, str | None]] = weakref.WeakKeyDictionary()
_ASKING: weakref.WeakSet[sa.Engine] = weakref.WeakSet()  # engines whose statement_timeout a request asks now
# where each engine's database raises its statement timeout's 57014: PostgreSQL's source file and line
_TIMEOUT_AT: weakref.WeakKeyDictionary[sa.Engine, tuple[str, str]] = weakref.WeakKeyDictionary()


_OF: weakref.WeakKeyDictionary[sa.Engine, Failures] = weakref.WeakKeyDictionary()
_OF_LOCK = threading.Lock()


def of(engine: sa.Engine) -> Failures:
    """``engine``'s one :class:`Failures`."""
    with _OF_LOCK:
        failures = _OF.get(engine)
        if failures is None:
            failures = _OF[engine] = Failures(engine)
        return failures
