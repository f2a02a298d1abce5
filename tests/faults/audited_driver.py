"""``python -m sematic_k8s.driver``, with every SQLite connection it opens able to name its writer in the audit
triggers of :mod:`test_driver_fence` (``audit_writer()``: $AUDIT_WRITER). A module, not a test file: the test runs
it as a process."""

from __future__ import annotations

import os
import runpy
import sqlite3
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


@event.listens_for(Engine, "connect")
def _name_the_writer(dbapi_conn: Any, _: Any) -> None:
    if isinstance(dbapi_conn, sqlite3.Connection):
        writer = os.environ["AUDIT_WRITER"]
        dbapi_conn.create_function("audit_writer", 0, lambda: writer)


if __name__ == "__main__":
    runpy.run_module("sematic_k8s.driver", run_name="__main__")
