"""A server killed (kill -9) after answering a rerun 202 while its driver's launch was still under way: the cluster
model behind a proxy holding the driver Job's create (``ThrottlingProxy``, ``HELD``), the server a process of its own
(``--rerun-concurrency 1 --rerun-queue 0``: one launch at a time, none waiting), started again on the same database.
The claim is neither lost nor launched again: the restarted server answers it ``created`` (failed by the sweeper past
its grace, "its driver never recorded it", as any claim no driver records), makes no Job for it, and its one launch
slot is free: the next rerun is answered 202 and its driver's Job made. (Held before: kept as a test.)"""

from __future__ import annotations

import httpx

from kube_model import Cluster, NodeSpec, Script
from model_workers import driver_job_of
from outages import ServerProcess, ThrottlingProxy
from s3server import fresh_bucket
from serving import record_resolution, wait_for

NS = "sk-runs"
REPO = "127.0.0.1:5000/pipelines"
IMAGE = f"{REPO}/team@sha256:" + "ab" * 32
JOB_CREATE = f"POST /apis/batch/v1/namespaces/{NS}/jobs".encode()


def test_a_server_killed_after_answering_a_rerun_mid_launch_loses_no_claim_and_launches_nothing_twice(
        tmp_path, monkeypatch) -> None:
    _, bucket = fresh_bucket(monkeypatch, "sk-killed-claim")
    storage = f"s3://{bucket}/artifacts"
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=lambda pod, c: Script(forever=True),
                 namespaces=[NS]) as cluster:
        proxy = ThrottlingProxy(int(cluster.proxy().rpartition(":")[2]), lambda head: head.startswith(JOB_CREATE), 1,
                                status=-2)
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
            proxy.passing()
            proxy.close()
            if server.proc is not None and server.proc.poll() is None:
                server.stop()
