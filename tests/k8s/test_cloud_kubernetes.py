"""CloudResolver with executor="kubernetes", end to end on one machine: the real server, real S3 API,
real registry and image, and the Kubernetes API stand-in (tests/support/kmock_k8s.py) on 127.0.0.1 with a fake Job
controller whose kubelet runs each pod's container for real with docker (host network).

The driver Job is created by the CloudResolver (launch_driver); its pod runs the driver from the built
image, which creates one worker Job per non-inline run in the stand-in; their pods run in docker too."""

from __future__ import annotations

import base64
import importlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from s3server import fresh_bucket

pytest.importorskip("kubernetes")
pytest.importorskip("kmock")
boto3 = pytest.importorskip("boto3")

from kubernetes import client  # noqa: E402

import sematic_k8s as sk  # noqa: E402
from infra import REGISTRY, require_docker  # noqa: E402
from kmock_k8s import FakeJobController, PodHandle, serve_k8s  # noqa: E402
from projects import user_project  # noqa: E402
from sematic_k8s.k8s import manifests  # noqa: E402
from serving import serve  # noqa: E402

NS = "sk-cloud-k8s"
RESOLUTION = "sematic-k8s/resolution-id"
STORAGE_SECRET = "sematic-k8s-s3"

PIPELINE = '''
    import os
    import sematic_k8s as sk

    @sk.func(inline=False)
    def square(x: int) -> int:
        print(f"squaring {x} on {os.environ.get('HOSTNAME', 'a pod')}")
        return x * x

    @sk.func(inline=False)
    def offset(n: int) -> int:
        return 100 * n

    @sk.func
    def add_all(xs: list[int], base: int) -> int:
        return base + sum(xs)

    @sk.func
    def pipeline(n: int) -> int:
        return add_all([square(i) for i in range(1, n + 1)], offset(n))
'''


def docker_kubelet(docker: Any, containers: list[Any]) -> Any:
    """Run a pod's container with docker: its image (by digest), command, and env as the kubelet would give it
    (secretKeyRefs read from the stand-in's Secrets, downward API fields from the pod); host network."""
    def kubelet(pod: PodHandle) -> None:
        c = pod.container
        env = pod.env()
        container = docker.containers.run(
            c["image"], c["command"], environment=env, network_mode="host", detach=True,
            name=f"{pod.name}-{uuid.uuid4().hex[:4]}",
            labels={k: v for k, v in pod.labels.items() if k.startswith("sematic-k8s/")})
        containers.append(container)
        pod.run()
        code = container.wait(timeout=300)["StatusCode"]
        pod.logs(container.logs().decode(errors="replace"))
        pod.succeed() if code == 0 else pod.fail(code)
    return kubelet


@pytest.fixture
def s3_url(monkeypatch) -> str:
    _, bucket = fresh_bucket(monkeypatch, "sk-cloud-k8s")
    return f"s3://{bucket}/artifacts"


@pytest.fixture
def project(tmp_path) -> Iterator[tuple[Any, Any]]:
    """A user project with one pipeline module, importable here as in the image."""
    root = tmp_path / "project"
    with user_project(root, "k8scloud", PIPELINE) as module:
        yield root, importlib.import_module(module)


def setup_cluster(api: client.ApiClient, server: Any) -> None:
    """What the Helm chart puts in the run namespace: the settings ConfigMap and the storage Secret (each
    driver's token gets a Secret of its own, made by the launcher)."""
    core = client.CoreV1Api(api)

    def b64(value: str) -> str:
        return base64.b64encode(value.encode()).decode()

    core.create_namespaced_config_map(NS, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="sematic-k8s"),
        data={"SEMATIC_K8S_SERVER": server.url,  # host network: 127.0.0.1 is the server from every pod
              "SEMATIC_K8S_S3_ENDPOINT": os.environ["AWS_ENDPOINT_URL_S3"],
              "SEMATIC_K8S_SERVICE_ACCOUNT": "sematic-k8s-driver",
              "SEMATIC_K8S_WORKER_SERVICE_ACCOUNT": "sematic-k8s-worker",
              "SEMATIC_K8S_STORAGE_SECRET": STORAGE_SECRET}))
    core.create_namespaced_secret(NS, client.V1Secret(
        metadata=client.V1ObjectMeta(name=STORAGE_SECRET),
        data={"AWS_ACCESS_KEY_ID": b64(os.environ["AWS_ACCESS_KEY_ID"]),
              "AWS_SECRET_ACCESS_KEY": b64(os.environ["AWS_SECRET_ACCESS_KEY"])}))


