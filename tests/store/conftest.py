"""Fixtures of the store tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from sematic_k8s.store.sql import SqlStore


@pytest.fixture(params=["sqlite", "postgresql"])
def home(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A LocalResolver home recording to SQLite in it, then (second param) to a fresh PostgreSQL database."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        SqlStore(url).close()
        monkeypatch.setenv("SEMATIC_K8S_DB_URL", url)
    return tmp_path
