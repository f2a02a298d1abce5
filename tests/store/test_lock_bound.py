"""The server's bound on its sessions' lock waits (:mod:`sematic_k8s.store.lockwait`) against a real PostgreSQL (the
session's throwaway cluster): a session setting made as the pool connects, which the start-up migration's wait for
another process's lock still sets aside, and which a session never goes without; behind a transaction pooler, each
transaction's own, nothing left on the session."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from outages import called_in
from sematic_k8s.errors import TableLocked
from sematic_k8s.store import schema
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server import db, dbfailures


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


def _raw(store: SqlStore, statement: str) -> Any:
    """``statement``'s first value on the pool's one driver connection, outside any transaction of SQLAlchemy's (no
    begin of the engine's): the server session as the next client of a pooler would find it."""
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(statement)
        value = cursor.fetchone()[0]
        raw.rollback()
        return value
    finally:
        raw.close()


def test_behind_a_transaction_pooler_each_transaction_is_bounded_and_the_session_keeps_nothing(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """$SEMATIC_K8S_DB_POOLER=transaction (PgBouncer's transaction pooling, which hands a server session to another
    client between transactions), the server's store as it opens it (``db.open_store``, one connection, bound 1 s): a
    write blocked on a run's row lock another session holds (``SELECT ... FOR UPDATE``) is refused at the bound
    (``TableLocked`` naming runs and 1 s), and the transaction's bound leaves nothing on its server session:
    ``SHOW lock_timeout`` there is the database's own (0), another client's ``SET lock_timeout`` on it does not change
    the next transaction's bound (an operator's shorter one, on the role, is kept), and a query run 8 times in a
    transaction leaves no prepared statement (``pg_prepared_statements``: psycopg prepares one at its 5th run unless
    told not to), nor does a rerun's clone write leave its temporary table (dropped at commit). Was: the bound a session
    ``SET`` as the pool connected (left there for the pooler's next client, and missing on the server sessions the
    store's later transactions got), prepared statements, and the clones' table ``clone_map``."""
    monkeypatch.setenv("SEMATIC_K8S_DB_POOLER", "transaction")
    monkeypatch.setenv("SEMATIC_K8S_DB_LOCK_TIMEOUT", "1")
    monkeypatch.setenv("SEMATIC_K8S_DB_POOL_SIZE", "1")
    store = db.open_store(postgres_url)
    try:
        batch = Batch(new_runs={"a1": {"id": "a1", "root_id": "r0", "parent_id": None, "func_path": "m:f",
                                       "func_name": "f", "state": "created", "created_at": utcnow()}})
        store.write(batch)
        with store.engine.begin() as conn:  # more than psycopg's prepare_threshold (5) runs of one query
            for _ in range(8):
                assert conn.execute(sa.text("SELECT id FROM runs WHERE id = :id"), {"id": "a1"}).scalar() == "a1"
        assert _raw(store, "SELECT count(*) FROM pg_prepared_statements") == 0
        with psycopg.connect(_dsn(postgres_url)) as locker:
            locker.execute("SELECT id FROM runs WHERE id = 'a1' FOR UPDATE")
            with pytest.raises(TableLocked) as refused:
                store.write(Batch(run_updates={"a1": {"func_name": "g"}}))
        assert str(refused.value).startswith("the metadata database's table runs is locked by another session (a "
                                             "migration or maintenance?) for longer than 1 s"), refused.value
        assert _raw(store, "SHOW lock_timeout") == "0"  # the database's own: nothing of ours on the session
        with store.engine.connect() as conn:
            assert _lock_timeout(conn) == "1s"  # each transaction's own
        raw = store.engine.raw_connection()  # another client of the pooler, on the same server session
        try:
            raw.cursor().execute("SET lock_timeout = '50s'")
            raw.commit()
        finally:
            raw.close()
        with store.engine.connect() as conn:
            assert _lock_timeout(conn) == "1s"
        store.write(Batch(run_updates={"a1": {"func_name": "g"}}))
        assert store.get_run("a1").func_name == "g"
        clones = Batch()  # a rerun's reused run, copied in the database through a temporary table
        clones.clone_run("c1", "a1", root_id="r1", parent_id=None, created_at=utcnow())
        store.write(clones)
        assert store.get_run("c1").notes["reused_from"] == "a1"  # type: ignore[union-attr]
        assert _raw(store, "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()") == 0
        database = postgres_url.rsplit("/", 1)[1]
        with psycopg.connect(f"{_dsn(postgres_url.rsplit('/', 1)[0])}/postgres", autocommit=True) as dba:
            dba.execute(f'ALTER ROLE postgres IN DATABASE "{database}" SET lock_timeout = \'300ms\'')
        store.engine.dispose()  # a server session started since: the operator's shorter bound is the one kept
        with store.engine.connect() as conn:
            assert _lock_timeout(conn) == "300ms"
    finally:
        store.close()


def test_behind_a_transaction_pooler_a_transaction_whose_bound_cannot_be_set_is_not_run(postgres_url: str) -> None:
    """Per transaction (``per_transaction``: a transaction pooler), the server session ended (``pg_terminate_backend``)
    before a transaction begins: the bound's statement fails, raised as the transaction's own outage (the usual 503,
    SQLAlchemy's error, the connection invalidated), nothing run unbounded; the next transaction, on a new session,
    is bounded."""
    server = postgres_url.rsplit("/", 1)[0]
    store = SqlStore(postgres_url, pool_size=1, max_overflow=0)  # no pre-ping: the session's end met at the begin
    store.bound_lock_waits(1, per_transaction=True)
    try:
        with store.engine.connect() as conn:
            ended = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with psycopg.connect(f"{_dsn(server)}/postgres", autocommit=True) as dba:
            dba.execute("SELECT pg_terminate_backend(%s, 5000)", (ended,))
        with pytest.raises(sa.exc.OperationalError) as refused, store.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        assert dbfailures.is_outage(refused.value), refused.value
        assert "lock_timeout" in str(refused.value.statement)  # the bound's, the transaction's first
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != ended
            assert _lock_timeout(conn) == "1s"
    finally:
        store.close()
