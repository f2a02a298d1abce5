"""The Helm chart's objects at work on the cluster model (tests/support/kube_model), each request authorised as
the ServiceAccount that makes it against the Roles the chart renders:

- a dashboard/API rerun of a Kubernetes resolution: the server (started with the command and settings of the
  chart's Deployment) creates the rerun's driver Job and token Secret as its own ServiceAccount, and tells the
  driver the server's in-cluster address, never 127.0.0.1;
- the secrets hook: the chart's Job, run in Docker from the server image as its own ServiceAccount, makes the
  bundled PostgreSQL's password once and keeps it on every later run (upgrades, Argo CD syncs).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytest.importorskip("kubernetes")
helm = pytest.importorskip("helm_python")

from kubernetes import client  # noqa: E402

from infra import REGISTRY  # noqa: E402
from kube_model import Cluster, NodeSpec, Script  # noqa: E402
from outages import S3Server  # noqa: E402
from sematic_k8s.k8s import manifests  # noqa: E402
from sematic_k8s_server import auth  # noqa: E402
from sematic_k8s_server.db import open_store  # noqa: E402
from sematic_k8s_server.token_secrets import LeftTokens  # noqa: E402
from serving import record_resolution, server_process  # noqa: E402
from waiting import wait_for  # noqa: E402

CHART = Path(__file__).resolve().parents[2] / "helm" / "sematic-k8s"
NS = "pipelines"
FULLNAME = "sk-sematic-k8s"
REPO = f"{REGISTRY}/pipelines"
IMAGE = f"{REPO}@sha256:" + "ab" * 32
STORAGE = "s3://sematic-k8s-artifacts"  # the chart's default artifacts.bucket


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render({"image": {"repository": f"{REGISTRY}/sematic-k8s-server"}, **values}, name="sk",
                             namespace=NS, is_install=True, is_upgrade=False)
    return [d for path, text in sorted(files.items()) if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def is_hook(doc: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (doc["metadata"].get("annotations") or {})


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=lambda p, c: Script(forever=True)) as c:
        c.namespace(NS, {"pod-security.kubernetes.io/enforce": "restricted"})
        yield c
        assert not c.errors, c.errors


def record_cloud_resolution(url: str, key: str) -> str:
    """A finished Kubernetes resolution, as a CloudResolver's driver records it."""
    return record_resolution(url, key, kind="cloud", image=IMAGE, storage_url=STORAGE, executor="kubernetes",
                             platform="amd64")


def test_a_dashboard_rerun_on_a_chart_install_starts_its_driver_as_the_servers_account(cluster, tmp_path):
    docs = render({"server": {"rerunImageRepositories": [REPO]}, "runs": {"configMapName": "sk-settings"},
                   "postgresql": {"auth": {"password": "pw"}}})
    cluster.apply([d for d in docs if not is_hook(d) and d["kind"] in (
        "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret")], namespace=NS)
    (container,) = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["sematic-k8s", "server"]
    flags = [a for i, a in enumerate(command[2:]) if command[2:][i - 1 if i else 0] not in ("--host", "--port")
             and a not in ("--host", "--port")]  # this test's server listens on 127.0.0.1, on a free port
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e and e["name"] != "SEMATIC_K8S_HOME"}
    server_sa = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["serviceAccountName"]
    env["SEMATIC_K8S_KUBE_HOST"] = cluster.proxy(f"{NS}/{server_sa}")  # its in-cluster identity
    home = tmp_path / "home"
    home.mkdir()
    store = open_store(f"sqlite:///{home / 'db.sqlite3'}")
    key = auth.create_key(store.engine, "dashboard")
    store.close()
    s3 = S3Server()  # the chart's bucket, which the server checks at start-up, on an S3 API of this test's
    s3.start()
    try:
        s3.client().create_bucket(Bucket=STORAGE.removeprefix("s3://"))
        env.update({"AWS_ENDPOINT_URL_S3": s3.endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                    "AWS_DEFAULT_REGION": "us-east-1"})
        with server_process(home, *flags, env=env) as (_, url):
            root = record_cloud_resolution(url, key)
            answer = httpx.post(f"{url}/api/v1/resolutions/{root}/rerun", json={}, headers={"X-API-Key": key},
                                timeout=60)
            assert answer.status_code == 202, answer.text
            new_id = answer.json()["resolution_id"]
            # answered once its driver started, or after the answer window when the API is slow (a loaded machine):
            # its Job, then its token Secret owned by the Job, may come a moment after the answer
            wait_for(lambda: ((cluster.get("secrets", NS, manifests.token_secret_name(new_id)) or {})
                              .get("metadata", {}).get("ownerReferences")),
                     what="the rerun's token Secret owned by its Job")
            # a rerun whose driver Job a quota refuses: its token Secret deleted again, as the server's account
            quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "one-job"},
                     "spec": {"hard": {"count/jobs.batch": "1"}}}
            client.CoreV1Api(cluster.client()).create_namespaced_resource_quota(NS, quota)
            refused = httpx.post(f"{url}/api/v1/resolutions/{root}/rerun", json={}, headers={"X-API-Key": key},
                                 timeout=60)
            assert refused.status_code == 502 and "exceeded quota" in refused.text, refused.text
    finally:
        s3.stop()

    admin = cluster.client()
    job = client.BatchV1Api(admin).read_namespaced_job(manifests.driver_job_name(new_id), NS)
    pod = job.spec.template.spec
    env_of = {e.name: e for e in pod.containers[0].env}
    assert env_of["SEMATIC_K8S_SERVER"].value == f"http://{FULLNAME}.{NS}.svc:8000"  # never 127.0.0.1
    assert pod.service_account_name == "sematic-k8s-driver"  # from the chart's ConfigMap "sk-settings"
    assert pod.node_selector == {"kubernetes.io/arch": "amd64"}  # the recorded image's platform
    token_ref = env_of["SEMATIC_K8S_API_KEY"].value_from.secret_key_ref
    secret = client.CoreV1Api(admin).read_namespaced_secret(token_ref.name, NS)
    assert [(o.kind, o.name) for o in secret.metadata.owner_references] == [("Job", job.metadata.name)]
    assert base64.b64decode(secret.data["api-key"]).decode().startswith("sk8t_")
    calls = cluster.calls(user=cluster.user_of(f"{NS}/{server_sa}"))
    assert {(c.verb, c.resource_path, c.status) for c in calls} - {("list", "secrets", 200)} == {  # its sweeper's
        ("get", "configmaps", 200), ("create", "secrets", 201), ("create", "jobs", 201), ("patch", "secrets", 200),
        ("list", "nodes", 403),  # the platform check, best effort: left to the scheduler without the permission
        ("create", "jobs", 403), ("get", "jobs", 404), ("delete", "secrets", 200)}  # the refused one's
    left = [s.metadata.name for s in client.CoreV1Api(admin).list_namespaced_secret(NS).items
            if s.metadata.name.startswith("sk-token-")]
    assert left == [token_ref.name]
    # the sweeper of token Secrets left owned by nothing, as the server's account: allowed to list, the owned one kept
    store = open_store(f"sqlite:///{home / 'db.sqlite3'}")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SEMATIC_K8S_KUBE_HOST", env["SEMATIC_K8S_KUBE_HOST"])
            mp.setenv("SEMATIC_K8S_TOKEN_SECRET_GRACE", "0")
            tokens = LeftTokens(store, [NS])
            assert tokens.sweep() == []
            tokens.close()
    finally:
        store.close()
    assert [c.status for c in cluster.calls(user=cluster.user_of(f"{NS}/{server_sa}"), verb="list",
                                            resource="secrets")][-1:] == [200]
    cluster.wait(lambda: client.CoreV1Api(admin).list_namespaced_pod(NS, label_selector=f"job-name={job.metadata.name}"
                                                                     ).items, message="the driver's pod admitted")


