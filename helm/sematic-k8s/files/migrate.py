"""Helm hook (the migration Job): bring the metadata database to the newest schema.

Runs in the server image as ``python -c "<this file>"``. It waits up to $WAIT_SECONDS for the database and
runs the server's own migration (``alembic upgrade head`` under the same PostgreSQL advisory lock the
server takes at startup, stamping a database made by the embedded mode first). Drivers need no key of the
chart's: each gets a token for its own resolution when it is launched.
"""

from __future__ import annotations

import os
import sys
import time

import sqlalchemy as sa

from sematic_k8s_server.db import migrate, pooler_options


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


def main() -> int:
    url = os.environ["SEMATIC_K8S_DB_URL"]
    engine = sa.create_engine(url, pool_pre_ping=True, **pooler_options())  # $SEMATIC_K8S_DB_POOLER's
    try:
        say(f"database {redacted(url)}")
        wait_for_database(engine, float(os.environ.get("WAIT_SECONDS", "300")))
        migrate(engine)
        say("schema at head")
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
