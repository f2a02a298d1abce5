"""Following a driver on Kubernetes (what the CloudResolver does besides reading records): its Job's status and
its pod's exit and log, through the official client, against the Kubernetes API stand-in on 127.0.0.1."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("kubernetes")
pytest.importorskip("kmock")

from kubernetes import client  # noqa: E402

from kmock_k8s import FakeJobController, PodHandle, serve_k8s  # noqa: E402
from sematic_k8s.future import new_id  # noqa: E402
from sematic_k8s.launchers.kubernetes import DriverJob, launch_driver  # noqa: E402
from sematic_k8s.settings import DRIVER_ENV  # noqa: E402
from sematic_k8s.specs import DriverSpec, ResolutionSettings  # noqa: E402
from serving import wait_for  # noqa: E402

NS = "sk-faults"
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "b" * 64


def test_a_driver_job_that_failed_is_seen_with_its_pods_exit_and_last_log_lines(monkeypatch):
    release = threading.Event()

    def driver_killed(pod: PodHandle) -> None:
        pod.run()
        release.wait(30)
        pod.logs("driver of resolution X: executor kubernetes\nresuming after a restart\n")
        pod.fail(137, reason="OOMKilled")
        pod.job_status(failed=4, conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                              "message": "Job has reached the specified backoff limit"}])

    with serve_k8s() as (emu, url):
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", url)  # how start_driver and the watch reach the cluster
        spec = DriverSpec(root={"id": "a" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                          executor="kubernetes", executor_settings={"namespace": NS},
                          resolution=ResolutionSettings(root_id=new_id(), max_parallelism=8))
        api = client.ApiClient(client.Configuration(host=url))
        with FakeJobController(emu, url, NS, driver_killed, selector="sematic-k8s/role=driver") as ctl:
            launch_driver(spec, spec.root_id, {DRIVER_ENV: spec.to_json()}, namespace=NS, api_client=api)
            watch = DriverJob(spec)
            wait_for(lambda: ctl.pods, 30, what="the driver's pod")
            assert watch.ended() is None  # running (and a pod that dies with retries left comes back)
            release.set()
            end: Any = wait_for(watch.ended, 30, what="the driver Job to fail")
            assert not ctl.errors, ctl.errors
        assert "failed (BackoffLimitExceeded: Job has reached the specified backoff limit)" in end.how
        assert end.exit_code == 137 and "exited with code 137" in end.how
        assert "resuming after a restart" in end.last_logs
        client.BatchV1Api(api).delete_namespaced_job(f"sk-driver-{spec.root_id}", NS)
        assert "was deleted" in wait_for(watch.ended, 30, what="the deleted Job").how
        watch.close()
        api.close()
