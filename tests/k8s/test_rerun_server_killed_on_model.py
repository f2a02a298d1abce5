"""A server killed (kill -9) after answering a rerun 202 while its driver's launch was still under way: the cluster
model behind a proxy holding the driver Job's create (``ThrottlingProxy``, ``HELD``), the server a process of its own
(``--rerun-concurrency 1 --rerun-queue 0``: one launch at a time, none waiting), started again on the same database.
The claim is neither lost nor launched again: the restarted server answers it ``created`` at first (failed once its
holder's beats are found stopped: below), makes no Job for it, and its one launch slot is free: the next rerun is
answered 202 and its driver's Job made. (Held before: kept as a test.)"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
import sqlalchemy as sa

from kube_model import Cluster, NodeSpec, Script
from model_workers import driver_job_of
from outages import ServerProcess, ThrottlingProxy
from s3server import fresh_bucket
from sematic_k8s import settings
from serving import claim_of, create_api_key, read_resolution, record_resolution, wait_for
from skewed_clock import FAKETIME, skewed

NS = "sk-runs"
REPO = "127.0.0.1:5000/pipelines"
IMAGE = f"{REPO}/team@sha256:" + "ab" * 32
JOB_CREATE = f"POST /apis/batch/v1/namespaces/{NS}/jobs".encode()


@contextmanager
def create_held(monkeypatch: pytest.MonkeyPatch, bucket: str) -> Iterator[tuple[str, Cluster, ThrottlingProxy]]:
    """A storage URL in a fresh moto bucket named after ``bucket``, the cluster model (its pods running for ever) and
    a proxy before it holding the first driver Job create (let through, closed, at the end)."""
    _, made = fresh_bucket(monkeypatch, bucket)
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=lambda pod, c: Script(forever=True),
                 namespaces=[NS]) as cluster:
        proxy = ThrottlingProxy(int(cluster.proxy().rpartition(":")[2]), lambda head: head.startswith(JOB_CREATE), 1,
                                status=-2)
        try:
            yield f"s3://{made}/artifacts", cluster, proxy
        finally:
            proxy.passing()
            proxy.close()


def test_a_server_killed_after_answering_a_rerun_mid_launch_loses_no_claim_and_launches_nothing_twice(
        tmp_path, monkeypatch) -> None:
    with create_held(monkeypatch, "sk-killed-claim") as (storage, cluster, proxy):
        server = ServerProcess(tmp_path, env={"SEMATIC_K8S_KUBE_HOST": proxy.url, "SEMATIC_K8S_STORAGE": storage},
                               args=("--rerun-launcher", "kubernetes", "--rerun-image-repository", REPO,
                                     "--rerun-namespace", NS, "--self-url", "http://127.0.0.1:1",
                                     "--rerun-concurrency", "1", "--rerun-queue", "0"))
        try:
            server.start()
            root = record_resolution(server.url, None, kind="cloud", image=IMAGE, storage_url=storage)
            with httpx.Client(base_url=server.url, headers={"Origin": server.url}, timeout=30) as c:
                r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
                assert r.status_code == 202, r.text
                first = r.json()["resolution_id"]
                wait_for(lambda: proxy.held == 1, 60, what="the driver Job's create held by the proxy")
                busy = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
                assert busy.status_code == 429, busy.text  # its one slot held by the launch under way
            server.kill()
            server.start()
            with httpx.Client(base_url=server.url, headers={"Origin": server.url}, timeout=30) as c:
                claim = claim_of(c, first)
                assert claim["state"] == "created" and claim["error"] is None, claim
                r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
                assert r.status_code == 202, r.text  # the slot free
                second = r.json()["resolution_id"]
            wait_for(lambda: driver_job_of(cluster, NS, second) is not None, 60, what="the next rerun's driver Job")
            assert driver_job_of(cluster, NS, first) is None  # not launched again by the restarted server
            assert f"rerun {first}" not in server.log.read_text().split("Started server process")[-1]
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.stop()


def test_a_token_secret_left_owned_by_nothing_by_a_server_killed_mid_launch_is_deleted_once_its_claim_ended(
        tmp_path, monkeypatch) -> None:
    """The server killed (kill -9) between its rerun's token Secret and the driver Job's create (held by the proxy,
    then let through: the Job made, never made the Secret's owner): the Secret ``sk-token-<claim>`` is left owned by
    nothing. The restarted server's sweeper deletes it once the claim has ended (failed here, its holder's beats
    stopped) and the grace ($SEMATIC_K8S_TOKEN_SECRET_GRACE, 0 here) passed; the next rerun's Secret, owned by its
    Job and its claim not ended, stays. Was: left for good, holding the token."""
    with create_held(monkeypatch, "sk-killed-token") as (storage, cluster, proxy):
        db_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
        key = create_api_key(db_url, tmp_path, "tests")
        env = {"SEMATIC_K8S_KUBE_HOST": proxy.url, "SEMATIC_K8S_STORAGE": storage,
               "SEMATIC_K8S_TOKEN_SECRET_GRACE": "0", "SEMATIC_K8S_HEARTBEAT_TIMEOUT": "2"}  # a sweep every 0.5 s
        server = ServerProcess(tmp_path, db_url=db_url, local=False, env=env,
                               args=("--rerun-launcher", "kubernetes", "--rerun-image-repository", REPO,
                                     "--rerun-namespace", NS, "--self-url", "http://127.0.0.1:1"))
        try:
            server.start()
            root = record_resolution(server.url, key, kind="cloud", image=IMAGE, storage_url=storage)
            with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30) as c:
                r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
                assert r.status_code == 202, r.text
                first = r.json()["resolution_id"]
                wait_for(lambda: proxy.held == 1, 60, what="the driver Job's create held by the proxy")
            server.kill()
            proxy.passing()
            [left] = [s for s in cluster.list("secrets", NS) if s["metadata"]["name"] == f"sk-token-{first}"]
            assert not left["metadata"].get("ownerReferences"), left["metadata"]
            server.start()
            with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30) as c:
                r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
                assert r.status_code == 202, r.text
                second = r.json()["resolution_id"]
                wait_for(lambda: driver_job_of(cluster, NS, second) is not None, 60, what="the next rerun's Job")
                ended = wait_for(lambda: (r := c.get(f"/api/v1/resolutions/{first}").json())["state"] != "created"
                                 and r, 60, what="the claim whose holder was killed failed")
                assert ended["state"] == "failed" and ended["error"].startswith(HOLDER_GONE), ended
            left_name = f"sk-token-{first}"
            wait_for(lambda: not [s for s in cluster.list("secrets", NS) if s["metadata"]["name"] == left_name],
                     60, what="the token Secret left owned by nothing deleted")
            [kept] = [s for s in cluster.list("secrets", NS) if s["metadata"]["name"] == f"sk-token-{second}"]
            assert [o["name"] for o in kept["metadata"]["ownerReferences"]] == [f"sk-driver-{second}"]
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.stop()


# -- a claim whose holder went silent: the server process launching its driver killed, or stopped ----------------
# Each server process beats the claims it launches (``held_by``, its heartbeat every $SEMATIC_K8S_HEARTBEAT_INTERVAL,
# on a thread of its own): the sweeper of another replica on the same database fails one whose holder went silent
# for 4 beats (at most the heartbeat timeout), on the database's clock, in words saying so. Was: the claim kept its
# last note ("... the Kubernetes API is slow to answer") for the heartbeat timeout plus 10 minutes.
HOLDER_ENV = {"SEMATIC_K8S_HEARTBEAT_INTERVAL": "1", "SEMATIC_K8S_HEARTBEAT_TIMEOUT": "5",  # silent after 4 s
              "SEMATIC_K8S_KUBE_TIMEOUT": "600"}  # the held create is never timed out by the launch itself
HOLDER_GONE = "the server that was launching this rerun stopped (last heard "


def _replica(tmp_path, db_url: str, proxy: ThrottlingProxy, storage: str, env: dict[str, str] | None = None
             ) -> ServerProcess:
    return ServerProcess(tmp_path, db_url=db_url,
                         env={"SEMATIC_K8S_KUBE_HOST": proxy.url, "SEMATIC_K8S_STORAGE": storage, **HOLDER_ENV,
                              **(env or {})},
                         args=("--rerun-launcher", "kubernetes", "--rerun-image-repository", REPO,
                               "--rerun-namespace", NS, "--self-url", "http://127.0.0.1:1"))


def _claim(url: str, res_id: str) -> dict:
    return read_resolution(lambda: httpx.get(f"{url}/api/v1/resolutions/{res_id}", timeout=30))


def _failed_as_held_by_a_silent_server(url: str, res_id: str) -> dict:
    """The claim read through ``url`` once it is failed (a generous bound: no timed assertion), in the words saying
    that its holder stopped."""
    wait_for(lambda: _claim(url, res_id)["state"] != "created", 120, what=f"claim {res_id} failed")
    claim = _claim(url, res_id)
    assert claim["state"] == "failed", claim
    assert claim["error"].startswith(HOLDER_GONE) and claim["error"].endswith(" UTC): re-run it"), claim
    return claim


def _show(url: str, home, res_id: str) -> str:
    """``sematic-k8s resolutions show`` of ``res_id`` through the server at ``url``: what it prints."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)},
           settings.SERVER_ENV: url, settings.HOME_ENV: str(home / "cli")}
    done = subprocess.run([sys.executable, "-m", "sematic_k8s.cli", "resolutions", "show", res_id], env=env,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def _rerun(url: str, root: str) -> str:
    r = httpx.post(f"{url}/api/v1/resolutions/{root}/rerun", json={}, headers={"Origin": url}, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()["resolution_id"]


class _HeldLaunch(NamedTuple):
    """What :func:`_two_replicas_one_launch_held` made: the rerun of ``root`` claimed as ``first``."""

    cluster: Cluster
    proxy: ThrottlingProxy
    first_server: ServerProcess
    other: ServerProcess
    root: str
    first: str


@contextmanager
def _two_replicas_one_launch_held(tmp_path, monkeypatch: pytest.MonkeyPatch, bucket: str, db_url: str,
                                  other_env: dict[str, str] | None = None) -> Iterator[_HeldLaunch]:
    """Two server replicas on ``db_url`` (the other's environment with ``other_env``), both started: a resolution
    recorded through the first, its rerun answered 202 by the first (claim ``first``), the driver Job's create held by
    the proxy (:func:`create_held`). Each replica still running at the end is stopped."""
    with create_held(monkeypatch, bucket) as (storage, cluster, proxy):
        first_server = _replica(tmp_path, db_url, proxy, storage)
        other = _replica(tmp_path, db_url, proxy, storage, other_env)
        try:
            first_server.start()
            other.start()
            root = record_resolution(first_server.url, None, kind="cloud", image=IMAGE, storage_url=storage)
            first = _rerun(first_server.url, root)
            wait_for(lambda: proxy.held == 1, 60, what="the driver Job's create held by the proxy")
            yield _HeldLaunch(cluster, proxy, first_server, other, root, first)
        finally:
            for server in (first_server, other):
                if server.proc is not None and server.proc.poll() is None:
                    server.stop()


@pytest.mark.parametrize("skewed_replica", [False, True], ids=["same-clock", "replica-5min-ahead"])
def test_a_claim_whose_launching_server_was_killed_is_failed_by_another_replica_within_seconds(
        tmp_path, monkeypatch, db_url, skewed_replica) -> None:
    """Two server replicas on one database (SQLite, PostgreSQL); the first answers a rerun 202 while its driver
    Job's create is held by the proxy. While it lives, the claim stays ``created`` however long the create takes
    (here past twice the holder's silence), also read by a replica whose clock is 5 minutes ahead (PostgreSQL:
    judged on the database's clock); the first killed (kill -9), the second fails the claim within seconds, "the
    server that was launching this rerun stopped (last heard HH:MM:SS UTC): re-run it", and a rerun through it is
    answered 202 and gets its Job; the killed launch's Job is never made."""
    if skewed_replica and not db_url.startswith("postgresql"):
        pytest.skip("clocks that disagree are caused on PostgreSQL only (SQLite's clock is its machine's)")
    if skewed_replica and FAKETIME is None:
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    skew = skewed("+5m") if skewed_replica else {}
    if skew:
        skew["PYTHONPATH"] = os.pathsep.join(p for p in (skew["PYTHONPATH"], os.environ.get("PYTHONPATH")) if p)
    with _two_replicas_one_launch_held(tmp_path, monkeypatch, "sk-holder-killed", db_url, skew) as (
            cluster, _, first_server, other, root, first):
        time.sleep(10)  # past twice the holder's silence, and the other replica's own start (it judges then)
        claim = _claim(other.url, first)
        assert claim["state"] == "created" and claim["error"] is None, claim  # a slow launch is not a dead one
        first_server.kill()
        failed = _failed_as_held_by_a_silent_server(other.url, first)
        shown = _show(other.url, tmp_path, first[:8])
        assert "failed" in shown and failed["error"] in shown, shown  # the user's read says it in those words
        second = _rerun(other.url, root)
        wait_for(lambda: driver_job_of(cluster, NS, second) is not None, 60, what="the next rerun's driver Job")
        assert driver_job_of(cluster, NS, first) is None
        time.sleep(8)  # twice the holder's silence: a claim whose driver started is its driver's, not its holder's
        claim = _claim(other.url, second)
        assert claim["state"] == "created" and claim["error"] is None, claim


def test_a_claim_whose_launching_server_was_stopped_is_failed_and_the_server_resumed_launches_nothing(
        tmp_path, monkeypatch) -> None:
    """The launching server stopped (SIGSTOP, a paused VM or a loaded node) rather than killed: the other replica
    fails its claim in the same words, and a rerun through it gets its Job. Resumed (SIGCONT) and its held create let
    through, the first server finds its claim ended after the create: that Job deleted again, the claim's record
    as the other replica left it (not overwritten by the resumed holder's beats or its launch's end): one driver
    Job, the second rerun's."""
    db_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    with _two_replicas_one_launch_held(tmp_path, monkeypatch, "sk-holder-stopped", db_url) as (
            cluster, proxy, first_server, other, root, first):
        assert first_server.proc is not None
        first_server.proc.send_signal(signal.SIGSTOP)
        try:
            failed = _failed_as_held_by_a_silent_server(other.url, first)
            second = _rerun(other.url, root)
            wait_for(lambda: driver_job_of(cluster, NS, second) is not None, 60, what="the next rerun's Job")
        finally:
            first_server.proc.send_signal(signal.SIGCONT)
        proxy.passing()  # the held create lands: the resumed launch reads its claim ended, deletes that Job
        job = f"sk-driver-{first}"
        wait_for(lambda: [r for r in cluster.calls(verb="delete", resource="jobs") if r.name == job], 60,
                 what="the resumed launch deleting the Job its held create made")
        wait_for(lambda: driver_job_of(cluster, NS, first) is None, 60, what="the resumed launch's Job deleted")
        time.sleep(3)  # the resumed holder's beats, had they been written, would be by now
        assert _claim(first_server.url, first) == _claim(other.url, first)
        claim = _claim(other.url, first)
        assert (claim["state"], claim["error"]) == ("failed", failed["error"]), claim
        assert driver_job_of(cluster, NS, second) is not None


def _holders(db_url: str, claims: list[str] | None = None) -> dict[str, tuple[str, str | None, object]]:
    """Each claim's state, holder (``held_by``) and heartbeat, read straight from the database: of ``claims``, else of
    every claim a holder names."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            if claims is None:
                rows = conn.execute(sa.text("SELECT id, state, held_by, heartbeat_at FROM resolutions "
                                            "WHERE held_by IS NOT NULL")).all()
            else:
                rows = conn.execute(sa.text("SELECT id, state, held_by, heartbeat_at FROM resolutions WHERE id IN :ids")
                                    .bindparams(sa.bindparam("ids", expanding=True)), {"ids": claims}).all()
    finally:
        engine.dispose()
    return {row.id: (row.state, row.held_by, row.heartbeat_at) for row in rows}


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command's name: its state first, then its parent's pid."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def _holder_pid(holder: str | None) -> int:
    """The pid in a holder's name (host:pid:random)."""
    return int(str(holder).split(":")[1])


def _started_processes(server: ServerProcess, count: int) -> list[int]:
    """The pids of the ``count`` processes of ``server`` (``--workers``), once each has started serving (its
    "Application startup complete" in the log). The server answers its health check as soon as one serves: another
    may still be starting (seconds on a loaded machine), and takes no connection until then."""
    wait_for(lambda: server.log.read_text().count("Application startup complete") >= count, 120,
             what=f"the server's {count} processes started (log: {server.log})")
    pids = [int(p) for p in re.findall(r"Started server process \[(\d+)\]", server.log.read_text())]
    assert len(pids) == count, server.log.read_text()[-3000:]
    return pids


def _rerun_by(server: ServerProcess, db_url: str, root: str, process: int, others: list[int]) -> str:
    """A rerun of ``root`` sent to ``server`` and taken by its process ``process``: the ``others`` stopped (SIGSTOP:
    they accept no connection) until the rerun's claim is recorded, resumed (SIGCONT) before its answer is awaited.
    (Which process accepts a connection the kernel leaves to whichever asks first: chance.) Its claim's id."""
    known = set(_holders(db_url))
    pool = ThreadPoolExecutor(1)
    try:
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: all(_stat(pid)[0] == "T" for pid in others), 30, what=f"processes {others} stopped")
        answered = pool.submit(_rerun, server.url, root)
        new = wait_for(lambda: [i for i in _holders(db_url) if i not in known], 60,
                       what=f"the claim of the rerun sent while only process {process} accepts")
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)
        pool.shutdown()
    res_id = answered.result()
    assert new == [res_id], (new, res_id)
    return res_id


