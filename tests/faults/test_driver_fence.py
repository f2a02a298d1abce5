"""Two drivers of one resolution at once (a replacement driver pod started while the first, cut off from the
cluster, still runs; a driver started by hand): the newer one takes the resolution over (fencing), the older one's
writes are refused from then on and it stops, saying so, without touching the workers; the resolution finishes
once, to its value, every record after the takeover written by the newer driver.

Both drivers are real processes (``python -m sematic_k8s.driver`` with worker processes), on one SQLite database,
and through two server processes (replicas) on one PostgreSQL database. Who wrote what is read from the database
itself: triggers log every insert and update of a run or resolution with the writer's name (SQLite: each driver's
connections define ``audit_writer()``, :mod:`audited_driver`; PostgreSQL: each server's ``application_name``)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import fault_pipelines as fp
from outages import ServerProcess, running
from sematic_k8s import serialization
from sematic_k8s.settings import DRIVER_ENV
from sematic_k8s.specs import DRIVER_EXIT_FAILED, DRIVER_EXIT_REPLACED, DriverSpec, ResolutionSettings
from sematic_k8s.storage.base import artifact_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_url
from sematic_k8s.store import sql_store
from sematic_k8s.store.sql import SqlStore
from waiting import wait_for

HERE = Path(__file__).parent
AUDIT = """
CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, writer TEXT, kind TEXT, id TEXT, old_state TEXT,
                    state TEXT);
CREATE TRIGGER audit_new_run AFTER INSERT ON runs BEGIN
  INSERT INTO audit (writer, kind, id, state) VALUES (audit_writer(), 'run', NEW.id, NEW.state); END;
CREATE TRIGGER audit_run AFTER UPDATE ON runs BEGIN
  INSERT INTO audit (writer, kind, id, old_state, state) VALUES (audit_writer(), 'run', NEW.id, OLD.state,
                                                                 NEW.state); END;
CREATE TRIGGER audit_new_resolution AFTER INSERT ON resolutions BEGIN
  INSERT INTO audit (writer, kind, id, state) VALUES (audit_writer(), 'resolution', NEW.id, NEW.state); END;
CREATE TRIGGER audit_resolution AFTER UPDATE ON resolutions BEGIN
  INSERT INTO audit (writer, kind, id, old_state, state) VALUES (audit_writer(), 'resolution', NEW.id, OLD.state,
                                                                 NEW.state); END;
"""
PG_AUDIT = """
CREATE TABLE audit (seq BIGSERIAL PRIMARY KEY, writer TEXT, kind TEXT, id TEXT, old_state TEXT, state TEXT);
CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  INSERT INTO audit (writer, kind, id, old_state, state) VALUES (current_setting('application_name'), TG_ARGV[0],
    NEW.id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.state END, NEW.state);
  RETURN NULL; END $$;
CREATE TRIGGER audit_runs AFTER INSERT OR UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION audit_row('run');
CREATE TRIGGER audit_resolutions AFTER INSERT OR UPDATE ON resolutions FOR EACH ROW
  EXECUTE FUNCTION audit_row('resolution');
