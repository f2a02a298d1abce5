"""Against a real PostgreSQL (conftest's throwaway cluster): Alembic migrations match the models, and
pipelines resolve on PostgreSQL both embedded (SqlStore) and through the server."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import sematic_k8s as sk
from sematic_k8s.store import schema
from sematic_k8s.store.sql import SqlStore
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
        assert tables == {"resolutions", "runs", "artifacts", "api_keys", "resolution_tokens", "alembic_version"}
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
    through a server on the same database: every field of each hit's Run as SQLite has it."""
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
    with serve(tmp_path, postgres_url) as s:
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
