"""What a PostgreSQL operator does to the server's database, caused for real on a running server process: the database
made read-only (``default_transaction_read_only``, as a failover's standby is), its connections used up by other
clients (``max_connections``), a table locked past the server's bound on lock waits (``LOCK TABLE``). Clients are
told in plain words, with a 503 they retry, nothing recorded is lost, and the server recovers on its own once the
operator is done."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

import fault_pipelines as fp
import sematic_k8s as sk
from outages import ServerProcess, called_in, running
from sematic_k8s.errors import ServerError
from sematic_k8s.store.http import STATEMENT_TIMEOUT, HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s.store.sql import SqlStore
from sematic_k8s.store.wire import batch_to_json, dumps
from serving import create_api_key, server_process, wait_for
from test_outages import OUTAGE, all_recorded, resolve_in_thread

READ_ONLY = "the metadata database is read-only"


def _all_recorded_in(postgres_url: str, root_id: str) -> None:
    """``all_recorded`` read by a store of its own on the database, closed after."""
    store = SqlStore(postgres_url, create=False)
    try:
        all_recorded(store, root_id)
    finally:
        store.close()


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


def _fill(dba: psycopg.Connection, db_url: str, hogs: list[psycopg.Connection]) -> None:
    """Every connection the cluster takes held in ``hogs``, none of them the server's: its sessions are ended and
    their slots taken, again while one of its threads (the sweeper, the listener) got one back meanwhile."""
    database, dsn = db_url.rsplit("/", 1)[1], db_url.replace("postgresql+psycopg://", "postgresql://")
    for _ in range(10):
        ours = [hog.info.backend_pid for hog in hogs]
        servers = dba.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                              "ALL(%s)", (database, ours)).fetchall()
        if hogs and not servers:
            return
        time.sleep(0.2)  # the ended sessions' slots freed
        with contextlib.suppress(psycopg.OperationalError):
            while len(hogs) < 50:
                hogs.append(psycopg.connect(dsn))
        assert len(hogs) < 50
    raise AssertionError("the server's sessions kept coming back")


def _new_resolution() -> Batch:
    batch = Batch()
    batch.add_resolution(ResolutionRecord(id=uuid.uuid4().hex, root_func_path="pipes:pipeline", state="running",
                                          created_at=utcnow()))
    return batch


@dataclasses.dataclass
class _Resolving:
    """A real server (``server``, up since ``up``: ``time.monotonic()``) and a driver resolving ``fp.gated(3, gate)``
    (``f``) through it on ``thread``, what the resolution gave or raised in ``outcome``."""

    server: ServerProcess
    up: float
    gate: Path
    f: sk.Future
    thread: threading.Thread
    outcome: dict


@contextlib.contextmanager
def _resolving_gated(tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch,
                     env: dict[str, str] | None = None) -> Iterator[_Resolving]:
    """A server process on ``postgres_url`` (``env`` added to its environment), running for the block, and a driver
    resolving ``fp.gated(3, gate)`` through it, held at its gated step once the block starts."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    server = ServerProcess(tmp_path, db_url=postgres_url, env=env)
    with running(server):
        up = time.monotonic()
        gate = tmp_path / "gate"
        f = fp.gated(3, str(gate))
        thread, outcome = resolve_in_thread(f, sk.LocalResolver(home=tmp_path, server=server.url, max_parallelism=2))
        wait_for(lambda: Path(f"{gate}.started").exists() or outcome, 60, what="the gated step")
        yield _Resolving(server, up, gate, f, thread, outcome)


def test_a_read_only_database_is_a_503_its_drivers_ride_out(tmp_path: Path, postgres_url: str, monkeypatch) -> None:
    """The database made read-only under a resolution (``ALTER DATABASE ... SET default_transaction_read_only = on``,
    its sessions ended so that they start again read-only, as on a standby after a failover): a write is answered 503
    saying so (was: 422 "bad batch: cannot execute ... in a read-only transaction", which the driver does not retry:
    its resolution failed), the driver retries it, and once the operator sets it back (its sessions left as they are:
    the server drops them itself) the resolution finishes with every step recorded."""
    database = postgres_url.rsplit("/", 1)[1]
    with _resolving_gated(tmp_path, postgres_url, monkeypatch) as r, _operator(postgres_url) as dba:
        dba.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        assert _end_sessions(dba, database) > 0
        client = HttpStore(r.server.url, retry_window=0)
        try:
            with pytest.raises(ServerError) as refused:
                client.write(_new_resolution())
        finally:
            client.close()
        assert refused.value.status == 503 and READ_ONLY in str(refused.value), refused.value
        r.gate.touch()  # the gated step and the last addition finish while the database is read-only
        wait_for(lambda: r.server.log.read_text().count(READ_ONLY) >= 2, 60, what="a write of the driver refused")
        time.sleep(OUTAGE)
        dba.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = off')
        r.thread.join(120)
        assert r.outcome.get("value") == 3 + 1 + 2, r.outcome
        _all_recorded_in(postgres_url, r.f.id)


def _sessions(dba: psycopg.Connection, database: str) -> int:
    """The sessions ``database`` has had (``pg_stat_database.sessions``: counted as each one's statistics are
    flushed, at its end at the latest)."""
    return int(dba.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (database,)).fetchone()[0])


def test_writes_refused_read_only_reconnect_a_bounded_number_of_times_and_land_once_writable(
        tmp_path: Path, postgres_url: str) -> None:
    """The database made read-only (``default_transaction_read_only``, its sessions ended), then 30 writes sent to a
    server process over HTTP, each answered 503 read-only: the server's sessions of the database number no more than
    its pool and a few, not one (and more) for each write; the setting undone, a write lands, no restart. Was: each
    refused write dropped the whole pool, and every write and read after it connected afresh (30 writes: 31
    sessions)."""
    database = postgres_url.rsplit("/", 1)[1]
    writes = 30
    server = ServerProcess(tmp_path, db_url=postgres_url, env={"SEMATIC_K8S_DB_POOL_SIZE": "3"})
    with _operator(postgres_url) as dba:
        with running(server):
            client = HttpStore(server.url, retry_window=0)
            try:
                client.write(_new_resolution())
                dba.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
                _end_sessions(dba, database)
                before = _sessions(dba, database)
                for _ in range(writes):
                    with pytest.raises(ServerError) as refused:
                        client.write(_new_resolution())
                    assert refused.value.status == 503 and READ_ONLY in str(refused.value), refused.value
                dba.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = off')
            finally:
                client.close()
            landed = HttpStore(server.url)  # tried for its retry window: the pool's read-only sessions dropped
            try:
                landed.write(_new_resolution())
            finally:
                landed.close()
        wait_for(lambda: not dba.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                         (database,)).fetchone()[0], 30, what="the server's sessions ended")
        made = _sessions(dba, database) - before
    assert made <= 3 + 6, f"{made} sessions for {writes} writes refused read-only"


