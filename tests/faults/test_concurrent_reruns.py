"""Two reruns of one resolution started at the same instant (the Python API and the CLI, real processes released
together by a file they both wait for). Two ``continue`` s: exactly one continues it, the other is refused in one
line before anything of it runs or is recorded, and the step that failed runs once. Two reruns from one run (mode
``from``): both run, each recorded whole, under ids of its own. On one SQLite home, and through
two server processes (replicas) on one PostgreSQL database. The step waits at a gate file, so the winner is still
running when the loser asks (one that had ended would rightly leave the resolution free to continue again)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import fault_pipelines as fp
import sematic_k8s as sk
from idle_driver import IDLE_DRIVER_REPO, idle_driver_image, remove_drivers
from outages import ServerProcess, running
from racing import at_once
from s3server import fresh_bucket
from sematic_k8s.settings import STORAGE_ENV
from sematic_k8s.store import open_store
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s_server.config import RerunConfig, ServerConfig
from serving import record_resolution, serve, write_through_api
from waiting import wait_for

HERE = Path(__file__).parent
ROUNDS = 3
REFUSED = "is being continued already by resolution"
# each imports what it runs, says it is ready (a file $RACE_GO.ready.<pid>) and waits for the file $RACE_GO, then
# reruns $RACE_TARGET in $RACE_MODE: through Python, or through `sematic-k8s rerun`
READY = ("pathlib.Path(os.environ['RACE_GO'] + f'.ready.{os.getpid()}').touch()\n"
         "while not os.path.exists(os.environ['RACE_GO']): time.sleep(0.001)\n")
API = ("import os, pathlib, time, fault_pipelines as fp, sematic_k8s as sk\n"
       "from sematic_k8s.resolvers.local import LocalResolver\n" + READY +
       "resolver = LocalResolver(rerun_from=os.environ['RACE_TARGET'], rerun_mode=os.environ['RACE_MODE'])\n"
       "try:\n    print(fp.fixable(0).resolve(resolver))\n"
       "except sk.errors.ContinuedAlready as e:\n    raise SystemExit(f'refused: {e}')")
CLI = ("import os, pathlib, runpy, sys, time, sematic_k8s.cli.rerun\n" + READY +
       "sys.argv = ['sematic-k8s', 'rerun', os.environ['RACE_TARGET'], '--mode', os.environ['RACE_MODE']]\n"
       "runpy.run_module('sematic_k8s.cli', run_name='__main__')")

def _ran(home: Path) -> int:
    """How many times the fixed step has run (each run notes itself)."""
    return len(list(home.glob("fixed.ran.*")))


def _round(home: Path, env: dict[str, str], servers: list[str], target: str, i: int,
           mode: str = "continue") -> list[tuple[int, str, str]]:
    """Round ``i``: a rerun (``mode``) of ``target`` through Python and one through the CLI (each through a server of
    its own, if any), released together; the step's gate opened once one ended or both run the step. Each one's
    (exit code, stdout, stderr)."""
    go, gate, ran = home / f"go{i}", home / f"gate{i}", _ran(home)
    procs = []
    for k, code in enumerate((API, CLI) if i % 2 == 0 else (CLI, API)):
        penv = {**env, "RACE_GO": str(go), "RACE_GATE": str(gate), "RACE_TARGET": target, "RACE_MODE": mode}
        if servers:
            penv["SEMATIC_K8S_SERVER"] = servers[k % len(servers)]
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=penv, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        wait_for(lambda: len(list(home.glob(f"go{i}.ready.*"))) == 2, 60, what="both continues ready")
        go.touch()  # both start together; the one that runs the step waits at the gate
        wait_for(lambda: _ran(home) >= ran + 2 or any(p.poll() is not None for p in procs), 120,
                 what="a continue refused, or both running the step")
    finally:
        gate.touch()
        said = [p.communicate(timeout=120) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, said, strict=True)]


def _failed_resolution(home: Path, servers: list[str]) -> tuple[dict[str, str], Any, Any]:
    """The environment of the processes, the store, and a resolution of ``fixable(4)`` that failed."""
    env = {**os.environ, "SEMATIC_K8S_HOME": str(home), "RACE_FIXED": str(home / "fixed"),
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.pop("SEMATIC_K8S_DB_URL", None)
    store = open_store(home, servers[0] if servers else None)
    os.environ.update(RACE_FIXED=env["RACE_FIXED"], RACE_GATE=str(home / "never"))
    with pytest.raises(sk.ResolutionFailed):
        fp.fixable(4).resolve(sk.LocalResolver(home=home, server=servers[0] if servers else None))
    return env, store, store.list_resolutions(limit=1)[0]


def _continue_at_once(home: Path, servers: list[str]) -> None:
    env, store, original = _failed_resolution(home, servers)
    runs_before = sorted((r.id, r.state, r.output_id) for r in store.runs_of_root(original.id))
    Path(env["RACE_FIXED"]).touch()  # the step is fixed: a continue resolves it
    for i in range(ROUNDS):
        done = _round(home, env, servers, original.id, i)
        assert _ran(home) == i + 1, f"round {i}: the step ran {_ran(home) - i} times: {done}"
        assert sorted(code for code, _, _ in done) == [0, 1], done
        loser = next(err for code, _, err in done if code != 0).strip().splitlines()
        assert REFUSED in loser[-1] and "nothing was started" in loser[-1], loser[-3:]
    resolutions = store.list_resolutions(limit=100)
    continues = [r for r in resolutions if r.rerun_of == original.id]
    assert len(continues) == ROUNDS and {r.state for r in continues} == {"resolved"}  # the refused recorded nothing
    assert len(resolutions) == ROUNDS + 1
    for r in continues:
        assert store.get_artifact(store.get_run(r.id).output_id).summary == (4 + 1) * 10 + 2
    assert sorted((r.id, r.state, r.output_id) for r in store.runs_of_root(original.id)) == runs_before
    assert store.get_resolution(original.id).state == "failed"


@pytest.fixture
def on_sqlite(tmp_path, monkeypatch) -> list[str]:
    """This process and those it starts on a SQLite home of their own (``tmp_path``): no server to go through."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    monkeypatch.delenv("SEMATIC_K8S_DB_URL", raising=False)
    monkeypatch.setenv("SEMATIC_K8S_HOME", str(tmp_path))
    return []


