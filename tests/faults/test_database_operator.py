"""What a PostgreSQL operator does to the server's database, caused for real on a running server process: the database
made read-only (``default_transaction_read_only``, as a failover's standby is), its connections used up by other
clients (``max_connections``). Clients are told in plain words, with a 503 they retry, nothing recorded is lost, and
the server recovers on its own once the operator is done."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import fault_pipelines as fp
import sematic_k8s as sk
from outages import ServerProcess, running
from sematic_k8s.errors import ServerError
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, utcnow
from sematic_k8s.store.sql import SqlStore
from serving import wait_for
from test_outages import OUTAGE, all_recorded, resolve_in_thread

READ_ONLY = "the metadata database is read-only"


@contextlib.contextmanager
def _operator(db_url: str) -> Iterator[psycopg.Connection]:
    """A superuser's session on ``db_url``'s cluster (its ``postgres`` database), as an operator's psql."""
    server = db_url.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        yield conn


def _end_sessions(dba: psycopg.Connection, database: str) -> int:
    """``pg_terminate_backend`` on every session of ``database`` (the server's pool and listener); how many."""
    rows = dba.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                       "AND pid <> pg_backend_pid()", (database,)).fetchall()
    return len(rows)


def _new_resolution() -> Batch:
    batch = Batch()
    batch.add_resolution(ResolutionRecord(id=uuid.uuid4().hex, root_func_path="pipes:pipeline", state="running",
                                          created_at=utcnow()))
    return batch


def test_a_read_only_database_is_a_503_its_drivers_ride_out(tmp_path: Path, postgres_url: str, monkeypatch) -> None:
    """The database made read-only under a resolution (``ALTER DATABASE ... SET default_transaction_read_only = on``,
    its sessions ended so that they start again read-only, as on a standby after a failover): a write is answered 503
    saying so (was: 422 "bad batch: cannot execute ... in a read-only transaction", which the driver does not retry:
    its resolution failed), the driver retries it, and once the operator sets it back (its sessions left as they are:
    the server drops them itself) the resolution finishes with every step recorded."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    database = postgres_url.rsplit("/", 1)[1]
    server = ServerProcess(tmp_path, db_url=postgres_url)
    with running(server), _operator(postgres_url) as dba:
        gate = tmp_path / "gate"
        f = fp.gated(3, str(gate))
        thread, outcome = resolve_in_thread(f, sk.LocalResolver(home=tmp_path, server=server.url, max_parallelism=2))
        wait_for(lambda: Path(f"{gate}.started").exists() or outcome, 60, what="the gated step")
        dba.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        assert _end_sessions(dba, database) > 0
        client = HttpStore(server.url, retry_window=0)
        try:
            with pytest.raises(ServerError) as refused:
                client.write(_new_resolution())
        finally:
            client.close()
        assert refused.value.status == 503 and READ_ONLY in str(refused.value), refused.value
        gate.touch()  # the gated step and the last addition finish while the database is read-only
        wait_for(lambda: server.log.read_text().count(READ_ONLY) >= 2, 60, what="a write of the driver refused")
        time.sleep(OUTAGE)
        dba.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = off')
        thread.join(120)
        assert outcome.get("value") == 3 + 1 + 2, outcome
        store = SqlStore(postgres_url, create=False)
        try:
            all_recorded(store, f.id)
        finally:
            store.close()
