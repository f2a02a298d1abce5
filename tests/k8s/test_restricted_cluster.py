"""A pipeline on Kubernetes as an operator's cluster runs it, on the cluster model (tests/support/kube_model) with
a kubelet that runs pods in the real Docker engine: the run namespace enforces the Pod Security "restricted" level,
the chart's run-namespace objects (ServiceAccounts, Roles, RoleBindings, settings ConfigMap, S3 Secret) are applied
as Helm renders them, and the driver pod talks to the API server with its own ServiceAccount token, so every one
of its requests is authorised against the chart's driver Role.

The CloudResolver builds the image (from the local base image, which runs as root) and launches the driver; the
driver creates one worker Job per remote run, owned by its own Job, with the chart's worker ServiceAccount and its
task (presigned URLs) in a Secret of the Job's own, read by the image's non-root user (no S3 key in the pod); the
driver's API token is a Secret of its own that ends with its resolution. Skipped without dockerd, the
registry and S3 (failed under CI=true).
"""

from __future__ import annotations

import base64
import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from s3server import fresh_bucket

pytest.importorskip("kubernetes")
boto3 = pytest.importorskip("boto3")
helm = pytest.importorskip("helm_python")

from kubernetes import client  # noqa: E402

import sematic_k8s as sk  # noqa: E402
from infra import REGISTRY, require_docker  # noqa: E402
from kube_model import Cluster, NodeSpec  # noqa: E402
from projects import user_project  # noqa: E402
from sematic_k8s.specs import IMAGE_UID  # noqa: E402
from serving import serve  # noqa: E402

CHART = Path(__file__).resolve().parents[2] / "helm" / "sematic-k8s"
NS = "sk-restricted"
DRIVER_SA = "sematic-k8s-driver"

PIPELINE = '''
    import os
    import pathlib
    import sematic_k8s as sk

    @sk.func(inline=False)
    def square(x: int) -> int:
        home = pathlib.Path.home()
        (home / "scratch.txt").write_text("HOME is writable")  # libraries cache things in HOME
        return x * x

    @sk.func(inline=False)
    def whoami() -> str:
        return f"{os.getuid()}:{os.getgid()} {pathlib.Path.home()}"

    @sk.func
    def add_all(xs: list[int]) -> int:
        return sum(xs)

    @sk.func
    def pipeline(n: int) -> list:
        return [add_all([square(i) for i in range(1, n + 1)]), whoami()]

    @sk.func(inline=False)
    def nap(seconds: float) -> float:
        import time
        time.sleep(seconds)
        return seconds

    @sk.func
    def napping(seconds: float) -> float:
        return nap(seconds)
'''


