"""A resolution marked dead is told live whatever marks it, over real HTTP: a follower of its live events sees it
failed when a read finds its resolver silent (a GET of it, the list, a cancel asked of it), when a ``continue`` of it
is asked (the action's read of it), and when a ``continue`` of the resolution it continues finds it silent (marked in
the claim's own transaction). The server's sweeper is stopped, so only the path under test can mark it. Its resolver
is gone: the resolution was recorded running, beating once, and nothing beat since. On SQLite and on PostgreSQL
(there the event goes through the database's ``NOTIFY``, as every event does). Was: only the sweeper's marks were
told; a page of the resolution showed it running until a reload. On PostgreSQL a mark made by another process on the
database's URL (the CLI's read, a ``continue`` recorded there) is told to the server's followers too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import sqlalchemy as sa

from sematic_k8s import settings
from sematic_k8s.specs import DriverSpec
from sematic_k8s.store.records import Batch, ResolutionRecord, utcnow
from sematic_k8s.store.tables import ResolutionRow
from sematic_k8s_server.config import RerunConfig, ServerConfig
from serving import Followed, Served, record_resolution, record_silent, serve, wait_for, write_through_api

TIMEOUT = 1.0  # seconds of silence after which a resolution is dead, in these tests
REPO = "127.0.0.1:5000/pipelines"
IMAGE = f"{REPO}@sha256:" + "ab" * 32
STORAGE = "s3://sk-marked/artifacts"
CLOUD = {"kind": "cloud", "storage_url": STORAGE}


@pytest.fixture(params=["sqlite", "postgres"])
def quiet(request, tmp_path, monkeypatch) -> Iterator[tuple[Served, list[DriverSpec]]]:
    """A server (SQLite, or PostgreSQL) whose sweeper is stopped, starting reruns of cloud resolutions of ``IMAGE``
    by noting their drivers' specs (the list given with it): nothing started."""
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", str(TIMEOUT))  # the server's (in this process)
    db_url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    launched: list[DriverSpec] = []

    def launch(spec: DriverSpec, env: Mapping[str, str]) -> None:
        launched.append(spec)

    config = ServerConfig(reruns=RerunConfig(image_repositories=(REPO,), storage_url=STORAGE))
    with serve(tmp_path, db_url, config=config, rerun_launcher=launch) as s:
        s.server.sweeper.stop()  # only the path under test marks anything
        yield s, launched


def _silent(s: Served, **record: Any) -> str:
    """A cloud resolution of ``IMAGE`` (and its root run) recorded running through the server, beating once and never
    since, returned once its silence is past the timeout (with a second to spare: the server, started before, judges
    it then) by the database's clock, read straight from the database: no read of the server's marks it."""
    root = record_silent(s, TIMEOUT, image=IMAGE, **{"settings": CLOUD, **record})
    table = ResolutionRow.__table__
    with s.store.engine.connect() as conn:  # still running: marked by nothing so far
        assert conn.scalar(sa.select(table.c.state).where(table.c.id == root)) == "running"
    return root


class Following(Followed):
    """The live events of resolution ``root_id`` (``events``), followed on a thread from the moment this is made
    until one tells it ``state``."""

    def __init__(self, s: Served, root_id: str, state: str) -> None:
        super().__init__(s, root_id, state, timeout=30)

    def told(self) -> list[dict]:
        """The events, once the one awaited came (within 20 s; else the test fails naming those that came)."""
        self.thread.join(20)
        assert not self.thread.is_alive(), f"the resolution's mark was never told: {self.events}"
        return self.events


