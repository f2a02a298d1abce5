"""Metadata: the records of Resolutions, Runs and Artifacts (what ran, with which inputs, in which state).

The *store* keeps records; *storage* (:mod:`sematic_k8s.storage`) keeps bytes (artifact payloads, logs).
Every store implements :class:`~sematic_k8s.store.base.Store` and writes in batches
(:class:`~sematic_k8s.store.records.Batch`, one transaction each):

- :mod:`~sematic_k8s.store.sql`: SQLAlchemy over SQLite (the embedded default) or PostgreSQL; the server
  uses it too. Its docstring lists the modules it is made of (guards, writes, bulk, reads, liveness...).
- :mod:`~sematic_k8s.store.http`: the same interface over the server's REST API, for drivers, pods and
  resolvers that record through the server (riding out its outages for a retry window), over
  :mod:`~sematic_k8s.store.http_connections`, with records in their JSON form (:mod:`~sematic_k8s.store.wire`,
  which the server reads too).

:mod:`~sematic_k8s.store.schema` creates and migrates the SQL tables (Alembic, under a lock), for the
embedded mode and the server alike.

:func:`open_store` picks one the way every entrypoint does; :func:`~sematic_k8s.store.lookup.find_run` finds a run by
its id or a unique start of it in any of them (the CLI's ids, the resolvers' ``rerun_from``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from sematic_k8s import settings
from sematic_k8s.error_records import one_line
from sematic_k8s.errors import DatabaseUnopenable
from sematic_k8s.store.base import Store
from sematic_k8s.store.http import http_store

if TYPE_CHECKING:
    import sqlalchemy

    from sematic_k8s.store.sql import SqlStore

_STORES: dict[str, SqlStore] = {}


def sql_store(url: str) -> SqlStore:
    """One SqlStore (engine, connection pool) per URL per process. SQLAlchemy is imported here, when first
    needed: a driver, which records through the server, never loads it (a third of its start-up)."""
    from sematic_k8s.store.sql import SqlStore

    if url not in _STORES:
        if _in_memory(url):
            raise DatabaseUnopenable(f"the metadata database {url} is in memory: what a resolution records there is "
                                     "lost when the process ends (and no other process sees it)",
                                     f"give ${settings.DB_URL_ENV} a file (sqlite:////path/db.sqlite3) or unset it "
                                     "(a SQLite file in the data directory)")
        _STORES[url] = SqlStore(url)  # DatabaseUnopenable when it cannot be opened
    return _STORES[url]


def _sqlite_url(url: str) -> sqlalchemy.engine.URL | None:
    """``url`` parsed when it is a SQLite database's; None for another database or a URL that does not parse
    (opening it says what is wrong)."""
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return None
    return parsed if parsed.get_backend_name() == "sqlite" else None


def _in_memory(url: str) -> bool:
    """Whether ``url`` is an in-memory SQLite database (``sqlite://``, ``sqlite:///:memory:``)."""
    parsed = _sqlite_url(url)
    return parsed is not None and parsed.database in (None, "", ":memory:")


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite database URL names; None for another database, one in memory, a ``uri`` URL, or a URL
    that does not parse."""
    parsed = _sqlite_url(url)
    if parsed is None or parsed.database in (None, "", ":memory:") or parsed.query.get("uri"):
        return None
    return Path(parsed.database).expanduser()


def missing_sqlite_file(url: str) -> Path | None:
    """The SQLite file ``url`` names when it is not there (a read would make it, and find nothing); else None."""
    file = sqlite_file(url)
    return None if file is None or file.is_file() else file


def unrecorded_sqlite(url: str) -> list[str] | None:
    """The tables of the SQLite database ``url`` names when none of them is sematic-k8s's: [] for an empty one (a
    file of no bytes), else another program's. Looked at read-only: a read opening it would make sematic-k8s's
    tables in it (and put it in WAL mode). None when it is sematic-k8s's (or from before its migrations: ``runs``),
    not a SQLite file, or cannot be read so (opening it says why)."""
    import sqlite3

    file = sqlite_file(url)
    if file is None or not file.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{file.absolute().as_uri()}?mode=ro", uri=True)) as conn:
            tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.Error:
        return None
    return None if {"alembic_version", "runs"} & set(tables) else tables


def sqlite_unusable(exc: BaseException, file: str | None = None) -> tuple[str, str] | None:
    """(problem, fix) for a SQLite database that is there but cannot be used as it is, from the sqlite3 error ``exc``
    (or a SQLAlchemy error wrapping one): damaged (not a database, or malformed: restore a backup), or read-only for
    this process; None for any other error. ``file``: the database's file, when known."""
    orig = getattr(exc, "orig", None) or exc
    name = getattr(orig, "sqlite_errorname", None) or ""
    where = f" {file}" if file else ""
    if name.startswith("SQLITE_NOTADB"):  # never one, or its header overwritten
        return (f"{file or 'the metadata database'} is not a SQLite database ({one_line(str(orig))})",
                f"check --home and ${settings.DB_URL_ENV}; if it held the metadata database, restore it from a "
                "backup")
    if name.startswith("SQLITE_CORRUPT"):
        return (f"the SQLite metadata database{where} is damaged ({one_line(str(orig))})",
                f"restore it from a backup (`sqlite3 {file or 'DB'} .recover` may save part of what it holds)")
    if name.startswith("SQLITE_READONLY"):
        return (f"the SQLite metadata database{where} cannot be written by this user ({one_line(str(orig))})",
                "give this user write access to it and to its directory (SQLite writes beside it even to read), or "
                "copy its directory somewhere writable and use that copy")
    return None


def redacted_url(url: str) -> str:
    """A database URL as messages and logs name it: without its password (one that does not parse is not shown:
    it may hold one)."""
    import sqlalchemy

    try:
        return sqlalchemy.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not even a URL
        return "<unparseable URL>"


def open_store(home: Path, server: str | None = None, api_key: str | None = None, *,
               retry_window: float | None = None) -> Store:
    """Where metadata is recorded: the sematic-k8s server at ``server`` (default $SEMATIC_K8S_SERVER,
    with ``api_key``, else $SEMATIC_K8S_API_KEY or the file $SEMATIC_K8S_API_KEY_FILE) when there is one,
    else the embedded database of ``home``. ``retry_window``: how long to ride out a server outage (default
    $SEMATIC_K8S_RETRY_WINDOW; an interactive command may want less)."""
    server = server or settings.server_url()
    if server:
        return http_store(server, api_key or settings.api_key(), retry_window)
    return sql_store(settings.db_url(home))


__all__ = ["Store", "open_store", "redacted_url", "sql_store", "sqlite_unusable", "unrecorded_sqlite"]
