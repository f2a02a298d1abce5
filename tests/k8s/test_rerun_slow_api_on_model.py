"""A server's rerun with the Kubernetes launcher while the Kubernetes API is slow: the cluster model behind a proxy
that holds the driver Job's create unanswered (``ThrottlingProxy``, ``HELD``: passed on, and answered, only once the
proxy passes), over real HTTP. The rerun request is answered 202 with the claim's id once the launch went on for
``ANSWER_WINDOW``, the claim noted "launching the driver: ... the Kubernetes API is slow to answer"; then the driver's
Job is made and the note cleared, or, canceled meanwhile, no driver Job is left, or, refused then, the claim is
recorded failed in the launcher's words. Was: the request was held until the API answered (here: never, the client
timing out with no id to cancel)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kube_model import Cluster, NodeSpec, Script
from model_workers import driver_job_of
from outages import ThrottlingProxy
from sematic_k8s.k8s.manifests import driver_job_name
from sematic_k8s_server.config import RerunConfig, ServerConfig
from serving import Served, claim_of, record_resolution, serve, wait_for

NS = "sk-runs"
IMAGE = "127.0.0.1:5000/pipelines/team@sha256:" + "ab" * 32
STORAGE = "s3://sk-slow-api/artifacts"
JOB_CREATE = f"POST /apis/batch/v1/namespaces/{NS}/jobs".encode()


@contextlib.contextmanager
def slow_api_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                   ) -> Iterator[tuple[Served, httpx.Client, Cluster, ThrottlingProxy, str]]:
    """A server whose reruns start driver Jobs on the cluster model, reached through a proxy holding the driver Job's
    create; a rerun asked of it and answered 202: (the server, a client of it, the cluster, the proxy, the rerun's id)
    while the create is still held."""
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=lambda pod, c: Script(forever=True),
                 namespaces=[NS]) as cluster:
        proxy = ThrottlingProxy(int(cluster.proxy().rpartition(":")[2]), lambda head: head.startswith(JOB_CREATE), 1,
                                status=-2)
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", proxy.url)  # the server's identity: an admin of the cluster
        config = RerunConfig(launcher="kubernetes", image_repositories=("127.0.0.1:5000/pipelines",),
                             storage_url=STORAGE, executor_settings={"namespace": NS})
        try:
            with serve(tmp_path, config=ServerConfig(reruns=config)) as s, s.client() as c:
                root = record_resolution(s.url, s.key, kind="cloud", image=IMAGE, storage_url=STORAGE)
                r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})  # 30 s at most (the client's timeout)
                assert r.status_code == 202, r.text
                new_id = r.json()["resolution_id"]
                assert proxy.held == 1, "the driver Job's create was not held: the API was not slow"
                yield s, c, cluster, proxy, new_id
        finally:
            proxy.passing()
            proxy.close()


def test_a_rerun_whose_kubernetes_api_is_slow_is_answered_and_noted_then_starts_its_driver(tmp_path, monkeypatch):
    """Answered 202 while the Job's create is held, the claim ``created`` and noted so; once the API answers, the
    driver's Job is made and the note cleared."""
    with slow_api_rerun(tmp_path, monkeypatch) as (_, c, cluster, proxy, new_id):
        res = claim_of(c, new_id)
        assert res["state"] == "created", res
        assert res["settings"]["waiting"] == (f"launching the driver: its Job {driver_job_name(new_id)} in namespace "
                                              f"{NS}; the Kubernetes API is slow to answer"), res
        assert driver_job_of(cluster, NS, new_id) is None
        proxy.passing()
        wait_for(lambda: "waiting" not in claim_of(c, new_id)["settings"], 60, what="the claim's note cleared")
        assert driver_job_of(cluster, NS, new_id) is not None
        assert claim_of(c, new_id)["state"] == "created"  # its driver (a simulated container) records nothing


def test_a_rerun_canceled_while_its_kubernetes_api_is_slow_leaves_no_driver_job(tmp_path, monkeypatch, caplog):
    """Canceled through the server while the Job's create is held: canceled at once; once the API answers, the Job
    it made is deleted again and the launch ends without a driver (the server's log), the claim as the cancel left
    it (not failed, not noted)."""
    caplog.set_level(logging.INFO, logger="sematic_k8s_server")
    with slow_api_rerun(tmp_path, monkeypatch) as (_, c, cluster, proxy, new_id):
        r = c.post(f"/api/v1/resolutions/{new_id}/cancel")
        assert r.status_code == 202 and r.json()["state"] == "canceled", r.text
        proxy.passing()
        ended = wait_for(lambda: [m for m in caplog.messages if m.startswith(f"rerun {new_id}: ") and any(
            w in m for w in ("driver started", "driver not started", "launcher failed"))], 60,
                         what="the end of the rerun's launch (the server's log)")
        assert ended == [f"rerun {new_id}: driver not started: resolution {new_id} ended while its driver waited "
                         "for a slow Kubernetes API: the driver is not started"], ended
        assert cluster.calls(verb="create", resource="jobs"), "the held create never reached the API server"
        wait_for(lambda: driver_job_of(cluster, NS, new_id) is None, 30, what="the driver Job deleted")
        res = claim_of(c, new_id)
        assert res["state"] == "canceled" and res["error"] == "canceled before its driver recorded it", res


def test_a_rerun_refused_after_its_slow_kubernetes_api_answered_is_recorded_failed(tmp_path, monkeypatch):
    """The Job's create, held past the answer, is then refused (an admission webhook's 403): the claim is recorded
    failed in the launcher's words, as a refusal within the window is the request's 502."""
    with slow_api_rerun(tmp_path, monkeypatch) as (_, c, cluster, proxy, new_id):
        denial = 'admission webhook "policy.example.com" denied the request: no driver Jobs in sk-runs'
        cluster.fail(403, verb="create", resource="jobs", message=denial)
        proxy.passing()
        res = wait_for(lambda: (r := claim_of(c, new_id))["state"] != "created" and r, 60,
                       what="the claim's end")
        assert res["state"] == "failed", res
        assert res["error"] == (f"could not start the rerun's driver with the kubernetes launcher: RuntimeError: "
                                f"could not create the driver Job {driver_job_name(new_id)} in namespace {NS} (403): "
                                f"{denial}"), res
        assert driver_job_of(cluster, NS, new_id) is None
