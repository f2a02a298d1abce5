"""A server's PostgreSQL listener (``sematic_k8s_server.relay``: every live event goes through the database's
``NOTIFY``) under real faults: PostgreSQL restarted under it (``pg_ctl stop -m fast``, the postmaster killed -9), and
its connection gone silent (its backend stopped with SIGSTOP: the connection stays open and nothing comes, as a flow a
NAT or load balancer dropped). Whatever it may have missed, its followers (``/api/v1/events``) are told to re-read at
once (``{"type": "overflow"}``), and a resolution marked dead afterwards by another store on the database's URL (as the
CLI or a LocalResolver opens it) is told live. The streams' keep-alive is an hour here: nothing is told by it. A stream
open while PostgreSQL is stopped ends cleanly, saying why."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server import relay
from sematic_k8s_server.routes import events as events_route
from serving import Followed, Served, record_silent, serve, wait_for

TIMEOUT = 1.0  # seconds of silence after which a resolution is dead, in these tests
LISTENER = "LISTEN sematic_k8s_events"  # the listener's one statement, as pg_stat_activity shows it


@pytest.fixture
def listening(tmp_path: Path, monkeypatch) -> Iterator[tuple[Served, object, str]]:
    """A server on a PostgreSQL cluster of the test's own (to stop and start), its sweeper stopped (only the test's
    other store marks anything), its streams' keep-alive an hour; (server, cluster, database URL)."""
    from pgcluster import create_database, own_cluster

    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", str(TIMEOUT))
    monkeypatch.setattr(events_route, "KEEPALIVE_SECONDS", 3600.0)
    with own_cluster() as cluster:
        db_url = create_database(cluster.url, "listener")
        with serve(tmp_path, db_url) as s:
            s.server.sweeper.stop()
            try:
                yield s, cluster, db_url
            finally:
                s.server.bus.end()  # its streams end, as a server's stopping ends them


class Follower(Followed):
    """The live events of every resolution (``events``), followed on a thread from the moment this is made."""

    def told(self, event: dict, what: str) -> None:
        wait_for(lambda: event in self.events, 60, what=f"{what}; told: {self.events}")


def _silent(s: Served) -> str:
    """A resolution recorded running, beating once and never since, returned once its silence is past the timeout
    (:func:`serving.record_silent`: nothing marks it)."""
    return record_silent(s, TIMEOUT)


def _marked_elsewhere(db_url: str, root: str) -> None:
    """``root`` read, so marked dead, by a store of its own on the database's URL (not the server's)."""
    other = SqlStore(db_url, stale_after=TIMEOUT)
    try:
        assert other.get_resolution(root).state == "failed"
    finally:
        other.close()


def _failed(root: str) -> dict:
    return {"type": "resolution", "id": root, "root_id": root, "state": "failed"}


def _listeners(db_url: str) -> list[int]:
    """The backends LISTENing on the events' channel (their pids)."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(sa.text("SELECT pid FROM pg_stat_activity WHERE query = :q"), {"q": LISTENER}))
    finally:
        engine.dispose()


def _crash(cluster) -> None:  # noqa: ANN001 - a pgcluster.PgCluster
    """kill -9 of the postmaster, then started again on the same port and data once its backends are gone."""
    os.kill(int((cluster.data / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:  # its backends exit as they notice; until then the data directory is theirs
        try:
            cluster.start()
            return
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.parametrize("how", ["pg_ctl stop -m fast", "kill -9 of the postmaster"])
def test_postgresql_restarted_under_a_listening_server_tells_its_followers_to_re_read_and_later_marks_live(
        listening, how) -> None:
    """PostgreSQL stopped and started again while the server listens: once its listener is connected again, its
    follower is told at once to re-read (events written meanwhile may be lost to it), and a resolution marked dead
    afterwards by another store on the database is told live. Was: the re-read was told only with the stream's next
    event or keep-alive (15 s): a page showed a resolution marked while its server's listener was away running
    until then."""
    s, cluster, db_url = listening
    root = _silent(s)
    follower = Follower(s)
    if how == "pg_ctl stop -m fast":
        cluster.stop("fast")
        cluster.start()
    else:
        _crash(cluster)
    follower.told({"type": "overflow"}, "the follower told to re-read")
    wait_for(lambda: _listeners(db_url), 30, what="the listener connected again")
    _marked_elsewhere(db_url, root)
    follower.told(_failed(root), "the mark told live")


def test_a_listener_whose_connection_went_silent_connects_again(listening, monkeypatch) -> None:
    """The listener's backend stopped (SIGSTOP): its connection stays open, nothing comes on it, no reset tells the
    server. A resolution marked dead by another store meanwhile is not heard; the listener, hearing nothing, not even
    its own ping, connects again and tells its follower to re-read; a mark after is told live. Was: the listener
    waited on the silent connection for good, and every live event (the server's own writes' too) was lost."""
    monkeypatch.setattr(relay, "QUIET_SECONDS", 1.0)
    s, _, db_url = listening
    first, later = _silent(s), _silent(s)
    follower = Follower(s)
    [stopped] = _listeners(db_url)
    os.kill(stopped, signal.SIGSTOP)
    try:
        _marked_elsewhere(db_url, first)
        follower.told({"type": "overflow"}, "the follower told to re-read")
        assert _failed(first) not in follower.events  # the stopped backend never delivered it
        wait_for(lambda: [pid for pid in _listeners(db_url) if pid != stopped], 30, what="a new listener")
        _marked_elsewhere(db_url, later)
        follower.told(_failed(later), "the later mark told live")
    finally:
        os.kill(stopped, signal.SIGCONT)


def test_a_stream_open_while_postgresql_is_stopped_ends_cleanly_saying_why(listening, monkeypatch, caplog) -> None:
    """PostgreSQL stopped under an open stream (keep-alive 1 s): at its next keep-alive the stream's credential cannot
    be checked, and the stream ends, cleanly, saying why in a comment; its follower connects again once the database
    is back. Was: the check's error cut the stream mid-chunk (the client: "incomplete chunked read"), the server
    logging "Exception in ASGI application" and its traceback."""
    monkeypatch.setattr(events_route, "KEEPALIVE_SECONDS", 1.0)
    s, cluster, _ = listening
    with s.client() as c, c.stream("GET", "/api/v1/events", timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines) == ": connected"
        cluster.stop("fast")
        rest = list(lines)  # to its end (cut: RemoteProtocolError)
    assert [line for line in rest if line.startswith(": cannot")] == [
        ": cannot check credentials: the metadata database is unavailable: OperationalError: this stream ends"], rest
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], caplog.text
    cluster.start()

    def opens() -> bool:
        with s.client() as c, c.stream("GET", "/api/v1/events", timeout=60) as r:
            return r.status_code == 200 and next(r.iter_lines()) == ": connected"
    wait_for(opens, 30, what="a stream opened again")
