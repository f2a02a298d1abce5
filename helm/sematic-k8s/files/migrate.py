"""Helm hook (the migration Job): bring the metadata database to the newest schema, then register the
drivers' API key.

Runs in the server image as ``python -c "<this file>"``. It waits up to $WAIT_SECONDS for the database,
runs the server's own migration (``alembic upgrade head`` under the same PostgreSQL advisory lock the
server takes at startup, stamping a database made by the embedded mode first), and, when
$SEMATIC_K8S_DRIVER_API_KEY is set, records that key's hash under $SEMATIC_K8S_DRIVER_API_KEY_NAME,
replacing any older key of that name (so changing runs.apiKey.value rotates it).
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import sqlalchemy as sa

from sematic_k8s.store.records import utcnow
from sematic_k8s_server import auth
from sematic_k8s_server.db import migrate


def say(message: str) -> None:
    print(f"sematic-k8s migrations: {message}", file=sys.stderr, flush=True)


def redacted(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def wait_for_database(engine: sa.Engine, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return
        except sa.exc.OperationalError as e:
            if time.monotonic() > deadline:
                raise SystemExit(f"sematic-k8s migrations: the database did not answer within {seconds:.0f} s: "
                                 f"{e.orig or e}") from None
            say(f"waiting for the database ({type(e.orig or e).__name__})")
            time.sleep(3)


def register_key(engine: sa.Engine, name: str, key: str) -> bool:
    """Record ``key`` under ``name`` unless it is already known; True when it was added."""
    digest = auth.hash_key(key)
    table = auth.api_keys
    with engine.begin() as conn:
        if conn.scalar(sa.select(table.c.id).where(table.c.key_hash == digest)) is not None:
            return False
        conn.execute(sa.delete(table).where(table.c.name == name))
        conn.execute(sa.insert(table).values(id=uuid.uuid4().hex, name=name, key_hash=digest,
                                             created_at=utcnow()))
    return True


def main() -> int:
    url = os.environ["SEMATIC_K8S_DB_URL"]
    engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        say(f"database {redacted(url)}")
        wait_for_database(engine, float(os.environ.get("WAIT_SECONDS", "300")))
        migrate(engine)
        say("schema at head")
        key = os.environ.get("SEMATIC_K8S_DRIVER_API_KEY")
        if key:
            name = os.environ.get("SEMATIC_K8S_DRIVER_API_KEY_NAME") or "helm-drivers"
            added = register_key(engine, name, key)
            say(f"drivers' API key {name!r} {'registered' if added else 'already registered'}")
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