def test_a_read_only_database_past_the_heartbeat_timeout_kills_no_live_resolution(
        tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database read-only (a failover's standby the URL reaches for a while) for longer than the heartbeat timeout
    while a resolution's gated step waits: its beats are answered 503 and retried; the server, which still reads,
    judges no silence until the timeout has passed since its last refused write, so the beats sent again land first
    and the live resolution is not marked dead; it resolves. Was: the first sweep once the database took writes
    marked it failed ("the resolver stopped responding"), its next write refused: ResolutionEnded. (A timeout of
    10 s: the beats' retries come up to 4 s apart, so a shorter one could pass before the next lands.)"""
    timing = {"SEMATIC_K8S_HEARTBEAT_TIMEOUT": "10", "SEMATIC_K8S_HEARTBEAT_INTERVAL": "0.5",
              "SEMATIC_K8S_RETRY_WINDOW": "90"}
    for name, value in timing.items():
        monkeypatch.setenv(name, value)
    database = postgres_url.rsplit("/", 1)[1]
    with _resolving_gated(tmp_path, postgres_url, monkeypatch, env=timing) as r, _operator(postgres_url) as dba:
        time.sleep(max(0.0, r.up + 10.5 - time.monotonic()))  # the server judges silence by now (up for the timeout)
        dba.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        try:
            assert _end_sessions(dba, database) > 0
            wait_for(lambda: READ_ONLY in r.server.log.read_text(), 30, what="a beat refused")
            time.sleep(14)  # past the heartbeat timeout, within the retry window
        finally:
            dba.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = off')
        time.sleep(25)  # more than twice the timeout with writes taken again: the server sweeps meanwhile
        assert not r.outcome, r.outcome
        r.gate.touch()
        r.thread.join(120)
        assert r.outcome.get("value") == 3 + 1 + 2, r.outcome
        _all_recorded_in(postgres_url, r.f.id)


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "local"])
def test_max_connections_reached_is_a_503_whose_cause_the_log_names(tmp_path: Path, keyed: bool) -> None:
    """Other clients hold every connection PostgreSQL takes (``max_connections``, 20 here) while the server's own are
    ended: a request, with a key (whose credential the server cannot check) or without (local mode: the route cannot
    read), is answered 503 with ``Retry-After``, saying the database has no connection to spare, and the server's log
    says why in the database's words, once for the outage; the connections freed, it is served again, and the log
    says so. Was: 503 "the metadata database is unavailable: OperationalError", and nothing in the log (with a key);
    without one, the database's words with its host and port, and a line in the log for each request."""
    from pgcluster import create_database, own_cluster

    with own_cluster() as cluster:
        cluster.stop()
        cluster.max_connections = 20
        cluster.start()
        db_url = create_database(cluster.url, "full")
        key = create_api_key(db_url, tmp_path, "dba")
        mode = ("--db-url", db_url) if keyed else ("--db-url", db_url, "--local")
        with server_process(tmp_path, *mode) as (_, url), _operator(db_url) as dba, \
                httpx.Client(base_url=url, headers={"X-API-Key": key} if keyed else {}, timeout=30) as client:
            assert client.get("/api/v1/resolutions").status_code == 200
            log = next(tmp_path.glob(f"server-{url.rsplit(':', 1)[1]}.log"))
            hogs: list[psycopg.Connection] = []
            try:
                _fill(dba, db_url, hogs)
                refused = client.get("/api/v1/resolutions")
                assert refused.status_code == 503 and refused.headers["Retry-After"] == "5", refused.text
                assert "the metadata database has no connection to spare" in refused.json()["detail"], refused.text
                assert "127.0.0.1" not in refused.text  # where the database is: the log's alone
                said = [line for line in log.read_text().splitlines() if "too many clients already" in line]
                assert len(said) == 1, said
                assert ("cannot check credentials" if keyed else "GET /api/v1/resolutions") in said[0], said
                assert client.get("/api/v1/resolutions").status_code == 503
                assert len([line for line in log.read_text().splitlines() if "too many clients" in line]) == 1
            finally:
                for hog in hogs:
                    hog.close()
            wait_for(lambda: client.get("/api/v1/resolutions").status_code == 200, 60, what="the server served again")
            wait_for(lambda: "the metadata database answers again" in log.read_text(), 10, what="the log saying so")


@pytest.mark.parametrize(("language", "role", "keyed"),
                         [("de", "postgres", True), ("de", "app", False), ("en", "app", True)],
                         ids=["german-too-many-clients-keyed", "german-slots-reserved-local",
                              "english-slots-reserved-keyed"])
def test_no_connection_to_spare_is_told_so_whatever_the_language_and_role(
        tmp_path: Path, language: str, role: str, keyed: bool) -> None:
    """Every connection the database takes held by other clients (``max_connections`` 20), the server's ended: a
    request is answered 503 saying the database has no connection to spare, whatever the language of its words (German
    ``lc_messages``: "tut mir leid, schon zu viele Verbindungen") and whether the server's role is a superuser or not
    (``app``: refused while the slots PostgreSQL reserves for superusers are free, "remaining connection slots are
    reserved ..."): told by the refusal's SQLSTATE, 53300, which libpq keeps to itself, read from a traced attempt of
    the same connection. Was: 503 "the metadata database is unavailable (OperationalError; ...)" for all three (only
    PostgreSQL's English "too many clients already" was told, for a superuser). Served again once they are let go."""
    from pgcluster import create_database, own_cluster

    with own_cluster() as cluster:
        cluster.stop()
        cluster.max_connections, cluster.language = 20, (None if language == "en" else language)
        cluster.start()
        server_url = cluster.url.replace("postgres@", f"{role}@")
        with psycopg.connect(cluster.url.replace("postgresql+psycopg://", "postgresql://") + "/postgres",
                             autocommit=True) as su:
            if role != "postgres":
                su.execute(f"CREATE ROLE {role} LOGIN CREATEDB")
        db_url = create_database(server_url, "voll")
        key = create_api_key(db_url, tmp_path, "dba")
        mode = ("--db-url", db_url) if keyed else ("--db-url", db_url, "--local")
        with server_process(tmp_path, *mode) as (_, url), _operator(cluster.url + "/voll") as dba, \
                httpx.Client(base_url=url, headers={"X-API-Key": key} if keyed else {}, timeout=30) as client:
            assert client.get("/api/v1/resolutions").status_code == 200
            hogs: list[psycopg.Connection] = []
            try:
                _fill(dba, db_url, hogs)
                with pytest.raises(psycopg.OperationalError) as refused_here:
                    psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"))
                said = str(refused_here.value)  # the test's premise: the refusal in the cluster's language
                assert ("too many clients" in said or "remaining connection slots" in said) == (language == "en"), said
                for _ in range(2):
                    refused = client.get("/api/v1/resolutions")
                    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5", refused.text
                    assert "the metadata database has no connection to spare" in refused.json()["detail"], \
                        refused.text
                    assert "127.0.0.1" not in refused.text
            finally:
                for hog in hogs:
                    hog.close()
            wait_for(lambda: client.get("/api/v1/resolutions").status_code == 200, 60, what="the server served again")


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "local"])
def test_a_database_shutting_down_in_another_language_is_told_to_take_no_connections_now(
        tmp_path: Path, keyed: bool) -> None:
    """A cluster whose words are German shut down smartly (``pg_ctl stop -m smart``: it waits for the sessions it
    has, an operator's here, and refuses new ones, "das Datenbanksystem fährt herunter", SQLSTATE 57P03), the
    server's sessions ended: a request, with a key or without, is answered 503 saying the database takes no
    connections now, told by the refusal's SQLSTATE (libpq keeps it to itself: read from a traced attempt); started
    again, it is served. Was: "the metadata database is unavailable (OperationalError ...)", in English as in
    German."""
    import subprocess

    from pgcluster import _as_postgres, create_database, own_cluster

    with own_cluster() as cluster:
        cluster.stop()
        cluster.language = "de"
        cluster.start()
        db_url = create_database(cluster.url, "halt")
        key = create_api_key(db_url, tmp_path, "dba")
        mode = ("--db-url", db_url) if keyed else ("--db-url", db_url, "--local")
        with server_process(tmp_path, *mode) as (_, url), \
                httpx.Client(base_url=url, headers={"X-API-Key": key} if keyed else {}, timeout=30) as client:
            assert client.get("/api/v1/resolutions").status_code == 200
            with _operator(db_url) as dba:
                subprocess.run(_as_postgres([str(cluster.bin_dir / "pg_ctl"), "-D", str(cluster.data), "-m", "smart",
                                             "-W", "stop"]), check=True, capture_output=True)
                with pytest.raises(psycopg.OperationalError) as refused_here:
                    psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"))
                assert "fährt herunter" in str(refused_here.value), refused_here.value  # the test's premise
                _end_sessions(dba, "halt")
                for _ in range(2):
                    refused = client.get("/api/v1/resolutions")
                    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5", refused.text
                    assert "the metadata database takes no connections now" in refused.json()["detail"], refused.text
                    assert "127.0.0.1" not in refused.text
            wait_for(lambda: not (cluster.data / "postmaster.pid").exists(), 60, what="the cluster stopped")
            cluster.start()
            wait_for(lambda: client.get("/api/v1/resolutions").status_code == 200, 60, what="the server served again")


