"""Shared fixtures: a throwaway PostgreSQL cluster (Debian's package) on 127.0.0.1."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from pgcluster import create_database, pg_bin, postgres_cluster

# Image builds fetch their wheels with pip from the package index (once per requirement set, then cached). A
# connection that stalls is given up and tried again after 20 s, not after this machine's 180 s default
# ($PIP_DEFAULT_TIMEOUT), which alone would take a test past its 300 s timeout.
os.environ["PIP_DEFAULT_TIMEOUT"] = "20"


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
