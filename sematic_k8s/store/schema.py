"""The store's schema: created and upgraded by the Alembic migrations in ``migrations/``, one path for the
embedded database and the server's, one process at a time.

Several processes may open one database at once (pipelines started together on one home, servers
rolling out): :func:`migrate` holds a lock while it looks and upgrades (SQLite: an exclusive transaction;
PostgreSQL: an advisory lock), so exactly one of them creates or alters tables and the others find them
at head. A database at head is recognised without loading Alembic at all.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import NullPool

from sematic_k8s import settings
from sematic_k8s.errors import SchemaTooNew
from sematic_k8s.store import diskfull

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0016_kept_secrets"  # the newest revision in migrations/versions (a test checks it)
FIRST_REVISION = "0001"  # the store's tables alone: what versions before the migrations moved here created
PG_LOCK_ID = 727274  # pg_advisory_xact_lock key held while migrating
SQLITE_BUSY_MS = 120_000  # how long a process waits for another's migration (or write) on SQLite
WAL_RETRY_S = 0.01  # between a new SQLite file's switches to WAL that met another connection's lock


def alembic_config(connection: sa.Connection | None = None, url: str | None = None,
                   target_metadata: sa.MetaData | None = None) -> Config:
    """Alembic's configuration for the store's migrations, on ``connection`` (or ``url``)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    if target_metadata is not None:
        cfg.attributes["target_metadata"] = target_metadata
    return cfg


def revision(conn: sa.Connection) -> str | None:
    """The database's Alembic revision; None when it has none (empty, or made before migrations)."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.scalar(sa.text("SELECT version_num FROM alembic_version"))


def use_wal(dbapi_conn: Any) -> None:
    """Put the SQLite database of ``dbapi_conn`` (a new connection, its busy timeout set) in WAL mode; nothing to do
    once it is. A file not in WAL mode yet (a fresh home) is switched under SQLite's exclusive lock, taken from
    inside the read the switch begins with: meeting another connection's lock there (another process switching the
    same new file, or writing it), SQLite answers "database is locked" at once, without waiting its busy timeout
    (that could deadlock). So the switch is tried again until the busy timeout has passed, as a lock met elsewhere
    is waited for; was: one of several processes opening a fresh home at once failed, "stayed locked ... for 120 s"
    (DatabaseLocked) a moment after it started."""
    deadline = time.monotonic() + SQLITE_BUSY_MS / 1000
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            busy = getattr(e, "sqlite_errorname", None) == "SQLITE_BUSY" or str(e) == "database is locked"
            if not busy or time.monotonic() >= deadline:
                raise
        time.sleep(WAL_RETRY_S)


def migrate(engine: sa.Engine) -> None:
    """Bring the database to :data:`HEAD` (``alembic upgrade head``), under a lock. A database made before
    the migrations moved into the library (tables, no ``alembic_version``) is first stamped at the revision
    that matches it, so its recorded data stays and it gains the newer columns."""
    with engine.connect() as conn:
        if revision(conn) == HEAD:
            return
    from alembic import command

    with _locked(engine) as conn:
        current = revision(conn)  # again, under the lock: another process may have migrated meanwhile
        if current == HEAD:
            return
        cfg = alembic_config(conn)
        if current is None and sa.inspect(conn).has_table("runs"):
            command.stamp(cfg, FIRST_REVISION)
        elif current is not None and current not in _known_revisions(cfg):
            raise SchemaTooNew.at(engine.url.render_as_string(hide_password=True), current, HEAD,
                                  f"--home, ${settings.DB_URL_ENV}")
        command.upgrade(cfg, "head")


def _known_revisions(cfg: Config) -> set[str]:
    """The revisions of this version's migrations."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(cfg).walk_revisions()}


@contextlib.contextmanager
def _locked(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that no other process's migration runs beside."""
    url = engine.url
    if engine.dialect.name != "sqlite" or url.database in (None, "", ":memory:"):
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # an operator's timeouts on the role or database are for the application's queries: the wait for
                # another process's migration, and a migration, may outlast them (this transaction only)
                conn.execute(sa.text("SELECT set_config('statement_timeout', '0', true), "
                                     "set_config('idle_in_transaction_session_timeout', '0', true)"))
                # nor the server's bound on a request's lock waits (store.lockwait, a session's SET): the database's
                # own, if any (TO DEFAULT: the value the session started with, from its role, database or options)
                conn.execute(sa.text("SET LOCAL lock_timeout TO DEFAULT"))
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": PG_LOCK_ID})
            yield conn
        return
    # SQLite: pysqlite would not begin a transaction before DDL; take the database's write lock ourselves
    # (BEGIN EXCLUSIVE waits up to busy_timeout for other writers), on a connection of our own.
    lock_engine = sa.create_engine(url, poolclass=NullPool)

    def connect(dbapi_conn: Any, _: Any) -> None:
        dbapi_conn.isolation_level = None  # autocommit at the driver: BEGIN is ours
        dbapi_conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        use_wal(dbapi_conn)

    def begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN EXCLUSIVE")

    event.listen(lock_engine, "connect", connect)
    event.listen(lock_engine, "begin", begin)
    diskfull.listen(lock_engine)
    try:
        with lock_engine.begin() as conn:
            yield conn
    finally:
        lock_engine.dispose()
