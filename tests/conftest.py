"""Shared fixtures: a throwaway PostgreSQL cluster (Debian's package) on 127.0.0.1; a server's store on SQLite in the
test's folder; the stores a test opened, closed after it; ``--fd-report`` (tests/support/fd_report.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fd_report import FdReport
from pgcluster import create_database, pg_bin, postgres_cluster
from sematic_k8s import store as sql_stores
from sematic_k8s.store import http as http_stores
from sematic_k8s.store.sql import SqlStore

# Image builds fetch their wheels with pip from the package index (once per requirement set, then cached). A
# connection that stalls is given up and tried again after 20 s, not after this machine's 180 s default
# ($PIP_DEFAULT_TIMEOUT), which alone would take a test past its 300 s timeout.
os.environ["PIP_DEFAULT_TIMEOUT"] = "20"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fd-report", action="store_true",
                     help="print the descriptors the test process left open, and the tests that opened most")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fd-report"):
        config.pluginmanager.register(FdReport(), "fd-report")


@pytest.fixture(autouse=True)
def _close_opened_stores() -> Iterator[None]:
    """Close the stores the test opened. A process keeps one store per database URL (and per server, key and retry
    window), open for its life; each test's own home is a URL of its own, so the session kept every test's
    database connections and server sockets open (more than 1,024 descriptors by its end). Those opened by a
    module's or the session's fixtures are theirs (set up before this)."""
    sql, http = set(sql_stores._STORES), set(http_stores._STORES)
    yield
    for url in set(sql_stores._STORES) - sql:
        sql_stores._STORES.pop(url).close()
    for key in set(http_stores._STORES) - http:
        http_stores._STORES.pop(key).close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The session's PostgreSQL cluster: ``postgresql+psycopg://postgres@127.0.0.1:PORT``. Skips when
    PostgreSQL is not installed, unless CI=true (then it fails: CI must test against PostgreSQL)."""
    bin_dir = pg_bin()
    if bin_dir is None:
        message = ("PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BIN to the "
                   "directory holding initdb and pg_ctl)")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    with postgres_cluster(bin_dir) as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's PostgreSQL cluster."""
    return create_database(postgres_server, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: SQLite in ``tmp_path``, then (second param) one on the session's PostgreSQL cluster."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'db.sqlite3'}"


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqlStore]:
    """A server's store (``sematic_k8s_server.db.open_store``) on SQLite, ``tmp_path/db.sqlite3``; closed after."""
    from sematic_k8s_server.db import open_store  # the server's package: imported by the tests that use it

    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        yield store
    finally:
        store.close()
