"""A rerun's driver token the database refuses to mint (a real PostgreSQL, its ``resolution_tokens`` table locked by
another session, as ``CREATE INDEX`` or an operator's ``LOCK TABLE`` does, past the server's bound on lock waits): the
request is answered 503 in the lock's words (its client sends it again: a new claim), and its claim is recorded failed
at once, in true words naming the mint's failure and what to do; nothing launched, the claim beaten no more. Was: the
claim left held and silent, failed by the sweeper seconds later as "the server that was launching this rerun stopped
...: re-run it", though the server lived."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from sematic_k8s.specs import DriverSpec
from sematic_k8s.store.records import CLAIMED, Batch, utcnow
from sematic_k8s_server import auth, unminted
from sematic_k8s_server.config import RerunConfig, ServerConfig
from serving import Served, record_resolution, serve

REPO = "127.0.0.1:5000/pipelines"
IMAGE = f"{REPO}@sha256:" + "ab" * 32
STORAGE = "s3://sk-mint/artifacts"


def test_a_rerun_whose_token_the_database_refuses_is_recorded_failed_at_once_in_true_words(
        tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMATIC_K8S_DB_LOCK_TIMEOUT", "1")  # the server's bound on lock waits (in this process)
    launched: list[DriverSpec] = []

    def launch(spec: DriverSpec, env: Mapping[str, str]) -> None:
        launched.append(spec)

    config = ServerConfig(reruns=RerunConfig(image_repositories=(REPO,), storage_url=STORAGE))
    with serve(tmp_path, postgres_url, config=config, rerun_launcher=launch) as s, \
            psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as locker:
        root = record_resolution(s.url, s.key, kind="cloud", state="failed", image=IMAGE, storage_url=STORAGE)
        locker.execute("LOCK TABLE resolution_tokens IN SHARE MODE")  # reads go on; the token's insert waits
        with s.client() as c:
            r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
        locker.rollback()
        assert r.status_code == 503 and r.headers["Retry-After"] == "5", r.text
        [claim] = [res for res in s.store.list_resolutions() if res.rerun_of == root]
        assert r.json()["detail"] == (  # true of this route: its claim was recorded (failed), not "nothing of it"
            "the metadata database's table resolution_tokens is locked by another session (a migration or "
            "maintenance?) for longer than 1 s, so the rerun's driver token could not be minted and no driver was "
            f"started (rerun {claim.id} recorded failed): send it again once that session lets the lock go (pg_locks "
            "names it)"), r.text
        assert claim.state == "failed", (claim.state, claim.error)  # at once: no sweep needed
        assert claim.error == (
            "the server could not mint its driver's token, so no driver was started: the metadata database's table "
            "resolution_tokens is locked by another session (a migration or maintenance?) for longer than 1 s: re-run "
            "it once that has passed"), claim.error
        assert launched == [] and claim.id not in s.server.claim_beats._held  # nothing launched, beaten no more
        with s.client() as c:  # the lock let go: the same rerun asked again is a new claim, launched
            again = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
        assert again.status_code == 202, again.text
        assert [spec.root_id for spec in launched] == [again.json()["resolution_id"]]


def _claimed(s: Served, res_id: str) -> None:
    """A rerun's claim, as the rerun route records it before its token's mint (held and beaten by this server)."""
    now = utcnow()
    s.store.write(Batch(new_resolutions=[{"id": res_id, "root_func_path": "m:p", "state": CLAIMED, "created_at": now,
                                          "heartbeat_at": now, "held_by": s.server.claim_beats.holder}]))
    s.server.claim_beats.hold(res_id)


def _minted(s: Served, res_id: str) -> BaseException:
    """The failure of the rerun route's mint of ``res_id``'s token, met for real."""
    with pytest.raises(Exception) as failed:
        auth.mint_token(s.store.engine, res_id, minted_by=None, lifetime=dt.timedelta(hours=1))
    return failed.value


def test_a_claim_whose_mint_found_the_request_pool_used_up_ends_at_once_without_waiting_on_it(
        tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's request pool (here 1 connection, waited 1 s for) held by a slower request when a rerun's token is
    minted: the mint's ``TimeoutError`` ends the claim through the claim beats' own connections, in the pool's 503
    words, beaten no more; the answer is the mint's 503. Was: the end waited on the same used-up pool another pool
    timeout, failed too (a traceback logged), and left the claim held and silent, failed by the sweeper as "the
    server that was launching this rerun stopped" though it lived."""
    monkeypatch.setenv("SEMATIC_K8S_DB_POOL_SIZE", "1")
    monkeypatch.setenv("SEMATIC_K8S_DB_POOL_TIMEOUT", "1")
    with serve(tmp_path, postgres_url) as s:
        _claimed(s, "c1")
        with s.store.engine.connect() as held:  # the pool's one connection, as a slower request holds it
            refused = _minted(s, "c1")
            assert isinstance(refused, sa.exc.TimeoutError), refused
            assert unminted.ended(s.server, "c1", refused) is refused  # answered in its words (a 503)
            state, error = held.execute(sa.text("SELECT state, error FROM resolutions WHERE id = 'c1'")).one()
        assert (state, error) == ("failed", (
            "the server could not mint its driver's token, so no driver was started: the server's 1 database "
            "connections are all in use by slower requests: tried again after Retry-After; raise "
            "$SEMATIC_K8S_DB_POOL_SIZE (the server's pool size) if this lasts: re-run it once that has passed"))
        assert "c1" not in s.server.claim_beats._held  # beaten no more