TIMED_OUT = "the metadata database canceled this request's query at its statement_timeout (300ms, set for"


def test_a_query_past_the_statement_timeout_is_a_504_in_its_words_tried_a_few_times(
        tmp_path: Path, postgres_url: str) -> None:
    """An operator's ``statement_timeout`` (300 ms on the database) and a lock another session holds on
    ``resolutions``: a listing, canceled at the timeout at every try, is answered 504 "the metadata database canceled
    this request's query at its statement_timeout (300ms, ...): raise it ... or ask for less", which the HTTP store
    sends a few times only (its retry window here is 600 s), and the server's log says it once for the route; a
    driver's write canceled so is sent again, and lands once the lock is released. Was: 503 "the metadata database
    is unavailable: QueryCanceled: canceling statement due to statement timeout", retried for the whole window, and
    a line in the log for each try."""
    database = postgres_url.rsplit("/", 1)[1]
    with _operator(postgres_url) as dba:
        dba.execute(f"ALTER DATABASE \"{database}\" SET statement_timeout = '300ms'")
    server = ServerProcess(tmp_path, db_url=postgres_url)
    with running(server), psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as locker:
        locker.execute("LOCK TABLE resolutions IN ACCESS EXCLUSIVE MODE")
        listed: dict[str, BaseException] = {}

        def listing() -> None:
            client = HttpStore(server.url, retry_window=600)
            try:
                client.list_resolutions()
            except ServerError as e:
                listed["error"] = e
            finally:
                client.close()

        lister = threading.Thread(target=listing, daemon=True)
        lister.start()
        wait_for(lambda: not lister.is_alive(), 60, what="the listing refused (not retried for the window)")
        error = listed.get("error")
        assert isinstance(error, ServerError) and error.status == 504 and TIMED_OUT in str(error), error
        assert "ALTER ROLE ... SET statement_timeout" in str(error) and "ask for less" in str(error), error
        said = [line for line in server.log.read_text().splitlines() if "statement_timeout (300ms)" in line]
        assert len(said) == 1 and "GET /api/v1/resolutions" in said[0], said

        batch = _new_resolution()
        thread, outcome = _write_in_thread(server.url, batch)
        wait_for(lambda: "POST /api/v1/store/write: the metadata database canceled" in server.log.read_text(), 30,
                 what="the driver's write canceled")
        locker.rollback()  # the lock released: the write's next try lands
        thread.join(60)
        assert outcome == {"written": True}, outcome
    store = SqlStore(postgres_url, create=False)
    try:
        assert store.get_resolution(batch.new_resolutions[0]["id"]) is not None
    finally:
        store.close()