@pytest.fixture
def two_servers(tmp_path, postgres_url, monkeypatch) -> Iterator[list[str]]:
    """Two server processes (replicas) on one PostgreSQL database, started; their URLs."""
    monkeypatch.setenv("SEMATIC_K8S_HOME", str(tmp_path))
    servers = [ServerProcess(tmp_path, db_url=postgres_url) for _ in range(2)]
    with running(*servers):
        yield [s.url for s in servers]


def test_two_continues_of_one_resolution_at_once_on_sqlite(tmp_path, on_sqlite):
    _continue_at_once(tmp_path, on_sqlite)


def test_two_continues_of_one_resolution_at_once_through_two_servers_on_postgres(tmp_path, two_servers):
    _continue_at_once(tmp_path, two_servers)


def _rerun_from_at_once(home: Path, servers: list[str]) -> None:
    env, store, original = _failed_resolution(home, servers)
    runs_before = sorted((r.id, r.state, r.output_id) for r in store.runs_of_root(original.id))
    step = next(r for r in store.runs_of_root(original.id) if r.func_name == "until_fixed")
    Path(env["RACE_FIXED"]).touch()
    done = _round(home, env, servers, step.id, 0, mode="from")
    assert [code for code, _, _ in done] == [0, 0] and _ran(home) == 2, done
    reruns = [r for r in store.list_resolutions(limit=10) if r.rerun_of == original.id]
    assert len(reruns) == 2 and {r.state for r in reruns} == {"resolved"}, reruns
    ids = [{r.id for r in store.runs_of_root(res.id)} for res in reruns]
    assert [len(i) for i in ids] == [len(runs_before)] * 2 and not ids[0] & ids[1]  # whole, and none shared
    for res in reruns:
        assert {r.state for r in store.runs_of_root(res.id)} == {"resolved"}
        assert store.get_artifact(store.get_run(res.id).output_id).summary == 52
    assert sorted((r.id, r.state, r.output_id) for r in store.runs_of_root(original.id)) == runs_before


def test_two_reruns_from_one_run_at_once_on_sqlite(tmp_path, on_sqlite):
    _rerun_from_at_once(tmp_path, on_sqlite)


def test_two_reruns_from_one_run_at_once_through_two_servers_on_postgres(tmp_path, two_servers):
    _rerun_from_at_once(tmp_path, two_servers)