@pytest.mark.parametrize("read", ["get", "list", "cancel"])
def test_a_read_that_finds_a_resolution_silent_tells_it_failed_live(quiet, read) -> None:
    """A GET of the resolution, the list of resolutions, or a cancel asked of it (which reads it first) finds its
    resolver silent and marks it failed (the cancel: 409, it has ended): its follower is told so, once. Was: nothing
    told (the sweeper's marks alone were)."""
    s, _ = quiet
    root = _silent(s)
    following = Following(s, root, "failed")
    with s.client() as c:
        if read == "get":
            r = c.get(f"/api/v1/resolutions/{root}")
            assert r.status_code == 200 and r.json()["state"] == "failed", r.text
        elif read == "list":
            r = c.get("/api/v1/resolutions")
            assert [x["state"] for x in r.json()["items"] if x["id"] == root] == ["failed"], r.text
        else:
            r = c.post(f"/api/v1/resolutions/{root}/cancel")
            assert r.status_code == 409 and r.json()["detail"] == f"resolution {root} is already failed", r.text
        assert following.told() == [{"type": "resolution", "id": root, "root_id": root, "state": "failed"}]
        res = c.get(f"/api/v1/resolutions/{root}").json()
        assert res["error"].startswith("the resolver stopped responding at "), res


def test_a_continue_of_a_silent_resolution_tells_it_failed_live(quiet) -> None:
    """The server's continue action asked of a resolution whose resolver is silent: its read marks it failed, and the
    continue goes on (202, its driver launched); the old resolution's follower is told it failed."""
    s, launched = quiet
    root = _silent(s)
    following = Following(s, root, "failed")
    with s.client() as c:
        r = c.post(f"/api/v1/resolutions/{root}/rerun", json={"mode": "continue"})
        assert r.status_code == 202, r.text
        assert following.told() == [{"type": "resolution", "id": root, "root_id": root, "state": "failed"}]
    assert [spec.resolution.root_id for spec in launched] == [r.json()["resolution_id"]]


@pytest.mark.parametrize("through", ["action", "write"])
def test_a_continue_that_finds_the_earlier_continuation_silent_tells_it_failed_live(quiet, through) -> None:
    """A continue of a resolution whose earlier continuation's resolver is silent, asked of the server's action (its
    claim) or recorded through the server's store API (``sematic-k8s rerun --mode continue`` through a server, whose
    resolver writes the new resolution): that write's transaction marks the earlier continuation failed (it no longer
    continues it: no 409) and records the new one; the earlier continuation's follower is told it failed once it
    committed. Nothing else reads the earlier continuation here."""
    s, launched = quiet
    original = record_resolution(s.url, s.key, kind="cloud", image=IMAGE, storage_url=STORAGE, state="failed")
    continuing = {**CLOUD, "rerun_of": original, "rerun_mode": "continue"}
    earlier = _silent(s, rerun_of=original, settings=continuing)
    following = Following(s, earlier, "failed")
    with s.client() as c:
        if through == "action":
            r = c.post(f"/api/v1/resolutions/{original}/rerun", json={"mode": "continue"})
            assert r.status_code == 202, r.text
            assert [spec.resolution.root_id for spec in launched] == [r.json()["resolution_id"]]
        else:
            batch = Batch()
            batch.add_resolution(ResolutionRecord(id=uuid.uuid4().hex, root_func_path="pipes:pipeline",
                                                  state="running", rerun_of=original, created_at=utcnow(),
                                                  heartbeat_at=utcnow(), settings=continuing))
            # not refused: the earlier continuation is marked dead in its transaction
            write_through_api(s.url, s.key, batch)
        assert following.told() == [{"type": "resolution", "id": earlier, "root_id": earlier, "state": "failed"}]
        res = c.get(f"/api/v1/resolutions/{earlier}").json()
        assert res["state"] == "failed" and res["error"].startswith("the resolver stopped responding at "), res


# a continue of ORIGINAL recorded straight in the database of DB_URL, as a LocalResolver on it writes it
CONTINUE_ON_THE_DATABASE = """
import os, uuid
from sematic_k8s.store.records import Batch, ResolutionRecord, utcnow
from sematic_k8s.store.sql import SqlStore
original = os.environ["ORIGINAL"]
store = SqlStore(os.environ["SEMATIC_K8S_DB_URL"])
batch = Batch()
batch.add_resolution(ResolutionRecord(id=uuid.uuid4().hex, root_func_path="pipes:pipeline", state="running",
                                      rerun_of=original, created_at=utcnow(), heartbeat_at=utcnow(),
                                      settings={"rerun_of": original, "rerun_mode": "continue"}))
store.write(batch)
store.close()
"""


