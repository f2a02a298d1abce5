"""Opening the server's database: the library's one schema path (:mod:`sematic_k8s.store.schema`, Alembic
migrations under a lock), which also makes the server's ``api_keys`` table."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.config import Config

from sematic_k8s import settings
from sematic_k8s.store import schema
from sematic_k8s.store.sql import SqlStore
from sematic_k8s.store.tables import Base
from sematic_k8s_server import auth

FIRST_REVISION = schema.FIRST_REVISION


def target_metadata() -> sa.MetaData:
    """Everything the migrations must produce: the store's tables plus ``api_keys``."""
    md = sa.MetaData()
    for table in [*Base.metadata.tables.values(), *auth.metadata.tables.values()]:
        table.to_metadata(md)
    return md


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    """The library's migrations, compared against the server's tables (for ``alembic revision --autogenerate``)."""
    return schema.alembic_config(connection, url, target_metadata())


def migrate(engine: sa.Engine) -> None:
    """``alembic upgrade head`` under the migration lock (see :func:`sematic_k8s.store.schema.migrate`)."""
    schema.migrate(engine)


KEPT_CONNECTIONS = 20  # of the pool's connections, those kept open when idle (the others closed once returned)


def engine_options(url: str) -> dict[str, Any]:
    """Pool sizes for many concurrent clients (the API runs sync handlers on a 40-thread pool):
    $SEMATIC_K8S_DB_POOL_SIZE connections at most (50), :data:`KEPT_CONNECTIONS` of them kept, a request waiting
    $SEMATIC_K8S_DB_POOL_TIMEOUT seconds (20, below clients' 60 s request timeout) for one before its 503
    (:mod:`~sematic_k8s_server.dbfailures`). The claim beats have connections of their own (:mod:`.claim_beats`)."""
    if url.startswith("sqlite"):
        return {}
    size = settings.db_pool_size()
    kept = min(KEPT_CONNECTIONS, size)
    return {"pool_size": kept, "max_overflow": size - kept, "pool_pre_ping": True,
            "pool_timeout": settings.db_pool_timeout(), **pooler_options()}


def transaction_pooled() -> bool:
    """Whether the server's PostgreSQL URL reaches PgBouncer's transaction pooling ($SEMATIC_K8S_DB_POOLER): a server
    session is the server's for one transaction, so it keeps nothing on one (no ``SET``, no prepared statement, no
    ``LISTEN``)."""
    return settings.db_pooler() == "transaction"


def pooler_options() -> dict[str, Any]:
    """An engine's options for what its PostgreSQL URL reaches ($SEMATIC_K8S_DB_POOLER): behind PgBouncer's
    transaction pooling, no server-side prepared statement (psycopg prepares a query run 5 times on a connection: a
    session's, left on a server session another client gets, and missing on the next one ours gets); else none."""
    return {"connect_args": {"prepare_threshold": None}} if transaction_pooled() else {}


def bound_lock_waits(store: SqlStore) -> None:
    """``store``'s lock waits bounded to $SEMATIC_K8S_DB_LOCK_TIMEOUT (:mod:`sematic_k8s.store.lockwait`): per
    session, or per transaction behind PgBouncer's transaction pooling ($SEMATIC_K8S_DB_POOLER)."""
    store.bound_lock_waits(settings.db_lock_timeout(), per_transaction=transaction_pooled())


def open_store(url: str) -> SqlStore:
    """The SqlStore the server serves, its schema migrated to head; on PostgreSQL, each request's transaction waits
    for another session's lock at most $SEMATIC_K8S_DB_LOCK_TIMEOUT seconds (20: below clients' 60 s timeout), then
    is answered 503 (:mod:`sematic_k8s.store.lockwait`). Bounded after the migration: that waits for another
    replica's as long as it takes."""
    settings.db_lock_timeout(), settings.db_pooler()  # bad values refused before the database is opened
    store = SqlStore(url, **engine_options(url))
    bound_lock_waits(store)
    return store