def _write_in_thread(url: str, batch: Batch) -> tuple[threading.Thread, dict[str, object]]:
    """``batch`` written through a driver's HTTP store (its default retry window) on a thread of its own."""
    outcome: dict[str, object] = {}

    def write() -> None:
        client = HttpStore(url)
        try:
            client.write(batch)
            outcome["written"] = True
        except Exception as e:  # noqa: BLE001 - the test reads it
            outcome["error"] = e
        finally:
            client.close()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread, outcome


def test_a_server_starting_while_another_migrates_past_the_statement_timeout_waits_for_it(
        tmp_path: Path, postgres_url: str) -> None:
    """An operator's ``statement_timeout`` on the database (300 ms, as on its role) is for the application's queries:
    a server starting while another process holds the migration lock (a replica migrating, 6 s) waits for it, and
    migrates, past that timeout, then starts (its queries keep the timeout). Was: each try's wait for the lock
    canceled at 300 ms, said as "Waiting for the metadata database (... canceling statement due to statement timeout)"
    (the database answers: it is not unreachable), tried again every second; a migration of its own longer than the
    timeout would be canceled and rolled back at every try, until the start window ended (not caused here). Nor does the
    server's bound on its requests' lock waits ($SEMATIC_K8S_DB_LOCK_TIMEOUT, 1 s here) cut that wait short."""
    from sematic_k8s.store.schema import PG_LOCK_ID

    database = postgres_url.rsplit("/", 1)[1]
    with _operator(postgres_url) as dba:
        dba.execute(f"ALTER DATABASE \"{database}\" SET statement_timeout = '300ms'")
    # the server's bound on its requests' lock waits (1 s) is not the migration's either: it waits the 6 s
    server = ServerProcess(tmp_path, db_url=postgres_url, env={"SEMATIC_K8S_RETRY_WINDOW": "3",
                                                               "SEMATIC_K8S_DB_LOCK_TIMEOUT": "1"})
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as migrating:
        migrating.execute("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK_ID,))
        with called_in(6, migrating.commit), running(server):
            pass
    log = server.log.read_text()
    assert "statement timeout" not in log, log
    store = SqlStore(postgres_url, create=False)
    try:
        with store.engine.connect() as conn:  # the server's queries keep the operator's timeout
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "300ms"
    finally:
        store.close()


def test_every_session_of_the_server_terminated_mid_resolution_loses_nothing(
        tmp_path: Path, postgres_url: str, monkeypatch) -> None:
    """Held (kept as a test): an operator's ``pg_terminate_backend`` on every session of the server (its pool's idle
    ones, the events listener, and the writes under way, each waiting mid-transaction behind a lock the operator
    holds on ``resolutions`` and ``runs``): the writes cut are answered 503 ("AdminShutdown: terminating connection
    due to administrator command"), the driver sends them again, the pool connects afresh (pre-ping), the listener
    connects again, and the resolution finishes with every step recorded once."""
    database = postgres_url.rsplit("/", 1)[1]
    with _resolving_gated(tmp_path, postgres_url, monkeypatch) as r, _operator(postgres_url) as dba, \
            psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as locker:
        locker.execute("LOCK TABLE resolutions, runs IN ACCESS EXCLUSIVE MODE")
        r.gate.touch()  # the gated step's end is written, and waits for the lock
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
        wait_for(lambda: dba.execute(waiting, (database,)).fetchone()[0] > 0, 60, what="a write waiting for the lock")
        ended = dba.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid NOT IN "
                            "(pg_backend_pid(), %s)", (database, locker.info.backend_pid)).fetchall()
        assert len(ended) >= 2  # the waiting write and the listener, at least
        locker.rollback()
        r.thread.join(120)
        assert r.outcome.get("value") == 3 + 1 + 2, r.outcome
        _all_recorded_in(postgres_url, r.f.id)  # each of its 5 runs once
        log = r.server.log.read_text()
        assert "terminating connection due to administrator command" in log, log
        wait_for(lambda: "listener is connected again" in r.server.log.read_text(), 30, what="the listener back")


def test_a_table_locked_past_the_bound_is_a_503_its_driver_rides_out(tmp_path: Path, postgres_url: str,
                                                                     monkeypatch) -> None:
    """An operator's ``LOCK TABLE runs IN ACCESS EXCLUSIVE MODE`` (a manual migration) held past the server's bound
    on lock waits ($SEMATIC_K8S_DB_LOCK_TIMEOUT, 2 s here) while a driver resolves through the server: each request
    needing ``runs`` is answered 503 with ``Retry-After`` in true words once the bound passes (its transaction rolled
    back), the driver's write of its step's end is sent again and again, and lands once the lock is let go: every run
    recorded once. A listing that needs no locked table answers meanwhile. Was: every such request waited as long as
    the lock was held (a thread and a pooled connection each), its client giving up at 60 s and sending it again
    beside it, until the pool's 50 connections were used up and everything failed."""
    database = postgres_url.rsplit("/", 1)[1]
    locked = "the metadata database's table runs is locked by another session (a migration or maintenance?) for " \
             "longer than 2 s"
    with _resolving_gated(tmp_path, postgres_url, monkeypatch, {"SEMATIC_K8S_DB_LOCK_TIMEOUT": "2"}) as r, \
            _operator(postgres_url) as dba, httpx.Client(base_url=r.server.url, timeout=30) as client, \
            psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as locker:
        locker.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        r.gate.touch()  # the gated step's end is written, and waits for the lock
        refused = client.get("/api/v1/runs")
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5", refused.text
        assert refused.json()["detail"].startswith(locked), refused.text
        assert client.get("/api/v1/resolutions").status_code == 200  # needs no locked table
        wait_for(lambda: r.server.log.read_text().count(f"POST /api/v1/store/write: {locked}") >= 2, 60,
                 what="the driver's write refused twice")
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
        assert dba.execute(waiting, (database,)).fetchone()[0] <= 2  # no request left waiting beside its retries
        assert not r.outcome, r.outcome
        locker.rollback()
        r.thread.join(120)
        assert r.outcome.get("value") == 3 + 1 + 2, r.outcome
        _all_recorded_in(postgres_url, r.f.id)  # each of its 5 runs once