def test_a_continue_killed_on_its_way_does_not_hold_the_next_one_back(tmp_path, monkeypatch, on_sqlite):
    """A continue whose process was killed (kill -9) stays recorded as running until its heartbeat is old: the next
    continue marks it dead, in the transaction that records itself, and runs (it is not refused)."""
    monkeypatch.setenv("RACE_FIXED", str(tmp_path / "fixed"))
    monkeypatch.setenv("RACE_GATE", str(tmp_path / "gate"))
    store = open_store(tmp_path)
    with pytest.raises(sk.ResolutionFailed):
        fp.fixable(4).resolve(sk.LocalResolver())
    original = store.list_resolutions(limit=1)[0]
    Path(os.environ["RACE_FIXED"]).touch()
    env = {**os.environ, "RACE_GO": str(tmp_path / "go"), "RACE_TARGET": original.id, "RACE_MODE": "continue",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "go").touch()
    killed = subprocess.Popen([sys.executable, "-c", API], env=env)
    try:
        wait_for(lambda: _ran(tmp_path) == 1 or killed.poll() is not None, 60, what="the first continue's step")
    finally:
        killed.kill()
        killed.wait()
    first = next(r for r in store.list_resolutions(limit=10) if r.rerun_of == original.id)
    assert first.state == "running"
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", "2")
    db = sqlite3.connect(tmp_path / "db.sqlite3")
    old = "SELECT heartbeat_at < strftime('%Y-%m-%d %H:%M:%f', 'now', '-3 seconds') FROM resolutions WHERE id = ?"
    wait_for(lambda: db.execute(old, (first.id,)).fetchone()[0], 30, what="the killed continue's heartbeat to age")
    db.close()
    Path(os.environ["RACE_GATE"]).touch()
    assert fp.fixable(0).resolve(sk.LocalResolver(rerun_from=original.id, rerun_mode="continue")) == 52
    first = store.get_resolution(first.id)
    assert first.state == "failed" and "the resolver stopped responding" in (first.error or ""), first
    assert _ran(tmp_path) == 2


def test_the_servers_continue_action_refuses_a_resolution_another_one_continues(tmp_path):
    """The dashboard's (the API's) continue of a cloud resolution a running resolution continues already: 409 in one
    line, before a driver is started (that driver's first write would be refused, and the id answered never
    recorded). Once that one ended, the action goes on to start a driver (here: no cluster to start it on)."""
    image = "127.0.0.1:5000/pipelines@sha256:" + "ab" * 32
    config = RerunConfig(launcher="kubernetes", image_repositories=("127.0.0.1:5000/pipelines",),
                         storage_url="s3://sk-races/artifacts")
    with serve(tmp_path, config=ServerConfig(reruns=config)) as s, s.client() as c:
        root = record_resolution(s.url, s.key, kind="cloud", image=image, storage_url=config.storage_url,
                                 state="failed")
        other = uuid.uuid4().hex
        batch = Batch()
        batch.add_resolution(ResolutionRecord(
            id=other, root_func_path="pipes:pipeline", state="running", rerun_of=root, created_at=utcnow(),
            heartbeat_at=utcnow(), settings={"kind": "cloud", "rerun_of": root, "rerun_mode": "continue"}))
        store = HttpStore(s.url, s.key)
        store.write(batch)
        r = c.post(f"/api/v1/resolutions/{root}/rerun", json={"mode": "continue"})
        assert r.status_code == 409 and r.json()["reason"] == "continued-already", r.text
        assert r.json()["continued_by"] == other and f"being continued already by resolution {other}" in r.text
        store.write(Batch(resolution_updates={other: {"state": "failed", "ended_at": utcnow()}}))
        store.close()
        r = c.post(f"/api/v1/resolutions/{root}/rerun", json={"mode": "continue"})
        assert r.json().get("reason") != "continued-already", r.text


# -- the server's continue action: two requests at once ----------------------------------------------------------

ACTION_ROUNDS = 12


@pytest.fixture
def idle_image() -> str:
    import infra

    infra.require_docker()
    return idle_driver_image(infra.docker_client())


def _action_servers(home: Path, storage_url: str, n: int, db_url: str | None = None,
                    docker_host: str | None = None) -> list[ServerProcess]:
    """``n`` server processes (replicas, on ``db_url``) starting reruns' drivers with the Docker launcher."""
    env = {STORAGE_ENV: storage_url, **({"DOCKER_HOST": docker_host} if docker_host else {})}
    args = ("--allow-docker", "--rerun-launcher", "docker", "--rerun-image-repository", IDLE_DRIVER_REPO)
    return [ServerProcess(home, db_url=db_url, env=env, args=args) for _ in range(n)]