def chart_run_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart's objects in the run namespace, as Helm renders them."""
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render({"image": {"repository": f"{REGISTRY}/sematic-k8s-server"}, **values}, name="sk",
                             namespace=NS, is_install=True, is_upgrade=False)
    docs = [d for path, text in sorted(files.items()) if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    return [d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret")
            and d["metadata"].get("namespace") == NS]


def _restricted_namespace(cluster: Cluster, server_url: str, s3: tuple[str, str]) -> None:
    """The run namespace, enforcing Pod Security "restricted", with the chart's objects in it: its pods reach the
    server at ``server_url`` and store to S3 (``s3``: endpoint, bucket). Pods run on the host network: the server
    and S3 are on 127.0.0.1."""
    endpoint, bucket = s3
    cluster.namespace(NS, {"pod-security.kubernetes.io/enforce": "restricted",
                           "pod-security.kubernetes.io/enforce-version": "latest"})
    cluster.apply(chart_run_objects({"server": {"inClusterUrl": server_url}, "artifacts": {
        "bucket": bucket, "prefix": "runs", "s3": {
            "endpoint": endpoint, "region": "us-east-1", "accessKeyId": os.environ["AWS_ACCESS_KEY_ID"],
            "secretAccessKey": os.environ["AWS_SECRET_ACCESS_KEY"]}}}), namespace=NS)


def _resolver(server: Any, bucket: str, base_image: str, root: Path, owner_check: float | None = None,
              **options: Any) -> sk.CloudResolver:
    """A CloudResolver building ``root`` on ``base_image`` and running it in the run namespace, through ``server``,
    storing to ``bucket`` (``owner_check``: the driver's, if given; ``options``: the resolver's)."""
    settings: dict[str, Any] = {"namespace": NS, **({"owner_check": owner_check} if owner_check is not None else {})}
    return sk.CloudResolver(server=server.url, api_key=server.key, storage=f"s3://{bucket}/runs",
                            registry=f"{REGISTRY}/sk-test-restricted", base_image=base_image, project_root=str(root),
                            executor="kubernetes", executor_settings=settings, **options)


@pytest.fixture
def s3(monkeypatch) -> tuple[str, str]:
    endpoint, bucket = fresh_bucket(monkeypatch, "sk-restricted")
    return endpoint, bucket


@pytest.fixture
def project(tmp_path) -> Iterator[tuple[Path, Any]]:
    root = tmp_path / "project"
    with user_project(root, "restricted", PIPELINE) as module:
        yield root, importlib.import_module(module)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    require_docker()
    with Cluster([NodeSpec("node-1", runtime="docker")]) as c:
        yield c
        assert not c.errors, c.errors


def test_a_pipeline_runs_in_a_restricted_namespace_as_the_charts_service_accounts(cluster, s3, project, tmp_path,
                                                                                  monkeypatch):
    base_image = require_docker()
    _, bucket = s3
    root, mod = project
    (tmp_path / "server").mkdir()
    lines: list[str] = []
    with serve(tmp_path / "server") as server:
        _restricted_namespace(cluster, server.url, s3)
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", cluster.proxy())  # the user's kubeconfig: an admin here
        resolver = _resolver(server, bucket, base_image, root, poll_interval=0.2, progress=lines.append)
        f = mod.pipeline(3)
        total, who = f.resolve(resolver)
        assert total == 1 + 4 + 9, lines
        assert who == f"{IMAGE_UID}:{IMAGE_UID} /home/sematic-k8s"

        api = cluster.client()
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        selector = f"sematic-k8s/resolution-id={f.id}"
        phases: dict[str, str] = {}

        def all_ended() -> list[Any]:
            ps = core.list_namespaced_pod(NS, label_selector=selector).items
            phases.update({p.metadata.name: p.status.phase for p in ps})
            return ps if ps and all(p.status.phase == "Succeeded" for p in ps) else []
        try:
            pods = cluster.wait(all_ended, timeout=120, message="the driver pod's end")
        except AssertionError as e:  # how each pod that did not succeed ended, and its last lines: why
            failed = [p for p in core.list_namespaced_pod(NS, label_selector=selector).items
                      if p.status.phase != "Succeeded"]
            why = {p.metadata.name: ([c.state.terminated.to_dict() for c in p.status.container_statuses or []
                                      if c.state and c.state.terminated],
                                     _last_lines(core, p.metadata.name)) for p in failed}
            raise AssertionError(f"{e}; pods' phases: {phases}; those not succeeded: {why}; resolution "
                                 f"{server.store.get_resolution(f.id)}") from None
        assert sorted(p.metadata.labels["sematic-k8s/role"] for p in pods) == ["driver"] + ["worker"] * 4
        assert not [e for e in cluster.events(NS) if e["reason"] == "FailedCreate"]
        res = server.store.get_resolution(f.id)
        assert res.settings["platform"] == "amd64"
        for pod in pods:
            assert pod.spec.node_selector == {"kubernetes.io/arch": "amd64"}
        # the driver worked as its ServiceAccount, within the chart's Role, and was never refused
        driver = cluster.user_of(f"{NS}/{DRIVER_SA}")
        calls = cluster.calls(user=driver)
        assert {(c.verb, c.resource_path) for c in calls} >= {("create", "jobs"), ("list", "pods"),
                                                               ("create", "secrets"), ("delete", "secrets")}
        assert not [c for c in calls if c.status in (401, 403)], [(c.verb, c.path, c.status) for c in calls]
        workers = batch.list_namespaced_job(NS, label_selector=f"{selector},sematic-k8s/role=worker").items
        assert len(workers) == 4
        _launched_as_the_chart_says(server, res, cluster, workers, lines)
        api.close()


def _launched_as_the_chart_says(server: Any, res: Any, cluster: Any, workers: list[Any], lines: list[str]) -> None:
    """The driver Job and its workers' Jobs: the built image by digest, the chart's ServiceAccounts and S3 Secret,
    the driver's token in a Secret of its own (ended with its resolution), workers owned by the driver's Job, and
    each remote run's record naming its Job and pod."""
    from sematic_k8s.k8s import manifests

    api = cluster.client()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    settings = next(c for c in cluster.list("configmaps", NS) if "SEMATIC_K8S_STORAGE_SECRET" in (c.get("data") or {}))
    storage_secret = settings["data"]["SEMATIC_K8S_STORAGE_SECRET"]
    worker_sa = settings["data"]["SEMATIC_K8S_WORKER_SERVICE_ACCOUNT"]
    assert res.state == "resolved" and "@sha256:" in res.image
    [driver] = batch.list_namespaced_job(NS, label_selector=f"sematic-k8s/resolution-id={res.id},"
                                                            "sematic-k8s/role=driver").items
    assert driver.metadata.name == manifests.driver_job_name(res.id)
    assert driver.spec.template.spec.containers[0].image == res.image
    assert driver.spec.template.spec.service_account_name == DRIVER_SA
    key_ref = {e.name: e for e in driver.spec.template.spec.containers[0].env}["SEMATIC_K8S_API_KEY"]
    assert key_ref.value is None and key_ref.value_from.secret_key_ref.name == manifests.token_secret_name(res.id)
    token = base64.b64decode(core.read_namespaced_secret(manifests.token_secret_name(res.id), NS).data["api-key"]
                             ).decode()
    assert token.startswith("sk8t_") and token != server.key
    with server.client(key=token) as ended:  # its resolution ended: so did its token
        assert ended.get(f"/api/v1/resolutions/{res.id}").status_code == 401
    remote = [r for r in server.store.runs_of_root(res.id) if r.func_name in ("square", "whoami")]
    assert len(remote) == 4 and all(r.state == "resolved" for r in remote)
    assert {j.metadata.labels["sematic-k8s/run-id"] for j in workers} == {r.id for r in remote}
    for job in workers:
        assert [(o.kind, o.name, o.uid) for o in job.metadata.owner_references] == [
            ("Job", driver.metadata.name, driver.metadata.uid)]
        pod_spec = job.spec.template.spec
        assert pod_spec.containers[0].image == res.image and pod_spec.service_account_name == worker_sa
        env = {e.name: e for e in pod_spec.containers[0].env}  # no storage key: its task's URLs, from its own Secret
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env) and not pod_spec.containers[0].env_from
        assert [v.secret.secret_name for v in pod_spec.volumes] == [manifests.task_secret_name(job.metadata.name)]
        assert pod_spec.security_context.fs_group == IMAGE_UID
    driver_env = {e.name: e for e in driver.spec.template.spec.containers[0].env}  # the driver presigns: it has them
    assert driver_env["AWS_SECRET_ACCESS_KEY"].value_from.secret_key_ref.name == storage_secret
    assert not [s for s in core.list_namespaced_secret(NS).items if s.metadata.name.endswith("-task")]
    pods = core.list_namespaced_pod(NS, label_selector=f"sematic-k8s/resolution-id={res.id}").items
    pod_of_job = {p.metadata.labels["job-name"]: p.metadata.name for p in pods}
    for r in remote:
        notes = r.notes["executor"]
        assert notes["executor"] == "kubernetes" and notes["namespace"] == NS and notes["image"] == res.image
        assert notes["job"] == manifests.worker_job_name(r.id, 1) and notes["pod"] == pod_of_job[notes["job"]]
    assert any("driver started" in line for line in lines), lines
    api.close()


