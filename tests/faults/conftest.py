"""Fixtures of the fault tests that several modules share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from outages import ServerProcess, running


@pytest.fixture
def db_server(tmp_path: Path, request: pytest.FixtureRequest, db: str) -> Iterator[ServerProcess]:
    """``sematic-k8s server --local`` in a process of its own over the test's ``db`` parameter: "sqlite" (in
    ``tmp_path``) or "postgresql" (a fresh database on the session's cluster); started, and stopped after the test."""
    server = ServerProcess(tmp_path, db_url=request.getfixturevalue("postgres_url") if db == "postgresql" else None)
    with running(server):
        yield server
