"""A database as an older revision of the store's migrations left it, for the tests of a migration (SQLite and
PostgreSQL alike): brought to that revision alone, its tables read back as that revision made them, and rows written
into them as an older version would have written them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa
from alembic import command

from sematic_k8s.store import schema


@contextlib.contextmanager
def at_revision(db_url: str, revision: str) -> Iterator[sa.Connection]:
    """The database at ``db_url`` upgraded to ``revision`` (and no further), then a connection to it in a transaction
    of its own, committed on leaving, to write the rows an older version would have; the engine is disposed after,
    so that the code under test opens the database afresh."""
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(schema.alembic_config(conn), revision)
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def table_as_left(conn: sa.Connection, name: str) -> sa.Table:
    """The table ``name`` as the database holds it (its columns read back from the database, none taken from the
    code's newer models)."""
    return sa.Table(name, sa.MetaData(), autoload_with=conn)
