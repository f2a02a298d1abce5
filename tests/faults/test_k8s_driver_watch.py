"""Following a driver on Kubernetes (what the CloudResolver does besides reading records): its Job's status and
its pod's exit and log, through the official client, on the cluster model (tests/support/kube_model): the Job
controller retries the driver's killed pods until its backoffLimit is used up."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("kubernetes")

from kubernetes import client  # noqa: E402

from kube_model import Cluster, NodeSpec, Script, SimContext  # noqa: E402
from sematic_k8s.future import new_id  # noqa: E402
from sematic_k8s.launchers.kubernetes import DriverJob, launch_driver  # noqa: E402
from sematic_k8s.settings import DRIVER_ENV  # noqa: E402
from sematic_k8s.specs import DriverSpec, ResolutionSettings  # noqa: E402
from serving import wait_for  # noqa: E402

NS = "sk-faults"
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "b" * 64
LOGS = "driver of resolution X: executor kubernetes\nresuming after a restart\n"


def test_a_driver_job_that_failed_is_seen_with_its_pods_exit_and_last_log_lines(monkeypatch):
    release = threading.Event()

    def killed(ctx: SimContext) -> int:
        release.wait(30)
        ctx.log(LOGS)
        return 137  # SIGKILL

    def driver(pod: dict[str, Any], container: dict[str, Any]) -> Script:
        # the first pod runs until released and is killed; the Job's replacements run out of memory at once
        return Script(func=killed) if not release.is_set() else Script(run=0.05, oom=True, logs=LOGS)

    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=driver) as cluster:
        cluster.namespace(NS)
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", cluster.proxy())  # how start_driver and the watch reach it
        spec = DriverSpec(root={"id": "a" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                          executor="kubernetes", executor_settings={"namespace": NS},
                          resolution=ResolutionSettings(root_id=new_id(), max_parallelism=8))
        api = cluster.client()
        name = launch_driver(spec, spec.root_id, {DRIVER_ENV: spec.to_json()}, namespace=NS, api_client=api)
        watch = DriverJob(spec)
        cluster.wait(lambda: any(p["status"].get("phase") == "Running" for p in cluster.list("pods", NS)),
                     message="the driver's pod running")
        assert watch.ended() is None  # running (and a pod that dies with retries left comes back)
        release.set()
        end: Any = wait_for(watch.ended, 60, what="the driver Job to fail")
        assert "failed (BackoffLimitExceeded: Job has reached the specified backoff limit)" in end.how, end.how
        assert end.exit_code == 137 and "exited with code 137" in end.how
        assert "resuming after a restart" in end.last_logs
        assert len(cluster.list("pods", NS)) == 4  # backoffLimit 3: the first pod and three replacements
        client.BatchV1Api(api).delete_namespaced_job(name, NS)
        assert "was deleted" in wait_for(watch.ended, 30, what="the deleted Job").how
        watch.close()
        api.close()
        assert not cluster.errors, cluster.errors
