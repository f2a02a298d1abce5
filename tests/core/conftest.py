"""Fixtures of the core tests: an embedded home in the test's directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sematic_k8s as sk
from sematic_k8s.store import sql_store
from sematic_k8s.store.sql import SqlStore


@pytest.fixture
def resolver(tmp_path: Path) -> Callable[..., sk.LocalResolver]:
    """Makes a LocalResolver recording in the test's directory, with the settings it is given."""
    def make(**settings: Any) -> sk.LocalResolver:
        return sk.LocalResolver(home=tmp_path, **settings)
    return make


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    """The store of that home's database, to read what was recorded."""
    return sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