def test_beats_refused_for_a_locked_table_leave_their_resolution_live(tmp_path: Path, postgres_url: str,
                                                                      monkeypatch) -> None:
    """The beats of a live resolution refused past the bound on lock waits (``LOCK TABLE resolutions`` held longer
    than the heartbeat timeout, 10 s here; the bound 1 s) leave it live: the server judges no silence until the
    timeout has passed since its last refusal for a lock (as after its own outage), so the beat sent again once the
    lock is let go lands before any marking. Unbounded, the beat waited in the server, queued before any marking, and
    landed first; bounded without that, a sweep right after the lock ended found the resolution silent, and marked it
    dead, its driver's next write refused."""
    refused = "POST /api/v1/store/write: the metadata database's table resolutions is locked by another session"
    env = {"SEMATIC_K8S_DB_LOCK_TIMEOUT": "1", "SEMATIC_K8S_HEARTBEAT_TIMEOUT": "10"}
    with _resolving_gated(tmp_path, postgres_url, monkeypatch, env) as r, \
            psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as locker:
        time.sleep(max(0.0, r.up + 10 - time.monotonic()))  # the server judges silence: up for the timeout
        locker.execute("LOCK TABLE resolutions IN ACCESS EXCLUSIVE MODE")
        silent = ("SELECT bool_and(clock_timestamp() AT TIME ZONE 'UTC' - heartbeat_at > interval '12 seconds') "
                  "FROM resolutions")  # the locker's session may read it
        wait_for(lambda: locker.execute(silent).fetchone()[0], 60, what="the resolution silent past the timeout")
        said = r.server.log.read_text().count(refused)
        wait_for(lambda: r.server.log.read_text().count(refused) > said, 30, what="a beat refused just now")
        locker.rollback()  # the beat is sent again after its Retry-After (5 s): sweeps come every 2.5 s
        r.gate.touch()
        r.thread.join(120)
        assert r.outcome.get("value") == 3 + 1 + 2, r.outcome
        _all_recorded_in(postgres_url, r.f.id)


def test_a_credential_check_past_the_bound_on_lock_waits_names_the_locked_table(tmp_path: Path,
                                                                                 postgres_url: str) -> None:
    """``LOCK TABLE api_keys`` held past the bound (1 s here): a request with a key, whose credential the server
    cannot check, is answered 503 with ``Retry-After`` naming the locked table (was: it waited as long as the lock was
    held; with the bound alone, "the metadata database is unavailable: TableLocked"); once let go, it is served."""
    key = create_api_key(postgres_url, tmp_path, "dba")
    with server_process(tmp_path, "--db-url", postgres_url, env={"SEMATIC_K8S_DB_LOCK_TIMEOUT": "1"}) as (_, url), \
            httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30) as client, \
            psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as locker:
        assert client.get("/api/v1/resolutions").status_code == 200
        locker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        refused = client.get("/api/v1/resolutions")
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5", refused.text
        assert refused.json()["detail"].startswith(
            "cannot check credentials: the metadata database's table api_keys is locked by another session "
            "(a migration or maintenance?) for longer than 1 s"), refused.text
        locker.rollback()
        assert client.get("/api/v1/resolutions").status_code == 200