def _last_lines(core: Any, pod: str) -> str:
    """The last lines a pod printed, or why they cannot be read (for a failure's message)."""
    try:
        return str(core.read_namespaced_pod_log(pod, NS, tail_lines=30))
    except client.ApiException as e:
        return f"(its log: {e.status} {e.reason})"


def test_a_driver_pod_started_after_its_resolution_ended_completes_its_job(cluster, s3, project, tmp_path,
                                                                           monkeypatch):
    """The driver pod (the built image, the chart's ServiceAccount, its token from its Secret) is evicted after the
    server recorded its resolution resolved, before it heard the answer (held by a proxy between the pods and the
    server) and so before it exited 0. The eviction is ignored by the Job's podFailurePolicy, and the Job's next pod
    finds its token refused with the end named: it says so in one line and exits 0, and the Job Completes. Was: it
    exited 1, "the server refuses this driver's token", and the Job of a pipeline that resolved Failed."""
    from outages import HoldingProxy

    base_image = require_docker()
    _, bucket = s3
    root, mod = project
    (tmp_path / "server").mkdir()
    f = mod.pipeline(1)
    end = f'"resolution_updates":{{"{f.id}":{{"state":"resolved"'.encode()
    with serve(tmp_path / "server") as server:
        proxy = HoldingProxy(int(server.url.rsplit(":", 1)[1]),
                             hold=lambda req: req.startswith(b"POST /api/v1/store/write") and end in req)
        _restricted_namespace(cluster, proxy.url, s3)
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", cluster.proxy())
        resolver = _resolver(server, bucket, base_image, root, detach=True)
        f.resolve(resolver)
        api = cluster.client()
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        selector = f"sematic-k8s/resolution-id={f.id},sematic-k8s/role=driver"
        try:
            cluster.wait(lambda: proxy.held is not None, timeout=240, message="the driver's write of the end")
            [first] = core.list_namespaced_pod(NS, label_selector=selector).items
            assert proxy.release()[0] == 200  # recorded; the driver waits for an answer that never comes
            assert server.store.get_resolution(f.id).state == "resolved"
            cluster.evict(NS, first.metadata.name)

            def job_ended() -> list[str]:
                job = batch.read_namespaced_job(f"sk-driver-{f.id}", NS)
                return [c.type for c in job.status.conditions or [] if c.status == "True"
                        and c.type in ("Complete", "Failed")]
            assert cluster.wait(job_ended, timeout=120, message="the driver Job's end") == ["Complete"]
            pods = {p.metadata.name: p for p in core.list_namespaced_pod(NS, label_selector=selector).items}
            [second] = [p for name, p in pods.items() if name != first.metadata.name]
            assert pods[first.metadata.name].status.reason == "Evicted"
            assert second.status.phase == "Succeeded"
            said = [line for line in core.read_namespaced_pod_log(second.metadata.name, NS).splitlines()
                    if " driver INFO " not in line]
            assert said == [f"resolution {f.id} already ended: resolved; nothing to do"], said
            assert server.store.get_resolution(f.id).state == "resolved"
        finally:
            proxy.close()
            api.close()


