"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore

NOW = utcnow()  # when the tests were collected: with stale_after=10 ** 6 never stale in a test


@pytest.fixture(params=["sqlite", "postgresql"])
def home(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A LocalResolver home recording to SQLite in it, then (second param) to a fresh PostgreSQL database."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        SqlStore(url).close()
        monkeypatch.setenv("SEMATIC_K8S_DB_URL", url)
    return tmp_path


@pytest.fixture(params=["sqlite", "postgresql"])
def running_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[dict[str, str]], SqlStore]]:
    """Makes a SQL store (SQLite in the test's directory, then a fresh PostgreSQL database) holding resolution r0,
    running, with the root runs it is given (id: state); closed after the test."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else f"sqlite:///{tmp_path / 'db'}"
    opened: list[SqlStore] = []

    def make(runs: dict[str, str]) -> SqlStore:
        s = SqlStore(url, stale_after=10 ** 6)
        opened.append(s)
        s.write(Batch(new_resolutions=[{"id": "r0", "root_func_path": "m:p", "state": "running", "created_at": NOW,
                                        "heartbeat_at": NOW}],
                      new_runs={r: {"id": r, "root_id": "r0", "parent_id": None, "func_path": "m:f",
                                    "func_name": "f", "state": state, "created_at": NOW} for r, state in runs.items()}))
        return s

    yield make
    for s in opened:
        s.close()
