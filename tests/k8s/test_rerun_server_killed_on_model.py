"""A server killed (kill -9) after answering a rerun 202 while its driver's launch was still under way: the cluster
model behind a proxy holding the driver Job's create (``ThrottlingProxy``, ``HELD``), the server a process of its own
(``--rerun-concurrency 1 --rerun-queue 0``: one launch at a time, none waiting), started again on the same database.
The claim is neither lost nor launched again: the restarted server answers it ``created`` (failed by the sweeper past
its grace, "its driver never recorded it", as any claim no driver records), makes no Job for it, and its one launch
slot is free: the next rerun is answered 202 and its driver's Job made. (Held before: kept as a test.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from kube_model import Cluster, NodeSpec, Script
from model_workers import driver_job_of
from outages import ServerProcess, ThrottlingProxy
from s3server import fresh_bucket
from serving import create_api_key, record_resolution, wait_for

NS = "sk-runs"
REPO = "127.0.0.1:5000/pipelines"
IMAGE = f"{REPO}/team@sha256:" + "ab" * 32
JOB_CREATE = f"POST /apis/batch/v1/namespaces/{NS}/jobs".encode()


class KeyedServer(ServerProcess):
    """A :class:`ServerProcess` requiring API keys (not ``--local``): its reruns' drivers get a token, in a Secret."""

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "sematic_k8s_server.cli", "server", "--port",
                                          str(self.port), "--home", str(self.home), "--db-url", str(self.db_url),
                                          *self.args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        wait_for(self._up, 60, what=f"the server on port {self.port} (log: {self.log})")


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
                assert proxy.held == 1, "the driver Job's create was not held"
                busy = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
                assert busy.status_code == 429, busy.text  # its one slot held by the launch under way
            server.kill()
            server.start()
            with httpx.Client(base_url=server.url, headers={"Origin": server.url}, timeout=30) as c:
                claim = c.get(f"/api/v1/resolutions/{first}").json()
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
    nothing. The restarted server's sweeper deletes it once the claim
    has ended (canceled here) and the grace ($SEMATIC_K8S_TOKEN_SECRET_GRACE, 0 here) passed; the next rerun's
    Secret, owned by its Job and its claim not ended, stays. Was: left for good, holding the token."""
    with create_held(monkeypatch, "sk-killed-token") as (storage, cluster, proxy):
        db_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
        key = create_api_key(db_url, tmp_path, "tests")
        env = {"SEMATIC_K8S_KUBE_HOST": proxy.url, "SEMATIC_K8S_STORAGE": storage,
               "SEMATIC_K8S_TOKEN_SECRET_GRACE": "0", "SEMATIC_K8S_HEARTBEAT_TIMEOUT": "2"}  # a sweep every 0.5 s
        server = KeyedServer(tmp_path, db_url=db_url, env=env,
                             args=("--rerun-launcher", "kubernetes", "--rerun-image-repository", REPO,
                                   "--rerun-namespace", NS, "--self-url", "http://127.0.0.1:1"))
        try:
            server.start()
            root = record_resolution(server.url, key, kind="cloud", image=IMAGE, storage_url=storage)
            with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30) as c:
                r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
                assert r.status_code == 202, r.text
                first = r.json()["resolution_id"]
                assert proxy.held == 1, "the driver Job's create was not held"
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
                assert c.post(f"/api/v1/resolutions/{first}/cancel", json={}).status_code in (200, 202)
                assert c.get(f"/api/v1/resolutions/{first}").json()["state"] == "canceled"
            left_name = f"sk-token-{first}"
            wait_for(lambda: not [s for s in cluster.list("secrets", NS) if s["metadata"]["name"] == left_name],
                     60, what="the token Secret left owned by nothing deleted")
            [kept] = [s for s in cluster.list("secrets", NS) if s["metadata"]["name"] == f"sk-token-{second}"]
            assert [o["name"] for o in kept["metadata"]["ownerReferences"]] == [f"sk-driver-{second}"]
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.stop()