def test_a_driver_pod_whose_job_is_deleted_without_it_stops_and_deletes_its_pods(cluster, s3, project, tmp_path,
                                                                                 monkeypatch):
    """A detached resolution (no CloudResolver follows it) whose driver Job someone deletes without its pods
    (propagationPolicy Orphan) while its worker naps: the driver pod (the built image, the chart's Role) reads its
    Job gone, records the resolution failed, deletes its worker's Job and, last, its own pod. Nothing of the
    resolution is left in the namespace. Was: the driver pod stayed, ended, for ever (no Job to delete it)."""
    base_image = require_docker()
    _, bucket = s3
    root, mod = project
    (tmp_path / "server").mkdir()
    f = mod.napping(600)
    with serve(tmp_path / "server") as server:
        _restricted_namespace(cluster, server.url, s3)
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", cluster.proxy())
        resolver = _resolver(server, bucket, base_image, root, detach=True, owner_check=1.0)
        f.resolve(resolver)
        api = cluster.client()
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        selector = f"sematic-k8s/resolution-id={f.id}"

        def running(role: str) -> list[str]:
            return [p.metadata.name for p in core.list_namespaced_pod(
                NS, label_selector=f"{selector},sematic-k8s/role={role}").items if p.status.phase == "Running"]
        try:
            cluster.wait(lambda: running("worker"), timeout=240, message="the worker napping")
            [driver_pod] = running("driver")
            batch.delete_namespaced_job(f"sk-driver-{f.id}", NS, propagation_policy="Orphan")
            res = cluster.wait(lambda: (r := server.store.get_resolution(f.id)).state != "running" and r, timeout=60,
                               message="the resolution's end")
            assert res.state == "failed" and "DriverJobDeleted: the driver's Job " in res.error, res.error
            cluster.wait(lambda: not core.list_namespaced_pod(NS, label_selector=selector).items
                         and not batch.list_namespaced_job(NS, label_selector=selector).items, timeout=120,
                         message="the resolution's pods and Jobs gone")
            driver = cluster.user_of(f"{NS}/{DRIVER_SA}")
            assert [c.status for c in cluster.calls(user=driver, verb="delete", resource="pods")
                    if c.name == driver_pod] == [200]  # the driver deleted its own pod
        finally:
            api.close()
