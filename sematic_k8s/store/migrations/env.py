"""Alembic environment: runs against the connection (or URL) that :mod:`sematic_k8s.store.schema` passes in.

The target metadata (what ``alembic revision --autogenerate`` compares against) is the store's tables, or
what the caller passes as ``config.attributes["target_metadata"]`` (the server adds its API keys).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from sematic_k8s.store.tables import Base

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=config.attributes.get("target_metadata", Base.metadata),
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic: no sqlalchemy.url configured and no connection given")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