"""
AUDITED = "SELECT seq, writer, kind, id, old_state, state FROM audit ORDER BY seq"
REPLACED = re.compile(r"another driver took over resolution [0-9a-f]+ at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: "
                      r"this one stops")


def _spec(root: object, storage: LocalStorage, root_id: str) -> DriverSpec:
    s = serialization.serialize(root)
    storage.put(artifact_key(s.id), s.payload)
    return DriverSpec(root={"id": s.id, "format": s.format}, storage_url=storage_url(storage),
                      image="127.0.0.1:5000/none@sha256:" + "0" * 64, build_hash="h" * 64, executor="process",
                      resolution=ResolutionSettings(root_id=root_id, max_parallelism=8))


def _two_drivers(tmp_path: Path, env: dict[str, dict[str, str]], store: Any, audit: Callable[[], list[tuple]],
                 *, interrupt: bool = False) -> None:
    """Start the driver "first" of a resolution with a gated step, then, while its worker waits at the gate, the
    driver "second" of the same resolution (``env``: each one's environment beside the common one); open the gate
    once the second re-launched that step; check what each did and wrote (``audit``: the audit table's rows).
    ``interrupt``: the first, whose heartbeat is slow (it would write nothing for 30 s), gets Ctrl-C (SIGINT) once
    the second took over, so that it stops on the way that records the end of a resolution and cancels its runs."""
    storage = LocalStorage(tmp_path / "storage")
    gate = str(tmp_path / "gate")
    f = fp.remote_gated(4, gate)
    common = {**os.environ, DRIVER_ENV: _spec(f, storage, f.id).to_json(), "SEMATIC_K8S_HEARTBEAT_INTERVAL": "0.5",
              "PYTHONPATH": os.pathsep.join([os.getcwd(), str(HERE), str(HERE.parent / "support")])}
    for name in ("SEMATIC_K8S_SERVER", "SEMATIC_K8S_API_KEY", "SEMATIC_K8S_DB_URL"):
        common.pop(name, None)

    def driver(name: str) -> subprocess.Popen:
        with open(tmp_path / f"{name}.log", "w") as log:
            return subprocess.Popen([sys.executable, "-m", "audited_driver"], env={**common, **env[name]},
                                    stdout=log, stderr=subprocess.STDOUT)

    def said(name: str) -> str:
        return (tmp_path / f"{name}.log").read_text()

    first = driver("first")
    second = None
    try:
        started = Path(gate + ".started")  # the gated worker writes its pid there
        first_worker = wait_for(lambda: (started.exists() and started.read_text()) or first.poll() is not None, 120,
                                what="the first driver's gated worker")
        assert first.poll() is None, said("first")
        second = driver("second")  # the first still runs: its gated worker waits
        wait_for(lambda: started.read_text() not in ("", first_worker) or second.poll() is not None, 120,
                 what="the second driver's gated worker")
        if interrupt:
            first.send_signal(signal.SIGINT)
            first.wait(60)
        Path(gate).touch()  # the workers of both may end now
        codes = [p.wait(180) for p in (first, second)]
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()

    rows = audit()
    took_over = next(seq for seq, writer, *_ in rows if writer == "second")  # its first write: the takeover
    late = [row for row in rows if row[0] > took_over and row[1] != "second"]
    assert late == [], f"the first driver wrote after the second took over: {late}"
    assert codes == [DRIVER_EXIT_REPLACED, 0], (codes, said("first"), said("second"))
    assert REPLACED.fullmatch(said("first").strip().splitlines()[-1]), said("first")  # its last word: why

    res = store.get_resolution(f.id)
    assert res is not None and res.state == "resolved", res
    assert store.get_artifact(store.get_run(f.id).output_id).summary == (4 + 1) + (1 + 1)
    runs = store.runs_of_root(f.id)
    assert {r.state for r in runs} == {"resolved"} and len(runs) == 5  # the same runs, none twice
    ends = [row for row in rows if row[2] == "resolution" and row[5] == "resolved" and row[4] != "resolved"]
    assert len(ends) == 1 and ends[0][1] == "second", ends  # it finished once, recorded by the newer driver
    gated = next(r for r in runs if r.func_name == "remote_wait_for")  # running at the takeover: ended by the newer
    assert [row[1] for row in rows if row[3] == gated.id and row[5] == "resolved"] == ["second"]


@pytest.mark.parametrize("interrupt", [False, True], ids=["writing", "interrupted"])
def test_a_second_driver_takes_the_resolution_over_and_the_first_stops(tmp_path, interrupt):
    db = tmp_path / "db.sqlite3"
    store = sql_store(f"sqlite:///{db}")  # migrated: the audit triggers go on the store's tables
    with sqlite3.connect(db) as conn:
        conn.executescript(AUDIT)

    def audit() -> list[tuple]:
        with sqlite3.connect(db) as conn:
            return conn.execute(AUDITED).fetchall()

    env = {name: {"SEMATIC_K8S_DB_URL": f"sqlite:///{db}", "AUDIT_WRITER": name} for name in ("first", "second")}
    if interrupt:
        env["first"]["SEMATIC_K8S_HEARTBEAT_INTERVAL"] = "60"
    _two_drivers(tmp_path, env, store, audit, interrupt=interrupt)


def test_two_drivers_through_two_servers_on_postgres(tmp_path, postgres_url):
    """The same through the server: each driver records through a server process of its own (replicas over one
    PostgreSQL database); the server checks each write's fence in the write's transaction."""
    store = SqlStore(postgres_url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(PG_AUDIT)
    servers = {name: ServerProcess(tmp_path, db_url=f"{postgres_url}?application_name={name}")
               for name in ("first", "second")}
    try:
        with running(*servers.values()):

            def audit() -> list[tuple]:
                with store.engine.connect() as conn:
                    return [tuple(row) for row in conn.exec_driver_sql(AUDITED)]

            env = {name: {"SEMATIC_K8S_SERVER": server.url, "AUDIT_WRITER": name} for name, server in servers.items()}
            _two_drivers(tmp_path, env, store, audit)
    finally:
        store.close()


# -- a driver frozen past the heartbeat timeout (SIGSTOP), its resolution marked dead meanwhile, then resumed ------
# The reaper (a reader, the server's sweeper) takes the resolution over from a silent driver: it records it failed and
# its unfinished runs canceled, and bumps no driver epoch. The driver is frozen for real (SIGSTOP, sent by itself at
# the instant :mod:`frozen_driver` chooses: a batch of runs made without a beat, in the half interval after one, and
# not yet taken by the store), then resumed (SIGCONT): that batch must be refused, not land on what the reaper recorded.

ENDED = re.compile(r"resolution [0-9a-f]+ has already ended as failed at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
                   r"( \(the resolver stopped responding at [^)]+\))?: this process stops and records "
                   r"nothing more of it\. Continue it with .*")
FROZEN_BEATS = "6"  # seconds between the frozen driver's beats: a batch in the 3 s after one carries none


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP): its state in /proc, "T"."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


def _frozen_past_the_timeout(tmp_path: Path, env: dict[str, str], store: Any, beat: Callable[[str], Any],
                             reap: Callable[[str], None], audit: Callable[[], list[tuple]]) -> None:
    """Drive ``remote_gated(4, gate)`` with a driver "first" (``env`` beside the common environment) that freezes
    itself once the gate opens (opened just after one of its beats lands: ``beat(id)``, its recorded heartbeat_at),
    right before writing the gated step's end; once it is stopped, ``reap(id)`` returns when the resolution is
    marked dead (by the test, or a server's sweeper); then SIGCONT. The driver's write must be refused and the driver
    stop saying so; nothing it wrote after the mark (``audit``'s rows) and the mark's records as they were."""
    storage = LocalStorage(tmp_path / "storage")
    gate = str(tmp_path / "gate")
    f = fp.remote_gated(4, gate)
    common = {**os.environ, DRIVER_ENV: _spec(f, storage, f.id).to_json(), "FREEZE_AT": gate,
              "SEMATIC_K8S_HEARTBEAT_INTERVAL": FROZEN_BEATS, "AUDIT_WRITER": "first",
              "PYTHONPATH": os.pathsep.join([os.getcwd(), str(HERE), str(HERE.parent / "support")])}
    for name in ("SEMATIC_K8S_SERVER", "SEMATIC_K8S_API_KEY", "SEMATIC_K8S_DB_URL"):
        common.pop(name, None)
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "frozen_driver"], env={**common, **env}, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: Path(gate + ".started").exists() or proc.poll() is not None, 120, what="the gated worker")
        assert proc.poll() is None, log.read_text()
        last = beat(f.id)
        wait_for(lambda: beat(f.id) != last, 30, interval=0.01, what="a beat of the driver")
        Path(gate).touch()  # its worker ends: the driver records that, in the half interval after that beat
        wait_for(lambda: Path(gate + ".frozen").exists() and _stopped(proc.pid) or proc.poll() is not None, 60,
                 what="the driver to freeze")
        assert proc.poll() is None, log.read_text()
        reap(f.id)  # the driver stays stopped past the timeout: its resolution is marked dead
        marked = store.get_resolution(f.id)
        assert marked.state == "failed" and "the resolver stopped responding" in marked.error, marked
        runs = {r.id: (r.state, r.ended_at, r.output_id) for r in store.runs_of_root(f.id)}
        seen = max(row[0] for row in audit())
        proc.send_signal(signal.SIGCONT)
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
    said = log.read_text()
    late = [row for row in audit() if row[0] > seen and (row[2] == "run" or row[4] != row[5])]
    assert late == [], f"the resumed driver wrote over the mark: {late}\n{said[-3000:]}"
    assert code == DRIVER_EXIT_FAILED, said[-3000:]
    assert ENDED.fullmatch(said.strip().splitlines()[-1]), said[-3000:]  # its last word: what happened, when
    after = store.get_resolution(f.id)
    assert (after.state, after.error, after.ended_at) == (marked.state, marked.error, marked.ended_at)
    assert {r.id: (r.state, r.ended_at, r.output_id) for r in store.runs_of_root(f.id)} == runs
    frozen = json.loads(Path(gate + ".frozen").read_text())
    gated = next(r for r in store.runs_of_root(f.id) if r.func_name == "remote_wait_for")
    assert gated.id in frozen and runs[gated.id][0] == "canceled"  # what it would have recorded resolved


def test_a_driver_frozen_past_the_timeout_writes_nothing_over_the_mark_when_resumed(tmp_path):
    """SQLite, the driver on the database itself; the reaper a reader in this process (2 s of silence)."""
    db = tmp_path / "db.sqlite3"
    store = sql_store(f"sqlite:///{db}")
    with sqlite3.connect(db) as conn:
        conn.executescript(AUDIT)

    def query(sql: str, *args: Any) -> list[tuple]:
        with sqlite3.connect(db) as conn:  # a plain read: it judges no silence
            return conn.execute(sql, args).fetchall()

    def reap(res_id: str) -> None:
        reaper = SqlStore(f"sqlite:///{db}", stale_after=2.0)
        sa.event.listen(reaper.engine, "connect",  # its marks go through the audit triggers too
                        lambda conn, _: conn.create_function("audit_writer", 0, lambda: "reaper"))
        reaper.engine.dispose()
        try:
            wait_for(lambda: reaper.expire_silent([res_id]), 60, what="the frozen driver's resolution to be marked")
        finally:
            reaper.close()

    _frozen_past_the_timeout(tmp_path, {"SEMATIC_K8S_DB_URL": f"sqlite:///{db}"}, store,
                             lambda res_id: query("SELECT heartbeat_at FROM resolutions WHERE id = ?", res_id), reap,
                             lambda: query(AUDITED))


def test_a_driver_frozen_past_the_timeout_through_a_server_on_postgres(tmp_path, postgres_url):
    """PostgreSQL, the driver recording through a server process; the reaper that server's sweeper (8 s)."""
    store = SqlStore(postgres_url, stale_after=3600)  # its reads judge no silence: the sweeper does
    with store.engine.begin() as conn:
        conn.exec_driver_sql(PG_AUDIT)

    def query(sql: str, *args: Any) -> list[tuple]:
        with store.engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql, args)]

    server = ServerProcess(tmp_path, db_url=f"{postgres_url}?application_name=first",
                           env={"SEMATIC_K8S_HEARTBEAT_TIMEOUT": "8"})
    try:
        with running(server):
            _frozen_past_the_timeout(
                tmp_path, {"SEMATIC_K8S_SERVER": server.url}, store,
                lambda res_id: query("SELECT heartbeat_at FROM resolutions WHERE id = %s", res_id),
                lambda res_id: wait_for(lambda: query("SELECT state FROM resolutions WHERE id = %s", res_id)
                                        == [("failed",)], 60, what="the server's sweeper to mark the resolution"),
                lambda: query(AUDITED))
    finally:
        store.close()