@pytest.fixture(scope="module")
def server_image() -> str:
    from infra import require_docker
    from sematic_k8s.packaging.images import build_image

    base = require_docker()
    return build_image("server", f"{REGISTRY}/sematic-k8s-server:chart-test", base_image=base, push=True,
                       progress=lambda _: None)


def test_the_secrets_hook_makes_the_postgresql_password_once(server_image, tmp_path):
    from infra import require_docker

    require_docker()
    docs = render({"image": {"repository": server_image.split("@")[0], "digest": server_image.split("@")[1]}})
    hook = [d for d in docs if is_hook(d) and d["metadata"]["name"] == f"{FULLNAME}-secrets"]
    assert {d["kind"] for d in hook} == {"ServiceAccount", "Role", "RoleBinding", "Job"}
    job = one(hook, "Job", f"{FULLNAME}-secrets")
    with Cluster([NodeSpec("node-1", runtime="docker")]) as cluster:
        cluster.namespace(NS, {"pod-security.kubernetes.io/enforce": "restricted"})
        api = cluster.client()
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        cluster.apply([d for d in hook if d["kind"] != "Job"], namespace=NS)
        passwords = []
        for attempt in range(3):  # an install, an upgrade (or an Argo CD sync), an upgrade from an older chart
            if attempt:
                batch.delete_namespaced_job(job["metadata"]["name"], NS, propagation_policy="Foreground")
                cluster.wait(lambda: not batch.list_namespaced_job(NS).items, timeout=60, message="the Job gone")
            if attempt == 2:  # the chart before the hook kept the password beside the URL
                core.delete_namespaced_secret(f"{FULLNAME}-postgresql", NS)
                core.create_namespaced_secret(NS, {"metadata": {"name": f"{FULLNAME}-database"}, "stringData": {
                    "url": "postgresql+psycopg://sematic:older@db/sematic", "postgres-password": "older"}})
            batch.create_namespaced_job(NS, job)
            done = cluster.wait(lambda: (j := batch.read_namespaced_job(job["metadata"]["name"], NS)).status.succeeded
                                or j.status.failed, timeout=180, message="the hook Job's end")
            [pod] = core.list_namespaced_pod(NS, label_selector=f"job-name={job['metadata']['name']}").items
            log = core.read_namespaced_pod_log(pod.metadata.name, NS)
            assert done == 1 and batch.read_namespaced_job(job["metadata"]["name"], NS).status.succeeded == 1, log
            assert (f"secret {NS}/{FULLNAME}-postgresql " + ("exists: kept" if attempt == 1 else "created")) in log
            secret = core.read_namespaced_secret(f"{FULLNAME}-postgresql", NS)
            passwords.append(base64.b64decode(secret.data["password"]).decode())
        assert passwords[0] == passwords[1] and len(passwords[0]) == 48
        assert passwords[2] == "older"  # the database's password, from where the older chart kept it
        hook_sa = cluster.user_of(f"{NS}/{FULLNAME}-secrets")
        made = {(c.verb, c.resource) for c in cluster.calls(user=hook_sa)}
        assert made == {("get", "secrets"), ("create", "secrets")}
        sts = one(docs, "StatefulSet", f"{FULLNAME}-postgresql")
        ref = sts["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {
            "name": f"{FULLNAME}-postgresql", "key": "password"}}} in ref
        api.close()
