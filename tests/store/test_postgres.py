"""Against a real PostgreSQL (conftest's throwaway cluster): Alembic migrations match the models, and
pipelines resolve on PostgreSQL both embedded (SqlStore) and through the server."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import sematic_k8s as sk
from racing import at_once
from sematic_k8s.errors import ResolutionEnded, RunResolved
from sematic_k8s.store import schema
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server.config import UNOWNED, ServerConfig
from sematic_k8s_server.db import migrate, open_store, target_metadata
from serving import serve

try:
    import cache_records
    import server_pipeline as sp
except ImportError:  # pragma: no cover
    from tests import server_pipeline as sp
    from tests.support import cache_records


def schema_diff(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), target_metadata())


def test_migrations_match_the_models_on_postgres(postgres_url) -> None:
    store = open_store(postgres_url)
    try:
        assert schema_diff(store.engine) == []
        tables = set(sa.inspect(store.engine).get_table_names())
        assert tables == {"resolutions", "runs", "artifacts", "api_keys", "resolution_tokens", "kept_secrets",
                          "alembic_version"}
        migrate(store.engine)  # idempotent: a restarted server upgrades nothing
        with store.engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == schema.HEAD
    finally:
        store.close()


def test_migrations_match_the_models_on_sqlite(tmp_path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    assert schema_diff(store.engine) == []
    # a database the embedded mode created (no alembic_version) is stamped, then upgraded
    embedded = SqlStore(f"sqlite:///{tmp_path / 'embedded.sqlite3'}")  # migrated, as LocalResolver does
    assert sk.LocalResolver(home=tmp_path).resolve(sp.add(1, 2)) == 3  # home's db.sqlite3: recorded data stays
    embedded_with_data = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrate(embedded.engine)
    migrate(embedded_with_data.engine)
    assert schema_diff(embedded_with_data.engine) == []
    assert len(embedded_with_data.list_resolutions()) == 1
    assert schema_diff(embedded.engine) == []
    assert "api_keys" in sa.inspect(embedded.engine).get_table_names()


def test_pipeline_on_postgres_embedded(postgres_url, tmp_path, monkeypatch) -> None:
    open_store(postgres_url).close()
    monkeypatch.setenv("SEMATIC_K8S_DB_URL", postgres_url)
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    flag = tmp_path / "flag"
    f = sp.pipeline(1, 2, str(flag))
    resolver = sk.LocalResolver(home=tmp_path, cache_namespace="pg", max_parallelism=2)
    assert f.resolve(resolver) == 90
    store = resolver.store
    assert isinstance(store, SqlStore) and store.engine.dialect.name == "postgresql"
    assert store.get_resolution(f.id).state == "resolved"
    assert {r.func_name for r in store.runs_of_root(f.id)} == {"pipeline", "add", "square", "flaky"}
    g = sp.pipeline(1, 2, str(flag))
    assert g.resolve(sk.LocalResolver(home=tmp_path, cache_namespace="pg")) == 90
    assert {r.func_name: r for r in store.runs_of_root(g.id)}["square"].cached_from is not None


def test_cache_hits_recorded_whole_on_postgres(postgres_url, tmp_path, monkeypatch) -> None:
    """Hits written in bulk by the SQL store on PostgreSQL (JSON columns cast, timestamps as they are), then
    through a server on the same database (trusting the runs recorded without an owner): every field of each hit's
    Run as SQLite has it."""
    open_store(postgres_url).close()
    monkeypatch.setenv("SEMATIC_K8S_DB_URL", postgres_url)
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    first = cache_records.hit_fan(7)
    assert first.resolve(sk.LocalResolver(home=tmp_path, cache_namespace="pg-hits")) == 28
    second = cache_records.hit_fan(7)
    resolver = sk.LocalResolver(home=tmp_path, cache_namespace="pg-hits")
    assert second.resolve(resolver) == 28
    store = resolver.store
    assert isinstance(store, SqlStore) and store.engine.dialect.name == "postgresql"
    cache_records.check_hit_records(store, first.id, second.id, 7)
    monkeypatch.delenv("SEMATIC_K8S_DB_URL")
    # the embedded store's runs have no owner: hits through the server when its operator trusts them
    with serve(tmp_path, postgres_url, config=ServerConfig(cache_trusted_keys=(UNOWNED,))) as s:
        third = cache_records.hit_fan(7)
        assert third.resolve(sk.LocalResolver(home=tmp_path, server=s.url, api_key=s.key,
                                              cache_namespace="pg-hits")) == 28
        cache_records.check_hit_records(s.store, first.id, third.id, 7)


def test_pipeline_through_server_on_postgres(postgres_url, tmp_path) -> None:
    with serve(tmp_path, postgres_url) as s, s.client() as c:
        assert s.store.engine.dialect.name == "postgresql"
        flag = tmp_path / "flag"
        flag.touch()
        f = sp.pipeline(2, 2, str(flag))
        try:
            f.resolve(sk.LocalResolver(home=tmp_path, server=s.url, api_key=s.key))
        except sk.ResolutionFailed:
            pass
        flag.unlink()
        assert c.get(f"/api/v1/resolutions/{f.id}").json()["state"] == "failed"
        r = c.post(f"/api/v1/resolutions/{f.id}/rerun", json={"mode": "continue"})
        assert r.status_code == 422 and r.json()["command"] == f"sematic-k8s rerun {f.id} --mode continue"
        again = sp.pipeline(2, 2, str(flag))  # as that command does: the recorded arguments are used
        again.resolve(sk.LocalResolver(home=tmp_path, server=s.url, api_key=s.key, rerun_from=f.id,
                                       rerun_mode="continue"))
        new_id = again.id
        res = c.get(f"/api/v1/resolutions/{new_id}").json()
        assert res["state"] == "resolved" and res["rerun_of"] == f.id
        graph = c.get(f"/api/v1/resolutions/{new_id}/graph").json()
        assert {r["func_name"]: r["state"] for r in graph["runs"]}["flaky"] == "resolved"


def write_on_a_thread(store: SqlStore, batch: Batch) -> tuple[threading.Thread, list[BaseException]]:
    """``store.write(batch)`` on a thread of its own, started; what it raised goes into the list."""
    errors: list[BaseException] = []

    def write() -> None:
        try:
            store.write(batch)
        except Exception as e:  # noqa: BLE001 - the caller asserts on it
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    return writer, errors


def wait_for_a_lock_wait(engine: sa.Engine, query_like: str, writer: threading.Thread,
                         errors: list[BaseException]) -> None:
    """Until a session's query (``LIKE query_like``) waits for a lock another holds; the test fails at once, saying
    why, when ``writer`` (the thread whose query it is) ends without having waited."""
    with engine.connect() as watch:
        while not watch.scalar(sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                       "AND query LIKE :q"), {"q": query_like}):
            if not writer.is_alive():
                pytest.fail(f"the store's write ended without waiting for the lock: {errors or 'no error'}")
            watch.rollback()  # PostgreSQL reads the sessions' activity once per transaction: read it afresh
            time.sleep(0.01)


def test_concurrent_writers_of_the_same_runs_never_fail_on_a_deadlock(postgres_url) -> None:
    """Two writers (as two server processes are) updating the same runs with different fields, which a writer
    updates one field set at a time: were the runs locked in that order, each would lock them in an order the
    other reverses, and deadlock. The store locks them in id order: every write succeeds."""
    stores = [SqlStore(postgres_url), SqlStore(postgres_url)]
    try:
        now = utcnow()
        stores[0].write(Batch(
            new_resolutions=[{"id": "r0", "root_func_path": "m:p", "state": "running", "created_at": now}],
            new_runs={f"a{i:02}": {"id": f"a{i:02}", "root_id": "r0", "parent_id": None, "func_path": "m:f",
                                   "func_name": "f", "state": "created", "created_at": now} for i in range(40)}))
        errors: list[BaseException] = []
        low, high = [f"a{i:02}" for i in range(1, 20)], [f"a{i:02}" for i in range(20, 40)]

        def writer(k: int) -> None:
            # rows are locked group by group (a group: the runs given the same fields), each in id order:
            # writer 0 locks a00 and the high half, then the low half; writer 1 the low half, then the high one
            plain, more = (["a00", *high], low) if k == 0 else (low, high)
            for i in range(100):
                try:
                    stores[k].write(Batch(run_updates={**{r: {"state": f"w{k}-{i}"} for r in plain},
                                                       **{r: {"state": f"w{k}-{i}", "func_name": f"w{k}"}
                                                          for r in more}}))
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(e)

        at_once([lambda k=k: writer(k) for k in (0, 1)])
        assert errors == []
        states = {r.id: r.state for r in stores[0].runs_of_root("r0")}
        assert len(states) == 40 and set(states.values()) <= {"w0-99", "w1-99"}
    finally:
        for store in stores:
            store.close()


def test_a_write_aborted_to_break_a_deadlock_is_run_again(postgres_url) -> None:
    """Another client holds run a01 and then wants a00, which the store's write holds while it waits for a01:
    PostgreSQL aborts the store's transaction, and the store runs it again once a01 is free. (The session that
    finds the deadlock is the one aborted; each looks once, ``deadlock_timeout`` after it began to wait: the
    store's after 3 s, the other client's after a minute, so the store's look comes after the cycle closes
    however slowly this machine lets the test close it.)"""
    store = SqlStore(postgres_url + "?options=-c%20deadlock_timeout%3D3s")
    try:
        now = utcnow()
        store.write(Batch(
            new_resolutions=[{"id": "r0", "root_func_path": "m:p", "state": "running", "created_at": now}],
            new_runs={r: {"id": r, "root_id": "r0", "parent_id": None, "func_path": "m:f", "func_name": "f",
                          "state": "created", "created_at": now} for r in ("a00", "a01")}))
        other = sa.create_engine(postgres_url + "?options=-c%20deadlock_timeout%3D60s")
        with other.connect() as conn:
            conn.execute(sa.text("UPDATE runs SET state = 'other' WHERE id = 'a01'"))
            writer, errors = write_on_a_thread(store, Batch(run_updates={"a00": {"state": "store"},
                                                                          "a01": {"state": "store"}}))
            wait_for_a_lock_wait(other, "%runs%", writer, errors)  # the store's write waits for a01
            conn.execute(sa.text("UPDATE runs SET state = 'other' WHERE id = 'a00'"))  # the deadlock
            conn.commit()
        other.dispose()
        writer.join()
        assert errors == []
        assert {r.id: r.state for r in store.runs_of_root("r0")} == {"a00": "store", "a01": "store"}
    finally:
        store.close()


def test_a_run_resolved_by_another_writer_meanwhile_is_not_changed_back(postgres_url) -> None:
    """Another writer resolves a run while a stale write of its state is on its way in: the write reads the run's
    row locked, so it waits for the other transaction and then sees "resolved" (were the check a plain read, it
    would see "running", and the stale state would land on the resolved run)."""
    store = SqlStore(postgres_url)
    try:
        now = utcnow()
        store.write(Batch(
            new_resolutions=[{"id": "r0", "root_func_path": "m:p", "state": "running", "created_at": now}],
            new_runs={"a00": {"id": "a00", "root_id": "r0", "parent_id": None, "func_path": "m:f", "func_name": "f",
                              "state": "running", "created_at": now}}))
        other = sa.create_engine(postgres_url)
        with other.connect() as conn:
            conn.execute(sa.text("UPDATE runs SET state = 'resolved', output_id = :o WHERE id = 'a00'"),
                         {"o": "c" * 64})
            writer, errors = write_on_a_thread(store, Batch(run_updates={"a00": {"state": "failed"}}))
            wait_for_a_lock_wait(other, "%runs%", writer, errors)
            conn.commit()
        other.dispose()
        writer.join()
        assert [type(e) for e in errors] == [RunResolved]
        run = store.get_run("a00")
        assert run is not None and (run.state, run.output_id) == ("resolved", "c" * 64)
    finally:
        store.close()


def test_a_heartbeat_racing_the_sweeper_is_refused_once_it_commits(postgres_url) -> None:
    """A sweeper marks a silent resolution failed while its resolver's heartbeat is on its way in: the write
    reads the resolution's row locked, so it waits for the sweeper's transaction and then sees "failed" (were the
    check a plain read, it would see "running", and the heartbeat would land on the ended resolution)."""
    store = SqlStore(postgres_url)
    try:
        store.write(Batch(new_resolutions=[{"id": "r0", "root_func_path": "m:p", "state": "running",
                                            "created_at": utcnow(), "heartbeat_at": utcnow()}]))
        other = sa.create_engine(postgres_url)
        with other.connect() as conn:
            conn.execute(sa.text("UPDATE resolutions SET state = 'failed', error = 'silent' WHERE id = 'r0'"))
            writer, errors = write_on_a_thread(store, Batch(resolution_updates={"r0": {"heartbeat_at": utcnow()}}))
            # the heartbeat's write waits for the sweeper's row
            wait_for_a_lock_wait(other, "%resolutions%", writer, errors)
            beat_before = conn.scalar(sa.text("SELECT heartbeat_at FROM resolutions WHERE id = 'r0'"))
            conn.commit()
        other.dispose()
        writer.join()
        assert [type(e) for e in errors] == [ResolutionEnded]
        assert "already ended as failed" in str(errors[0])
        res = store.get_resolution("r0")
        assert res is not None and res.state == "failed" and res.heartbeat_at == beat_before
    finally:
        store.close()
