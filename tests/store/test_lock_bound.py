"""The server's bound on its sessions' lock waits (:mod:`sematic_k8s.store.lockwait`) against a real PostgreSQL (the
session's throwaway cluster): a session setting made as the pool connects, which the start-up migration's wait for
another process's lock still sets aside, and which a session never goes without."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from outages import called_in
from sematic_k8s.store import schema
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server import dbfailures


def _dsn(postgres_url: str) -> str:
    return postgres_url.replace("postgresql+psycopg://", "postgresql://")


def _lock_timeout(conn: sa.Connection) -> str:
    return str(conn.exec_driver_sql("SHOW lock_timeout").scalar())


def test_the_migrations_wait_for_another_process_is_unbounded_on_a_bounded_session(postgres_url: str) -> None:
    """A migration's transaction on a session bounded to 1 s (the server's, set with ``SET lock_timeout``) waits for
    another process's migration lock (held 3 s) as long as it is held: its ``SET LOCAL lock_timeout TO DEFAULT`` is
    the value the session started with (none here), not the session's ``SET``; the session has its bound again after
    it. (Set as a connect option, ``-c lock_timeout``, the bound would be that default: the wait canceled at 1 s.)"""
    store = SqlStore(postgres_url, pool_size=1, max_overflow=0)
    store.bound_lock_waits(1)
    try:
        with store.engine.connect() as conn:
            assert _lock_timeout(conn) == "1s"
            session = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with psycopg.connect(_dsn(postgres_url)) as migrating:
            migrating.execute("SELECT pg_advisory_xact_lock(%s)", (schema.PG_LOCK_ID,))
            with called_in(3, migrating.commit), schema._locked(store.engine) as conn:
                assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() == session
                assert _lock_timeout(conn) == "0"
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() == session
            assert _lock_timeout(conn) == "1s"
    finally:
        store.close()


def test_a_session_whose_bound_cannot_be_set_is_not_used(postgres_url: str) -> None:
    """A new session ended by the database (``pg_terminate_backend``) before its bound is set: the connection is not
    had (the error raised, an outage as any connection lost: the usual 503), the pool keeps nothing of it, and the
    next one is bounded. Was: a failure to set the bound was passed over, the transaction run without it."""
    server = postgres_url.rsplit("/", 1)[0]
    store = SqlStore(postgres_url, pool_size=1, max_overflow=0)
    ended: list[int] = []

    def end_the_first(dbapi: Any, _record: Any) -> None:  # after the dialect's own, before the bound's
        if not ended:
            ended.append(dbapi.info.backend_pid)
            with psycopg.connect(f"{_dsn(server)}/postgres", autocommit=True) as dba:
                dba.execute("SELECT pg_terminate_backend(%s, 5000)", (ended[0],))

    event.listen(store.engine, "connect", end_the_first)
    store.bound_lock_waits(1)
    try:
        with pytest.raises(sa.exc.OperationalError) as refused, store.engine.connect():
            pass
        assert dbfailures.is_outage(refused.value), refused.value
        assert ended and store.engine.pool.checkedin() == 0
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != ended[0]
            assert _lock_timeout(conn) == "1s"
    finally:
        store.close()