def _continues_at_once(urls: list[str], resolution_id: str) -> list[httpx.Response]:
    """A continue of ``resolution_id`` to each of ``urls``, on threads released together (each connected first)."""
    clients = [httpx.Client(base_url=url, timeout=120) for url in urls]
    try:
        for c in clients:
            c.get("/api/v1/health")
        answers = at_once([lambda c=c: c.post(f"/api/v1/resolutions/{resolution_id}/rerun", json={"mode": "continue"})
                           for c in clients], timeout=180)
    finally:
        for c in clients:
            c.close()
    assert all(answers), answers
    return answers


def _continue_action_at_once(servers: list[ServerProcess], image: str, storage_url: str) -> None:
    root = record_resolution(servers[0].url, None, kind="cloud", image=image, storage_url=storage_url, state="failed")
    store = HttpStore(servers[0].url, None)
    try:
        for i in range(ACTION_ROUNDS):
            answers = _continues_at_once([servers[0].url, servers[-1].url], root)
            started = [r.json()["resolution_id"] for r in answers if r.status_code == 202]
            remove_drivers(started)
            assert sorted(r.status_code for r in answers) == [202, 409], f"round {i}: {[r.text for r in answers]}"
            [won], [lost] = started, [r.json() for r in answers if r.status_code == 409]
            assert lost["reason"] == "continued-already" and lost["continued_by"] == won, lost
            assert f"{REFUSED} {won}" in lost["detail"] and "\n" not in lost["detail"], lost
            claimed = store.get_resolution(won)  # the id answered is recorded
            assert claimed is not None and claimed.rerun_of == root and claimed.state == "created", claimed
            store.write(Batch(resolution_updates={won: {"state": "failed", "ended_at": utcnow()}}))  # its end
        continues = [r for r in store.list_resolutions(limit=100) if r.rerun_of == root]
        assert len(continues) == ACTION_ROUNDS, continues  # one a round, none dangling
    finally:
        store.close()


def test_two_continues_through_the_servers_action_at_once_on_sqlite(tmp_path, monkeypatch, idle_image):
    """Two continue requests to the server's action released together, many rounds: exactly one is 202 and its
    resolution recorded at once, the other 409 in one line naming it (before: both 202, both drivers launched, the
    second one's id never recorded)."""
    _, bucket = fresh_bucket(monkeypatch, "sk-races")
    storage_url = f"s3://{bucket}/artifacts"
    servers = _action_servers(tmp_path, storage_url, 1)
    with running(*servers):
        _continue_action_at_once(servers, idle_image, storage_url)


def test_two_continues_through_two_servers_actions_at_once_on_postgres(tmp_path, postgres_url, monkeypatch,
                                                                       idle_image):
    _, bucket = fresh_bucket(monkeypatch, "sk-races")
    storage_url = f"s3://{bucket}/artifacts"
    servers = _action_servers(tmp_path, storage_url, 2, db_url=postgres_url)
    with running(*servers):
        _continue_action_at_once(servers, idle_image, storage_url)


@contextlib.contextmanager
def _action_server(home: Path, monkeypatch: pytest.MonkeyPatch, image: str,
                   docker: bool = True) -> Iterator[tuple[ServerProcess, HttpStore, str]]:
    """One server process starting reruns' drivers with the Docker launcher (``docker=False``: at a socket that is not
    there), its artifacts in a fresh bucket, started: the server, a store through it and a failed cloud resolution of
    ``image`` recorded there. Stopped at the end."""
    _, bucket = fresh_bucket(monkeypatch, "sk-races")
    storage_url = f"s3://{bucket}/artifacts"
    [server] = _action_servers(home, storage_url, 1,
                               docker_host=None if docker else f"unix://{home / 'no-docker-here.sock'}")
    server.start()
    store = HttpStore(server.url, None)
    try:
        yield server, store, record_resolution(server.url, None, kind="cloud", image=image, storage_url=storage_url,
                                               state="failed")
    finally:
        store.close()
        server.stop()


def _with_docker(server: ServerProcess) -> None:
    """``server`` started again with this machine's Docker engine."""
    server.stop()
    server.env["DOCKER_HOST"] = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    server.start()


