"""The server process holding a rerun's claim (:class:`~sematic_k8s_server.claim_beats.ClaimBeats`) once its driver
started: the let-go it records (``held_by`` cleared: its driver's grace counts from then) made again at each beat when
the database refused it, the claim beaten meanwhile. Was: beaten no more at once, the let-go tried once: the database
read-only (or out of reach) for that moment left the claim held and silent, failed within seconds as "the server
that was launching this rerun stopped" though its driver had started (which then found it ended and stopped)."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from sematic_k8s.store import liveness
from sematic_k8s.store.records import CLAIMED, Batch, utcnow
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server.claim_beats import ClaimBeats
from serving import wait_for


@pytest.fixture(autouse=True)
def fast_beats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_INTERVAL", "0.25")  # a holder gone after 1 s


def _read_only(postgres_url: str, on: bool) -> None:
    """The operator sets ``default_transaction_read_only`` on the database (a failover's standby, and back), and ends
    its sessions, so that the store's next ones have it."""
    database = postgres_url.rsplit("/", 1)[1]
    server = postgres_url.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(f"{server}/postgres", autocommit=True) as dba:
        dba.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = {"on" if on else "off"}')
        dba.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))


def test_a_started_drivers_claim_let_go_while_the_database_refused_writes_is_let_go_once_it_takes_them(
        postgres_url: str) -> None:
    store = SqlStore(postgres_url, stale_after=60, pool_pre_ping=True)  # as the server's: its sessions were ended
    beats = ClaimBeats(store)
    try:
        beats.hold("c1")
        now = utcnow()
        store.write(Batch(new_resolutions=[{"id": "c1", "root_func_path": "m:p", "state": CLAIMED, "created_at": now,
                                            "heartbeat_at": now, "held_by": beats.holder}]))
        _read_only(postgres_url, True)
        beats.launched("c1")  # its driver started: the let-go refused
        _read_only(postgres_url, False)

        def held_by() -> str | None:
            with store.engine.connect() as conn:
                return conn.execute(sa.text("SELECT held_by FROM resolutions WHERE id = 'c1'")).scalar()

        wait_for(lambda: held_by() is None, 30, what="the let-go recorded once the database takes writes")
        time.sleep(2)  # twice its holder's silence: its driver's grace counts now
        assert store.get_resolution("c1").state == CLAIMED
    finally:
        beats.stop()
        store.close()


@pytest.mark.parametrize("given", [{"stale_after": 0.0}, {"stale_after": float("nan")}, {"every": 0.0},
                                   {"every": float("nan")}], ids=["stale-after-0", "stale-after-nan", "every-0",
                                                                  "every-nan"])
def test_the_claim_beats_thread_never_waits_0_s_whatever_it_is_given(tmp_path: Path, given: dict[str, float]) -> None:
    """A store judging silence after 0 s (or nan), a beat period of 0 given: the thread waits
    :data:`~sematic_k8s.store.liveness.MIN_HOLDER_BEAT` between beats at the least (was 0 s: a spinning thread)."""
    store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}", stale_after=given.get("stale_after", 60.0))
    try:
        assert ClaimBeats(store, every=given.get("every")).every >= liveness.MIN_HOLDER_BEAT > 0
    finally:
        store.close()


@pytest.mark.parametrize("every, settings_period", [(float("inf"), None), (1e11, "1e11")],
                         ids=["inf", "finite-past-threading-TIMEOUT_MAX"])
def test_the_claim_beats_thread_lives_on_through_a_period_no_wait_takes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every: float, settings_period: str | None) -> None:
    """A beat period of inf given (a wait of it raises OverflowError): the thread says so once and beats on, at
    the default's period, its claim stamped. Was: the thread died on the wait's error, its claims left silent and
    failed as "the server that was launching this rerun stopped" though it lived. A finite period past
    ``threading.TIMEOUT_MAX`` (about 292 years), the settings' too (``$SEMATIC_K8S_HEARTBEAT_INTERVAL`` and the
    heartbeat timeout 1e11, both taken: finite), is no period a wait takes either: the default's. Was: the settings'
    (finite) taken in its place, each wait raising at once: the thread spun, never beating."""
    if settings_period is not None:
        monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_INTERVAL", settings_period)
    store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}", stale_after=float(settings_period or 60.0))
    beats = ClaimBeats(store, every=every)
    try:
        now = utcnow()
        store.write(Batch(new_resolutions=[{"id": "c1", "root_func_path": "m:p", "state": CLAIMED, "created_at": now,
                                            "heartbeat_at": now, "held_by": beats.holder}]))
        then = store.get_resolution("c1").heartbeat_at  # as the database stamped it
        beats.hold("c1")
        wait_for(lambda: store.get_resolution("c1").heartbeat_at > then, 30, what="the claim beaten")
        assert beats._thread is not None and beats._thread.is_alive()
    finally:
        beats.stop()
        store.close()


def test_a_holders_claims_are_beaten_while_the_requests_pool_is_used_up(postgres_url: str) -> None:
    """Every connection of the server's request pool held by slow requests (here 1 of 1, held): the claim's beats
    land all the same, through connections of their own. Was: each beat waited the pool timeout for a connection
    and got none, the claim went silent past its holder's 4 beats and was failed as "the server that was launching
    this rerun stopped" though its holder lived."""
    store = SqlStore(postgres_url, stale_after=60, pool_size=1, max_overflow=0, pool_timeout=1)
    beats = ClaimBeats(store)
    try:
        now = utcnow()
        store.write(Batch(new_resolutions=[{"id": "c1", "root_func_path": "m:p", "state": CLAIMED, "created_at": now,
                                            "heartbeat_at": now, "held_by": beats.holder}]))
        then = store.get_resolution("c1").heartbeat_at
        with store.engine.connect() as held:  # the pool's one connection, as a slow request holds it

            def stamped() -> bool:
                beat = held.execute(sa.text("SELECT heartbeat_at FROM resolutions WHERE id = 'c1'")).scalar()
                held.rollback()  # the next read sees the beats committed since
                return beat is not None and beat.replace(tzinfo=None) > then.replace(tzinfo=None)

            beats.hold("c1")
            wait_for(stamped, 30, what="the claim beaten while the request pool is used up")
    finally:
        beats.stop()
        store.close()


def test_a_launch_that_ends_after_the_beats_stopped_leaves_no_connection_of_theirs_open(postgres_url: str) -> None:
    """The server stopping (``ClaimBeats.stop``: the beats' own store closed) while a launch still runs, which then
    starts its driver (``launched``): the let-go is recorded all the same, and the connection it opened on the beats'
    store is closed again. Was: left open on the disposed engine until the process exited."""
    store = SqlStore(postgres_url, stale_after=60)
    beats = ClaimBeats(store)
    try:
        now = utcnow()
        store.write(Batch(new_resolutions=[{"id": "c1", "root_func_path": "m:p", "state": CLAIMED, "created_at": now,
                                            "heartbeat_at": now, "held_by": beats.holder}]))
        beats.hold("c1")
        beats.stop()
        beats.launched("c1")
        with store.engine.connect() as conn:  # its driver started: held no more (never failed as its holder's)
            assert conn.execute(sa.text("SELECT held_by FROM resolutions WHERE id = 'c1'")).scalar() is None
        assert beats.store is not store and beats.store.engine.pool.checkedin() == 0  # nothing of theirs open
    finally:
        store.close()