def test_a_claim_whose_mint_could_not_connect_records_no_host_port_or_user(
        tmp_path: Path, postgres_url: str) -> None:
    """The database refusing the server's connections at the mint (its operator's ``ALLOW_CONNECTIONS false``, the
    server's sessions ended: as a database stopped a moment): the claim's error, which any key reads, says the
    metadata database is unavailable in the 503's words, never the driver's (its host, port and user: the log's).
    Was: "OperationalError: (psycopg.OperationalError) connection failed: connection to server at \"127.0.0.1\",
    port ... failed: ..." recorded on the claim."""
    database = postgres_url.rsplit("/", 1)[1]
    url = sa.engine.make_url(postgres_url)
    operator = postgres_url.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with serve(tmp_path, postgres_url) as s, psycopg.connect(operator, autocommit=True) as dba:
        _claimed(s, "c1")
        dba.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            dba.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
            refused = _minted(s, "c1")
        finally:
            dba.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        said = str(refused)
        assert isinstance(refused, sa.exc.OperationalError) and str(url.port) in said, said  # its words name them
        assert unminted.ended(s.server, "c1", refused) is refused
        claim = s.store.get_resolution("c1")
        assert claim is not None and claim.state == "failed", claim
        assert claim.error == ("the server could not mint its driver's token, so no driver was started: the metadata "
                               "database is unavailable (OperationalError; the server's log has its words): re-run it "
                               "once that has passed"), claim.error
        for named in (url.host, str(url.port), url.username, database):
            assert named not in claim.error, named


def test_a_rerun_whose_launcher_failed_with_the_request_pool_used_up_is_recorded_failed_at_once(
        tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's request pool (here 1 connection, waited 1 s for) held by a slower request when a rerun's launcher
    fails: its claim ends through the claim beats' own connections, as a failed mint's, in the launcher's words,
    beaten no more; the answer is the launcher's 502 (its token's revoke, through the pool, only logged: the token is
    refused once its resolution ended). Was: the revoke, then the end, waited on the used-up pool, the answer was the
    pool's 503 and the claim was left held and silent, failed by the sweeper as "the server that was launching this
    rerun stopped" though it lived."""
    monkeypatch.setenv("SEMATIC_K8S_DB_POOL_SIZE", "1")
    monkeypatch.setenv("SEMATIC_K8S_DB_POOL_TIMEOUT", "1")
    held: list[sa.Connection] = []

    def launch(spec: DriverSpec, env: Mapping[str, str]) -> None:  # the pool's one connection held, as by a request
        held.append(s.store.engine.connect())
        raise RuntimeError("the cluster refused the driver's Job")

    config = ServerConfig(reruns=RerunConfig(image_repositories=(REPO,), storage_url=STORAGE))
    with serve(tmp_path, postgres_url, config=config, rerun_launcher=launch) as s:
        root = record_resolution(s.url, s.key, kind="cloud", state="failed", image=IMAGE, storage_url=STORAGE)
        try:
            with s.client() as c:
                r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
            [claim_id] = [res.id for res in held[0].execute(
                sa.text("SELECT id FROM resolutions WHERE rerun_of = :root"), {"root": root})]
            state, error = held[0].execute(sa.text("SELECT state, error FROM resolutions WHERE id = :id"),
                                           {"id": claim_id}).one()
        finally:
            for conn in held:
                conn.close()
        assert r.status_code == 502, r.text
        words = ("could not start the rerun's driver with the test launcher: RuntimeError: the cluster refused the "
                 "driver's Job")
        assert r.json()["detail"] == words, r.text
        assert (state, error) == ("failed", words)  # at once: no sweep needed
        assert claim_id not in s.server.claim_beats._held  # beaten no more