@pytest.mark.parametrize("marker", ["cli read", "continue"])
def test_a_mark_made_by_another_process_on_the_database_is_told_to_the_servers_followers(request, tmp_path,
                                                                                        monkeypatch, marker) -> None:
    """PostgreSQL: a process reading the database directly marks a resolution whose resolver is gone, the server's
    sweeper stopped: ``sematic-k8s resolutions show`` on the database's URL (its read), or a ``continue`` of the
    resolution it continues recorded there (its write's transaction). The server's follower of its events is told it
    failed, once (the marking transaction's ``NOTIFY``). Was: told to no one, the page showed it running."""
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", str(TIMEOUT))
    db_url = request.getfixturevalue("postgres_url")
    with serve(tmp_path, db_url) as s:
        s.server.sweeper.stop()  # only the other process marks anything
        original = None
        if marker == "continue":
            original = record_resolution(s.url, s.key, kind="cloud", image=IMAGE, storage_url=STORAGE,
                                         state="failed")
            root = _silent(s, rerun_of=original, settings={**CLOUD, "rerun_of": original, "rerun_mode": "continue"})
        else:
            root = _silent(s)
        following = Following(s, root, "failed")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)},
               settings.DB_URL_ENV: db_url, settings.HOME_ENV: str(tmp_path / "cli"),
               "SEMATIC_K8S_HEARTBEAT_TIMEOUT": str(TIMEOUT), "ORIGINAL": original or ""}
        args = (["-c", CONTINUE_ON_THE_DATABASE] if marker == "continue"
                else ["-m", "sematic_k8s.cli", "resolutions", "show", root, "-o", "json"])
        done = subprocess.run([sys.executable, *args], env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        if marker == "cli read":
            assert json.loads(done.stdout)["state"] == "failed", done.stdout.decode()
        assert following.told() == [{"type": "resolution", "id": root, "root_id": root, "state": "failed"}]
        with s.client() as c:
            res = c.get(f"/api/v1/resolutions/{root}").json()
        assert res["state"] == "failed" and res["error"].startswith("the resolver stopped responding at "), res


DROPPED = "live events: dropped a notification on sematic_k8s_events that no server sent"


def test_a_notification_not_of_the_servers_making_leaves_its_live_events_going(request, tmp_path, caplog) -> None:
    """PostgreSQL: any role that may connect to the database may ``NOTIFY`` on the events channel (an embedded store on
    the server's database, another version, a hand's ``pg_notify``): text that is no JSON, a JSON object, a list of
    numbers, events that are no objects. The server drops each (said once in its log) and its listener goes on: the
    followers still hear a cancel made after them, and none of those payloads. Was: the listener's thread ended at
    the first (``json.loads``, ``.get`` of a number, neither caught), and no follower of any server process heard
    another event until the servers restarted."""
    db_url = request.getfixturevalue("postgres_url")
    with serve(tmp_path, db_url) as s:
        root = record_resolution(s.url, s.key, kind="cloud", state="running")
        following = Following(s, root, "canceling")
        with s.store.engine.begin() as conn:
            for payload in ["not json", '{"type": "resolution", "root_id": null}', "[1, 2]", '["x"]', "[[]]"]:
                conn.execute(sa.select(sa.func.pg_notify("sematic_k8s_events", payload)))
        wait_for(lambda: DROPPED in caplog.text, 20, what="the payloads to be heard")
        with s.client() as c:
            assert c.post(f"/api/v1/resolutions/{root}/cancel").status_code == 202
        assert following.told() == [{"type": "resolution", "id": root, "root_id": root, "state": "canceling"}]
        assert caplog.text.count(DROPPED) == 1, caplog.text