def test_cloud_resolver_on_kubernetes_runs_driver_and_worker_pods(s3_url, project, tmp_path, monkeypatch):
    base_image = require_docker()  # skips without docker (fails under CI=true)
    import infra

    docker = infra.docker_client()
    root, mod = project
    lines: list[str] = []
    containers: list[Any] = []
    (tmp_path / "server").mkdir()
    with serve(tmp_path / "server") as server, serve_k8s() as (emu, kube_url):
        api = client.ApiClient(client.Configuration(host=kube_url))
        setup_cluster(api, server)
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", kube_url)  # launch_driver, from this process
        kubelet = docker_kubelet(docker, containers)
        try:
            with FakeJobController(emu, kube_url, NS, kubelet, selector="app.kubernetes.io/managed-by=sematic-k8s",
                                   workers=6) as ctl:
                resolver = sk.CloudResolver(
                    server=server.url, api_key=server.key, storage=s3_url, registry=f"{REGISTRY}/sk-test-cloud-k8s",
                    base_image=base_image, project_root=str(root), executor="kubernetes",
                    # the driver's pod reaches the stand-in by URL (a real pod uses its in-cluster config)
                    executor_settings={"namespace": NS, "host": kube_url},
                    poll_interval=0.2, progress=lines.append)
                f = mod.pipeline(3)
                value = f.resolve(resolver)
                assert not ctl.errors, ctl.errors
            assert value == 300 + 1 + 4 + 9, lines

            res = server.store.get_resolution(f.id)
            assert res.state == "resolved" and "@sha256:" in res.image
            runs = server.store.runs_of_root(f.id)
            remote = [r for r in runs if r.func_name in ("square", "offset")]
            assert len(remote) == 4 and all(r.state == "resolved" for r in remote)

            batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
            selector = f"{RESOLUTION}={f.id}"
            [driver] = batch.list_namespaced_job(NS, label_selector=f"{selector},sematic-k8s/role=driver").items
            workers = batch.list_namespaced_job(NS, label_selector=f"{selector},sematic-k8s/role=worker").items
            assert driver.metadata.name == manifests.driver_job_name(f.id)
            assert driver.spec.template.spec.containers[0].image == res.image
            assert driver.spec.template.spec.service_account_name == "sematic-k8s-driver"
            key_ref = {e.name: e for e in driver.spec.template.spec.containers[0].env}["SEMATIC_K8S_API_KEY"]
            assert key_ref.value_from.secret_key_ref.name == manifests.token_secret_name(f.id)  # its own token
            token = base64.b64decode(client.CoreV1Api(api).read_namespaced_secret(
                manifests.token_secret_name(f.id), NS).data["api-key"]).decode()
            assert token.startswith("sk8t_") and token != server.key
            with server.client(key=token) as ended:  # its resolution ended: so did its token
                assert ended.get(f"/api/v1/resolutions/{f.id}").status_code == 401
            assert len(workers) == len(remote)
            assert {j.metadata.labels["sematic-k8s/run-id"] for j in workers} == {r.id for r in remote}
            for job in workers:
                assert [(o.kind, o.name, o.uid) for o in job.metadata.owner_references] == [
                    ("Job", driver.metadata.name, driver.metadata.uid)]
                pod_spec = job.spec.template.spec
                assert pod_spec.containers[0].image == res.image
                assert pod_spec.service_account_name == "sematic-k8s-worker"
                env = {e.name: e for e in pod_spec.containers[0].env}
                assert env["AWS_SECRET_ACCESS_KEY"].value is None
                assert env["AWS_SECRET_ACCESS_KEY"].value_from.secret_key_ref.name == STORAGE_SECRET

            pods = core.list_namespaced_pod(NS, label_selector=selector).items
            roles = sorted(p.metadata.labels["sematic-k8s/role"] for p in pods)
            assert roles == ["driver"] + ["worker"] * len(remote)
            pod_of_job = {p.metadata.labels["job-name"]: p.metadata.name for p in pods}
            for r in remote:
                notes = r.notes["executor"]
                assert notes["executor"] == "kubernetes" and notes["namespace"] == NS
                assert notes["image"] == res.image
                assert notes["pod"] == pod_of_job[notes["job"]]
                assert notes["job"] == manifests.worker_job_name(r.id, 1)
            assert any("driver started" in line for line in lines)
            api.close()
        finally:
            for c in containers:
                try:
                    c.remove(force=True)
                except Exception:  # noqa: BLE001 - best effort
                    pass