def test_the_bound_on_lock_waits_costs_no_statement_of_a_requests_transaction(tmp_path: Path,
                                                                             postgres_url: str) -> None:
    """The server's bound on lock waits is set once per session, as its pool makes the connection, not at the begin of
    each transaction: PostgreSQL's own log of the server's statements (``log_statement = 'all'`` on its database) for
    20 requests has no ``SET LOCAL lock_timeout`` and no more ``SET lock_timeout`` than the server had sessions. Was:
    every transaction began with ``SET LOCAL lock_timeout`` (a round trip more each), 20 requests at least 20."""
    database = postgres_url.rsplit("/", 1)[1]
    with _operator(postgres_url) as dba:
        dba.execute(f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")
        pg_log = Path(dba.execute("SELECT current_setting('data_directory')").fetchone()[0]).parent / "pg.log"
    server = ServerProcess(tmp_path, db_url=postgres_url, env={"SEMATIC_K8S_DB_LOCK_TIMEOUT": "2"})
    with running(server), httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/api/v1/resolutions").status_code == 200  # the server's sessions made
        start = pg_log.stat().st_size
        for _ in range(20):
            assert client.get("/api/v1/resolutions").status_code == 200
        with pg_log.open("rb") as f:
            f.seek(start)
            said = f.read().decode(errors="replace")
    statements = [line for line in said.splitlines() if "LOG:  statement: " in line]
    assert len(statements) >= 20, said  # the requests' own, logged
    assert not [line for line in statements if "SET LOCAL lock_timeout" in line], said
    sessions = {line.split("[", 1)[1].split("]", 1)[0] for line in statements}
    assert len([line for line in statements if "SET lock_timeout" in line]) <= len(sessions), said


def test_behind_a_transaction_pooler_the_bound_is_each_transactions_and_no_session_setting_is_sent(
        tmp_path: Path, postgres_url: str) -> None:
    """$SEMATIC_K8S_DB_POOLER=transaction (PgBouncer's transaction pooling hands a server session to another client
    between transactions): PostgreSQL's own log of the server's statements (``log_statement = 'all'``) from its start
    through 20 requests has no session setting (no ``SET`` but ``SET LOCAL``, no ``set_config`` but a transaction's,
    no prepared statement, no ``LISTEN``: live events stay in the process), and each request's transaction sets its own
    bound (``set_config('lock_timeout', ..., true)``: ``SET LOCAL``), the operator's (``pg_settings``, 0.5 ms a read)
    read once per connection, not in each (was: each); a request behind ``LOCK TABLE runs`` is answered
    503 naming that bound (2 s). Was: the bound a session's ``SET lock_timeout``, made once as the pool connected: left
    on that server session for the pooler's next client, and none on the sessions the server's later transactions ran
    on; the live events' listener's ``LISTEN`` on a server session of the pooler's. Its start says once, in its log,
    that live events then stay in each process (was: said nowhere but the README)."""
    database = postgres_url.rsplit("/", 1)[1]
    with _operator(postgres_url) as dba:
        dba.execute(f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")
        pg_log = Path(dba.execute("SELECT current_setting('data_directory')").fetchone()[0]).parent / "pg.log"
    start = pg_log.stat().st_size
    env = {"SEMATIC_K8S_DB_LOCK_TIMEOUT": "2", "SEMATIC_K8S_DB_POOLER": "transaction"}
    server = ServerProcess(tmp_path, db_url=postgres_url, env=env)
    with running(server), httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(20):
            assert client.get("/api/v1/runs").status_code == 200
        root, run_id, heard, connected = uuid.uuid4().hex, uuid.uuid4().hex, [], threading.Event()

        def follow() -> None:  # live events, in the process that recorded them
            with httpx.Client(base_url=server.url, timeout=60) as c, \
                    c.stream("GET", f"/api/v1/events?root_id={root}") as r:
                for line in r.iter_lines():
                    connected.set()
                    if line.startswith("data: "):
                        heard.append(json.loads(line[6:]))
                        if any(e["type"] == "run" and e["id"] == run_id for e in heard):
                            return

        listener = threading.Thread(target=follow, daemon=True)
        listener.start()
        assert connected.wait(30)
        batch = Batch()
        batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:p", state="running", created_at=utcnow()))
        batch.add_run(RunRecord(id=run_id, root_id=root, parent_id=None, func_path="m:f", func_name="f",
                                state="created", created_at=utcnow()))
        client.post("/api/v1/store/write", content=dumps(batch_to_json(batch)),
                    headers={"Content-Type": "application/json"}).raise_for_status()
        listener.join(30)
        assert any(e["type"] == "run" and e["id"] == run_id for e in heard), heard
        with pg_log.open("rb") as f:
            f.seek(start)
            said = f.read().decode(errors="replace")
        with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as locker:
            locker.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
            refused = client.get("/api/v1/runs")
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "5", refused.text
            assert refused.json()["detail"].startswith(
                "the metadata database's table runs is locked by another session (a migration or maintenance?) for "
                "longer than 2 s"), refused.text
    statements = [line.split("LOG:  statement: ", 1)[1] for line in said.splitlines() if "LOG:  statement: " in line]
    assert len(statements) >= 40, said  # the requests' own, logged
    session_settings = [s for s in statements if re.search(r"set_config\([^)]*,\s*false\)", s, re.I)
                        or re.match(r"\s*(SET|RESET|PREPARE|DISCARD|LISTEN)\b(?!\s+LOCAL)", s, re.I)]
    assert not session_settings, session_settings
    assert not re.findall(r"LOG:  execute (?!<unnamed>)\S+", said)  # a named (prepared) statement's run
    bounded = [s for s in statements if re.search(r"set_config\('lock_timeout', ('\d+'|b::text), true\)", s)]
    assert len(bounded) >= 20, said
    asked = [s for s in bounded if "pg_settings" in s]  # the operator's bound, read once per connection a while
    assert 1 <= len(asked) and len(asked) * 4 <= len(bounded), (len(asked), len(bounded))
    told = [line for line in server.log.read_text().splitlines() if "live events do not cross" in line]
    assert len(told) == 1 and told[0].endswith(  # said once, at the start: what is lost, and what keeps it
        "$SEMATIC_K8S_DB_POOLER=transaction: live events do not cross server processes (a LISTEN needs a session of "
        "its own, which transaction pooling does not keep): with --workers N or several replicas, a dashboard follows "
        "only the writes of the server process it is connected to (the others' show on a reload); for all of them "
        "live, run one server process, or connect through PostgreSQL itself or a session-pooling PgBouncer (the "
        "setting unset)"
    ), told


def test_an_operators_shorter_lock_timeout_on_the_servers_role_is_kept(tmp_path: Path, postgres_url: str) -> None:
    """An operator's ``lock_timeout`` on the server's role (``ALTER ROLE ... SET lock_timeout = '500ms'``, on this
    database), shorter than the server's bound (5 s here), is the one its requests wait: a request behind ``LOCK TABLE
    runs`` is answered 503 naming 0.5 s. A longer one (``ALTER DATABASE``, 60 s) gives way to the bound. Was: every
    transaction's ``SET LOCAL lock_timeout`` replaced the operator's with the bound, 5 s."""
    database = postgres_url.rsplit("/", 1)[1]
    with _operator(postgres_url) as dba:
        dba.execute(f"ALTER DATABASE \"{database}\" SET lock_timeout = '60s'")
        dba.execute(f"ALTER ROLE postgres IN DATABASE \"{database}\" SET lock_timeout = '500ms'")
    server = ServerProcess(tmp_path, db_url=postgres_url, env={"SEMATIC_K8S_DB_LOCK_TIMEOUT": "5"})
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with running(server), httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/api/v1/runs").status_code == 200
        with psycopg.connect(dsn) as locker:
            locker.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
            refused = client.get("/api/v1/runs")
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "5", refused.text
            assert refused.json()["detail"].startswith(
                "the metadata database's table runs is locked by another session (a migration or maintenance?) for "
                "longer than 0.5 s"), refused.text
        with _operator(postgres_url) as dba:  # the role's undone: the database's 60 s gives way to the bound
            dba.execute(f"ALTER ROLE postgres IN DATABASE \"{database}\" RESET lock_timeout")
            _end_sessions(dba, database)
        wait_for(lambda: client.get("/api/v1/runs").status_code == 200, 30, what="the server's new sessions")
        with psycopg.connect(dsn) as locker:
            locker.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
            refused = client.get("/api/v1/runs")
            assert refused.status_code == 503, refused.text
            assert "for longer than 5 s" in refused.json()["detail"], refused.text


POOL_USED_UP = ("the server's 2 database connections are all in use by slower requests: tried again after Retry-After; "
                "raise $SEMATIC_K8S_DB_POOL_SIZE (the server's pool size) if this lasts")


def test_the_servers_own_pool_used_up_by_slower_requests_is_a_503_in_its_words_said_once(
        tmp_path: Path, postgres_url: str) -> None:
    """A server of 2 database connections ($SEMATIC_K8S_DB_POOL_SIZE) that waits 1 s for one
    ($SEMATIC_K8S_DB_POOL_TIMEOUT), its listings held behind an operator's ``LOCK TABLE resolutions`` (no bound on lock
    waits here): the requests that got no connection are answered 503 with ``Retry-After``, saying the server's 2
    connections are in use by slower requests and which setting to raise; the log says it once for the whole time;
    the lock let go, every held listing is answered 200, and the log says the connections are free again. Was: 503
    "the metadata database is unavailable: TimeoutError: QueuePool limit ...", a log line for each such request, and
    no setting of the pool's size."""
    env = {"SEMATIC_K8S_DB_POOL_SIZE": "2", "SEMATIC_K8S_DB_POOL_TIMEOUT": "1", "SEMATIC_K8S_DB_LOCK_TIMEOUT": "0"}
    with server_process(tmp_path, "--db-url", postgres_url, "--local", env=env) as (_, url), \
            httpx.Client(base_url=url, timeout=120) as client, \
            psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as locker:
        assert client.get("/api/v1/resolutions").status_code == 200
        log = next(tmp_path.glob(f"server-{url.rsplit(':', 1)[1]}.log"))
        locker.execute("LOCK TABLE resolutions IN ACCESS EXCLUSIVE MODE")
        answers: list[httpx.Response] = []

        def listing() -> None:
            answers.append(client.get("/api/v1/resolutions"))

        listings = [threading.Thread(target=listing, daemon=True) for _ in range(4)]  # 2 held at most: 2 refused
        for thread in listings:
            thread.start()
        wait_for(lambda: len(answers) >= 2, 60, what="the listings that got no connection answered")
        refused = client.get("/api/v1/resolutions")  # the pool still used up: refused too, not said again
        for answer in [*list(answers), refused]:
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "5", answer.text
            assert answer.json()["detail"] == POOL_USED_UP, answer.text
        said = [line for line in log.read_text().splitlines() if "database connections are all in use" in line]
        assert len(said) == 1 and "GET /api/v1/resolutions" in said[0], said
        assert "the metadata database is unavailable" not in log.read_text()
        locker.rollback()
        for thread in listings:
            thread.join(60)
        assert len(answers) == 4 and 200 in {a.status_code for a in answers}, [a.text for a in answers]
        assert client.get("/api/v1/resolutions").status_code == 200
        wait_for(lambda: "the server's database connections are no longer all in use" in log.read_text(), 10,
                 what="the log saying so")


def test_the_statement_timeout_a_504_names_is_asked_once_a_while_not_behind_a_used_up_pool(postgres_url: str) -> None:
    """The limit a statement-timeout 504 names (``dbfailures.statement_timeout``), asked of a real PostgreSQL (300 ms
    on the database) through an engine of 1 connection that waits 1 s for it: asked again while that connection is
    held by another request (as when slower requests use up the server's pool in a burst of canceled queries), it is
    told at once from what was asked, the same words. Was: each 504 asked it on a connection of its own, waiting for
    the pool, and here got none: the limit unknown."""
    import sqlalchemy as sa

    from sematic_k8s_server import dbfailures

    database = postgres_url.rsplit("/", 1)[1]
    with _operator(postgres_url) as dba:
        dba.execute(f"ALTER DATABASE \"{database}\" SET statement_timeout = '300ms'")
    engine = sa.create_engine(postgres_url, pool_size=1, max_overflow=0, pool_timeout=1)
    try:
        assert dbfailures.statement_timeout(engine) == "300ms"
        with engine.connect() as held:  # the pool's one connection, busy
            held.exec_driver_sql("SELECT 1")
            assert dbfailures.statement_timeout(engine) == "300ms"
    finally:
        engine.dispose()


def test_the_statement_timeout_is_asked_by_one_request_of_a_burst(postgres_url: str) -> None:
    """Two 504s at once, before either's ask of the limit was answered (the pool's one connection held by a slower
    request): one of them asks it, the other tells at once that it is not known yet. Was: each asked, on a
    connection of its own, waiting for the pool: 2 asks once the connection came back."""
    import sqlalchemy as sa

    from sematic_k8s_server import dbfailures

    database = postgres_url.rsplit("/", 1)[1]
    with _operator(postgres_url) as dba:
        dba.execute(f"ALTER DATABASE \"{database}\" SET statement_timeout = '300ms'")
    engine = sa.create_engine(postgres_url, pool_size=1, max_overflow=0, pool_timeout=60)
    asked: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda *a: asked.append(a[2]) if "current_setting('statement_timeout')" in a[2] else None)
    told: list[str | None] = []
    try:
        with engine.connect() as held:  # the pool's one connection, busy
            held.exec_driver_sql("SELECT 1")
            first = threading.Thread(target=lambda: told.append(dbfailures.statement_timeout(engine)))
            second = threading.Thread(target=lambda: told.append(dbfailures.statement_timeout(engine)))
            first.start()
            second.start()
            for _ in range(200):  # the one that does not ask answers at once (10 s at most)
                if told:
                    break
                time.sleep(0.05)
        first.join(60)
        second.join(60)
        assert sorted(told, key=lambda t: t or "") == [None, "300ms"] and len(asked) == 1, (told, asked)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def german_server() -> Iterator[str]:
    """A PostgreSQL cluster of the module's own whose messages are German (``lc_messages``: its operator's language),
    as :func:`~pgcluster.postgres_cluster` yields it."""
    from pgcluster import PgCluster, pg_bin

    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found")
    cluster = PgCluster(bin_dir)
    cluster.language = "de"
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.remove()


def _german(server_url: str, name: str) -> str:
    """A database ``name`` on ``server_url`` (German), checked to say its errors in German."""
    from pgcluster import create_database

    db_url = create_database(server_url, name)
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn, \
            pytest.raises(psycopg.errors.DivisionByZero) as said:
        conn.execute("SELECT 1/0")
    assert str(said.value) == "Division durch Null", said.value  # the words below are not English: the test's premise
    return db_url


def test_a_query_past_the_statement_timeout_is_a_504_whatever_the_language_of_the_databases_words(
        tmp_path: Path, german_server: str) -> None:
    """The database's messages in German (its ``lc_messages``: "storniere Anfrage wegen Zeitüberschreitung der
    Anfrage"), its ``statement_timeout`` 300 ms and ``resolutions`` locked: a listing is answered 504 in the server's
    words, told by SQLSTATE 57014 raised where PostgreSQL raises its statement timeout's (its source file and line,
    learned of the database), not by English words; a cancel request (``pg_cancel_backend``, the same SQLSTATE) is
    a 503 still. Was: 503 "the metadata database is unavailable: QueryCanceled: storniere Anfrage ...", retried by
    clients for their whole window."""
    db_url = _german(german_server, "zeit")
    database = db_url.rsplit("/", 1)[1]
    with _operator(db_url) as dba:
        dba.execute(f"ALTER DATABASE \"{database}\" SET statement_timeout = '300ms'")
    server = ServerProcess(tmp_path, db_url=db_url)
    dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
    with running(server), httpx.Client(base_url=server.url, timeout=30) as client, _operator(db_url) as dba:
        with psycopg.connect(dsn) as locker:
            locker.execute("LOCK TABLE resolutions IN ACCESS EXCLUSIVE MODE")
            answered = client.get("/api/v1/resolutions")
        assert answered.status_code == 504 and answered.json().get("reason") == STATEMENT_TIMEOUT, answered.text
        assert TIMED_OUT in answered.json()["detail"], answered.text

        dba.execute(f"ALTER DATABASE \"{database}\" SET statement_timeout = 0")
        _end_sessions(dba, database)  # the server's sessions start again without it
        with psycopg.connect(dsn) as locker:
            locker.execute("LOCK TABLE resolutions IN ACCESS EXCLUSIVE MODE")
            listing: dict[str, httpx.Response] = {}
            lister = threading.Thread(target=lambda: listing.setdefault("answer", client.get("/api/v1/resolutions")))
            lister.start()
            waiting = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
            wait_for(lambda: dba.execute(waiting, (database,)).fetchall(), 30, what="the listing waiting for the lock")
            dba.execute(f"SELECT pg_cancel_backend(pid) FROM ({waiting}) w", (database,))
            lister.join(30)
        canceled = listing["answer"]
        assert canceled.status_code == 503 and "QueryCanceled" in canceled.text, canceled.text


def test_a_row_lock_past_the_bound_names_its_table_whatever_the_language_of_the_databases_words(
        german_server: str) -> None:
    """A row another session holds (``SELECT ... FOR UPDATE``) and a statement reading two tables that waits for it past
    ``lock_timeout``: the table named is the row's, from the error's context in German ("beim Sperren von Tupel (0,1)
    in Relation »runs«"), as from PostgreSQL's English. Was: told by the English 'relation "runs"' alone, so None
    here (two tables in the statement; PostgreSQL points at none)."""
    from sematic_k8s.store.lockwait import LOCK_NOT_AVAILABLE, locked_table

    dsn = _german(german_server, "zeile").replace("postgresql+psycopg://", "postgresql://")
    statement = "SELECT * FROM runs JOIN labels ON labels.id = runs.id FOR UPDATE OF runs"
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE runs (id int PRIMARY KEY); CREATE TABLE labels (id int); "
                      "INSERT INTO runs VALUES (1); INSERT INTO labels VALUES (1)")
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as waiter:
        holder.execute("SELECT * FROM runs WHERE id = 1 FOR UPDATE")
        waiter.execute("SET lock_timeout = 100")
        with pytest.raises(psycopg.errors.LockNotAvailable) as refused:
            waiter.execute(statement)
    assert refused.value.sqlstate == LOCK_NOT_AVAILABLE and "Relation »runs«" in (refused.value.diag.context or "")
    assert locked_table(refused.value, statement) == "runs"


