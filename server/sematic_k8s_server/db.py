"""Opening the server's database: the store's tables and the API keys, migrated with Alembic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from sematic_k8s.store.sql import Base, SqlStore
from sematic_k8s_server import auth

MIGRATIONS = Path(__file__).parent / "migrations"
FIRST_REVISION = "0001"  # the store's tables alone: what an embedded SqlStore(create=True) makes


def target_metadata() -> sa.MetaData:
    """Everything the migrations must produce: the store's tables plus ``api_keys``."""
    md = sa.MetaData()
    for table in [*Base.metadata.tables.values(), *auth.metadata.tables.values()]:
        table.to_metadata(md)
    return md


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: sa.Engine) -> None:
    """``alembic upgrade head`` (one path for SQLite and PostgreSQL). A database made by the embedded
    mode (tables, no ``alembic_version``) is first stamped at the revision that matches it."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # several servers starting at once: one migrates at a time
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(727274)"))
        tables = set(sa.inspect(conn).get_table_names())
        cfg = alembic_config(conn)
        if "alembic_version" not in tables and "runs" in tables:
            command.stamp(cfg, FIRST_REVISION)
        command.upgrade(cfg, "head")


def engine_options(url: str) -> dict[str, Any]:
    """Pool sizes for many concurrent clients (the API runs sync handlers on a 40-thread pool)."""
    if url.startswith("sqlite"):
        return {}
    return {"pool_size": 20, "max_overflow": 30, "pool_pre_ping": True, "pool_timeout": 60}


def open_store(url: str) -> SqlStore:
    """The SqlStore the server serves, its schema migrated to head."""
    store = SqlStore(url, create=False, **engine_options(url))
    migrate(store.engine)
    return store