def test_under_workers_each_process_holds_its_own_claims_and_one_killed_fails_only_its_own(
        tmp_path, monkeypatch, postgres_url) -> None:
    """A server started with ``--workers 2`` (PostgreSQL), a rerun launched by each of its two processes (the other
    stopped meanwhile; the cluster model's driver Job creates all held by the proxy): each claim names the process
    launching it (host, pid, random part: two holders, each a child of the server's process, not the parent). One
    process killed (kill -9, the parent left running): its claim is failed, once its silence passed, "the server that
    was launching this rerun stopped ...", while the other's goes on being beaten (its heartbeat moves on past twice
    the holder's silence) and stays ``created``. Were holders per server (one holder for its processes), the claims
    would name one holder, and a server's beats would keep a killed process's claims alive. (Was: reruns sent until
    the kernel had handed one to each process, at most 24: all went to one when the other was still starting, or by
    chance, and the test failed once in a run of its file.)"""
    with create_held(monkeypatch, "sk-holder-workers") as (storage, cluster, proxy):
        proxy.left = 64  # every driver Job create held
        server = ServerProcess(tmp_path, db_url=postgres_url,
                               env={"SEMATIC_K8S_KUBE_HOST": proxy.url, "SEMATIC_K8S_STORAGE": storage, **HOLDER_ENV},
                               args=("--workers", "2", "--rerun-launcher", "kubernetes", "--rerun-image-repository",
                                     REPO, "--rerun-namespace", NS, "--self-url", "http://127.0.0.1:1",
                                     "--rerun-concurrency", "16"))
        try:
            server.start()
            assert server.proc is not None
            killed_pid, kept_pid = _started_processes(server, 2)
            assert [_stat(pid)[1] for pid in (killed_pid, kept_pid)] == [str(server.proc.pid)] * 2
            root = record_resolution(server.url, None, kind="cloud", image=IMAGE, storage_url=storage)
            # the one to be killed launches first: the one kept is never stopped while it holds a claim
            killed_claim = _rerun_by(server, postgres_url, root, killed_pid, [kept_pid])
            kept_claim = _rerun_by(server, postgres_url, root, kept_pid, [killed_pid])
            held = _holders(postgres_url, [killed_claim, kept_claim])
            killed, kept = held[killed_claim][1], held[kept_claim][1]
            assert killed != kept and (_holder_pid(killed), _holder_pid(kept)) == (killed_pid, kept_pid), held
            os.kill(killed_pid, signal.SIGKILL)  # one process, not the server's parent process
            _failed_as_held_by_a_silent_server(server.url, killed_claim)
            assert server.proc.poll() is None  # the server lives on
            before = _holders(postgres_url, [kept_claim])
            time.sleep(8)  # twice the holder's silence
            after = _holders(postgres_url, [kept_claim])
            assert after[kept_claim][:2] == ("created", kept), after[kept_claim]  # not failed, still its holder's
            assert after[kept_claim][2] > before[kept_claim][2], (before[kept_claim], after[kept_claim])  # beaten on
            assert _claim(server.url, kept_claim)["error"] is None
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.stop()