def test_a_continue_whose_driver_cannot_be_started_is_recorded_failed_and_a_later_one_starts(
        tmp_path, monkeypatch, idle_image):
    """The server's launcher fails after the continue was claimed (no Docker engine where it looks): 502, and the
    resolution it claimed is recorded failed with the launcher's reason, holding nothing back; the next continue
    (Docker back) starts its driver."""
    with _action_server(tmp_path, monkeypatch, idle_image, docker=False) as (server, store, root):
        with httpx.Client(base_url=server.url, timeout=120) as c:
            r = c.post(f"/api/v1/resolutions/{root}/rerun", json={"mode": "continue"})
        assert r.status_code == 502 and r.json()["reason"] == "launcher-failed", r.text
        [failed] = [x for x in store.list_resolutions(limit=10) if x.rerun_of == root]
        assert failed.state == "failed" and failed.ended_at is not None, failed
        assert failed.error == r.json()["detail"], failed.error  # in the words the caller got
        assert "could not start the rerun's driver with the docker launcher" in failed.error
        _with_docker(server)
        with httpx.Client(base_url=server.url, timeout=120) as c:
            r = c.post(f"/api/v1/resolutions/{root}/rerun", json={"mode": "continue"})
        started = [r.json()["resolution_id"]] if r.status_code == 202 else []
        remove_drivers(started)
        assert started and store.get_resolution(started[0]).state == "created", r.text


def test_a_continue_canceled_while_its_driver_starts_is_canceled_at_once_and_holds_nothing_back(
        tmp_path, monkeypatch, idle_image):
    """A cancel of a continue the server's action started, before its driver recorded it (here: a driver that never
    does): 202, recorded canceled at once; the next continue starts."""
    started: list[str] = []
    with _action_server(tmp_path, monkeypatch, idle_image) as (server, store, root):
        try:
            with httpx.Client(base_url=server.url, timeout=120) as c:
                for _ in range(2):
                    r = c.post(f"/api/v1/resolutions/{root}/rerun", json={"mode": "continue"})
                    assert r.status_code == 202, r.text
                    started.append(r.json()["resolution_id"])
                    r = c.post(f"/api/v1/resolutions/{started[-1]}/cancel", json={})
                    assert r.status_code == 202 and r.json()["state"] == "canceled", r.text
                    canceled = store.get_resolution(started[-1])
                    assert canceled.state == "canceled" and "before its driver recorded it" in canceled.error, canceled
        finally:
            remove_drivers(started)


def _child_run(url: str, root: str) -> str:
    """A run under the root of ``root`` (recorded through the API at ``url``): what a rerun from a run names."""
    child = uuid.uuid4().hex
    batch = Batch()
    batch.add_run(RunRecord(id=child, root_id=root, parent_id=root, func_path="pipes:step", func_name="step",
                            state="failed", created_at=utcnow()))
    write_through_api(url, None, batch)
    return child


def test_a_rerun_from_a_run_through_the_servers_action_is_claimed_as_a_continue_is(tmp_path, monkeypatch,
                                                                                     idle_image):
    """A rerun from one run (mode ``from``) through the server's action is recorded before its driver starts, as a
    continue is: a launch that fails records it failed in the words of the 502 (was: nothing recorded, the id never
    answered nor kept); one that starts is recorded ``created`` at once, before its driver records anything (here:
    a driver that never does; was: nothing recorded until then, nothing at all if it never came), and a cancel of
    it cancels it at once."""
    started: list[str] = []
    with _action_server(tmp_path, monkeypatch, idle_image, docker=False) as (server, store, root):
        try:
            step = _child_run(server.url, root)
            ask = {"mode": "from", "rerun_from": step}
            with httpx.Client(base_url=server.url, timeout=120) as c:
                r = c.post(f"/api/v1/resolutions/{root}/rerun", json=ask)
            assert r.status_code == 502 and r.json()["reason"] == "launcher-failed", r.text
            [failed] = [x for x in store.list_resolutions(limit=10) if x.rerun_of == root]
            assert failed.state == "failed" and failed.ended_at is not None, failed
            assert failed.error == r.json()["detail"], failed.error  # in the words the caller got
            assert failed.settings["rerun_mode"] == "from" and failed.settings["rerun_from"] == step, failed.settings
            _with_docker(server)
            with httpx.Client(base_url=server.url, timeout=120) as c:
                r = c.post(f"/api/v1/resolutions/{root}/rerun", json=ask)
                started.extend([r.json()["resolution_id"]] if r.status_code == 202 else [])
                assert started, r.text
                claimed = store.get_resolution(started[0])  # the id answered is recorded at once
                assert claimed is not None and claimed.state == "created" and claimed.rerun_of == root, claimed
                r = c.post(f"/api/v1/resolutions/{started[0]}/cancel", json={})
                assert r.status_code == 202 and r.json()["state"] == "canceled", r.text
        finally:
            remove_drivers(started)