def test_a_start_the_database_answers_no_in_another_language_fails_at_once(tmp_path: Path, german_server: str) -> None:
    """A server started on a database that does not exist, or as a role that does not, of a cluster whose words are
    German ("Datenbank »fehlt« existiert nicht"): it fails at once, saying it cannot open the database, as in English
    (told by the refusal's SQLSTATE, 3D000 or class 28, which libpq keeps to itself, read from a traced attempt).
    Was: taken for a database that does not answer yet (only PostgreSQL's English words were read): "Waiting for the
    metadata database (...)" for the whole start window ($SEMATIC_K8S_RETRY_WINDOW, 600 s here) before it failed."""
    import os
    import subprocess
    import sys

    from serving import free_port, stop_process

    role_url = german_server.replace("postgres@", "niemand@") + "/postgres"
    env = {**os.environb, b"SEMATIC_K8S_RETRY_WINDOW": b"600"}
    latin1 = {**env, b"PGPASSWORD": b"d\xe9j\xe0"}  # libpq's own, not UTF-8 (was: UnicodeDecodeError, learning)
    for name, db_url, said, environ in (("database", f"{german_server}/fehlt", "existiert nicht", env),
                                        ("role", role_url, "existiert nicht", env),
                                        ("role-latin1-password", role_url, "existiert nicht", latin1)):
        log = tmp_path / f"server-{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "sematic_k8s_server.cli", "server", "--local", "--port",
                                     str(free_port()), "--home", str(tmp_path), "--db-url", db_url], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environ)
        try:
            wait_for(lambda p=proc, lg=log: p.poll() is not None or "Waiting for the metadata" in lg.read_text(), 60,
                     what=f"the server failing or waiting ({name})")
        finally:
            stop_process(proc)
        text = log.read_text()
        assert said in text, text  # the test's premise: the database's words are not English
        assert "Waiting for the metadata database" not in text and "cannot open the metadata database" in text, text
