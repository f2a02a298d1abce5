"""Secrets the database keeps for the processes that write it directly: random, made once on first need, the same
for every process of that database and after its restart. A driver without a server derives its workers' outcome keys
from one (:mod:`sematic_k8s.executors.outcome_signing`). Never served (no route of the server reads the table: a
driver through the server derives its keys from its credential), never logged."""

from __future__ import annotations

import secrets

import sqlalchemy as sa

from sematic_k8s.store import guards, writes
from sematic_k8s.store.tables import Base, KeptSecretRow

SECRET_BYTES = 32


def kept_secret(engine: sa.Engine, name: str) -> bytes:
    """The secret kept as ``name``, made if absent: inserted if absent, then read back in the same transaction, so
    that processes making it at once all keep the one that landed first."""
    t = Base.metadata.tables[KeptSecretRow.__tablename__]
    read = sa.select(t.c.value).where(t.c.id == name)
    with engine.connect() as conn:
        value = conn.scalar(read)
    if value is None:
        with engine.begin() as conn:
            guards.hold_write_lock(conn)  # SQLite: the read back sees what the insert found there
            writes.insert_absent(conn, t, [{"id": name, "value": secrets.token_hex(SECRET_BYTES)}])
            value = conn.scalar(read)
    return bytes.fromhex(str(value))
