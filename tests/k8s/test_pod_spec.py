"""Driver and worker pods on a cluster as operators run them, on the cluster model (tests/support/kube_model):
admitted in a Pod Security "restricted" namespace, sent only to nodes of their image's CPU architecture, and
given none of the driver's pod identity (EKS IRSA / Pod Identity variables)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")

from kubernetes import client  # noqa: E402

from kube_model import Cluster, NodeSpec, Script  # noqa: E402
from sematic_k8s import settings  # noqa: E402
from sematic_k8s.future import new_id  # noqa: E402
from sematic_k8s.k8s import manifests  # noqa: E402
from sematic_k8s.launchers.kubernetes import launch_driver  # noqa: E402
from sematic_k8s.specs import IMAGE_UID, DriverSpec, ResolutionSettings, TaskSpec  # noqa: E402

NS = "locked"
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "ab" * 32
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


class Func:
    """What worker_job reads of a func."""

    name, path = "square", "pipes:square"
    cpu, memory, gpu, timeout = "250m", "128Mi", None, None


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    nodes = [NodeSpec("amd-1", runtime="sim", arch="amd64")]
    with Cluster(nodes, behaviour=lambda p, c: Script(run=0.05)) as c:
        c.namespace(NS, RESTRICTED)
        yield c
        assert not c.errors, c.errors


@pytest.fixture
def admin(cluster: Cluster) -> Iterator[client.ApiClient]:
    api = cluster.client()
    yield api
    api.close()


def task() -> TaskSpec:
    return TaskSpec(new_id(), new_id(), Func.path, None, {}, {}, 1)


def driver_spec(platform: str | None = None) -> DriverSpec:
    return DriverSpec(root={"id": "a" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                      resolution=ResolutionSettings(root_id=new_id()), executor="kubernetes", platform=platform)


def launcher(cluster: Cluster) -> client.ApiClient:
    """A client as a ServiceAccount that may create Jobs in NS and nothing else (as the chart's server or a
    driver: no permission on nodes)."""
    rbac = "rbac.authorization.k8s.io"
    client.CoreV1Api(cluster.client()).create_namespaced_service_account(NS, {"metadata": {"name": "launcher"}})
    meta = {"name": "launcher", "namespace": NS}
    cluster.apply([{"apiVersion": f"{rbac}/v1", "kind": "Role", "metadata": meta,
                    "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}]},
                   {"apiVersion": f"{rbac}/v1", "kind": "RoleBinding", "metadata": meta,
                    "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "launcher"},
                    "subjects": [{"kind": "ServiceAccount", "name": "launcher", "namespace": NS}]}])
    return cluster.client(f"{NS}/launcher")


def pod_of(cluster: Cluster, api: client.ApiClient, job: str) -> Any:
    def found() -> Any:
        pods = client.CoreV1Api(api).list_namespaced_pod(NS, label_selector=f"job-name={job}").items
        return pods[0] if pods else None
    return cluster.wait(found, message=f"a pod of Job {job}")


# -- Pod Security "restricted" ---------------------------------------------------------------------------------


def test_driver_and_worker_pods_are_admitted_and_run_in_a_restricted_namespace(cluster, admin):
    # https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
    batch = client.BatchV1Api(admin)
    spec = driver_spec()
    driver = manifests.to_dict(manifests.driver_job(spec, spec.root_id, {}, namespace=NS))
    worker = manifests.to_dict(manifests.worker_job(task(), Func, IMAGE, {}, namespace=NS))
    presigned = manifests.to_dict(manifests.worker_job(task(), Func, IMAGE, {}, namespace=NS, relaunch=1,
                                                       task_in_secret=True))  # its task in a Secret volume
    client.CoreV1Api(admin).create_namespaced_secret(NS, manifests.task_secret(presigned, task().to_json()))
    for job in (driver, worker, presigned):
        _, code, headers = batch.create_namespaced_job_with_http_info(NS, job)
        assert code == 201 and "PodSecurity" not in (headers.get("Warning") or ""), headers.get("Warning")
    for job in (driver, worker, presigned):
        name = job["metadata"]["name"]
        cluster.wait(lambda n=name: (batch.read_namespaced_job(n, NS).status.succeeded or 0) == 1,
                     message=f"Job {name} succeeded")
        assert not [e for e in cluster.events(NS, name) if e["reason"] == "FailedCreate"]
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID,
                                          "seccompProfile": {"type": "RuntimeDefault"},
                                          **({"fsGroup": IMAGE_UID} if job is presigned else {})}
        assert pod["containers"][0]["securityContext"] == {"allowPrivilegeEscalation": False,
                                                           "capabilities": {"drop": ["ALL"]}}


# -- the image's CPU architecture -----------------------------------------------------------------------------


def test_pods_go_only_to_nodes_of_their_images_architecture(cluster, admin):
    """An arm64 image on a cluster with an amd64 node and then an arm64 one: its pods wait for the arm64 node
    instead of failing on the amd64 one with "exec format error" (reported as exit code 1)."""
    cluster.sim_images.arch[IMAGE] = "arm64"
    spec = driver_spec("arm64")
    name = launch_driver(spec, spec.root_id, {}, namespace=NS, api_client=launcher(cluster))
    pod = pod_of(cluster, admin, name)
    assert pod.spec.node_selector == {"kubernetes.io/arch": "arm64"}
    core = client.CoreV1Api(admin)
    waiting = cluster.wait(lambda: next((c for c in core.read_namespaced_pod(pod.metadata.name, NS).status.conditions
                                         or [] if c.type == "PodScheduled" and c.reason == "Unschedulable"), None),
                           message="the pod unschedulable")
    assert "didn't match Pod's node affinity/selector" in waiting.message
    job = client.BatchV1Api(admin).read_namespaced_job(name, NS)
    executor = dict(DriverSpec.from_json(next(e.value for e in job.spec.template.spec.containers[0].env
                                              if e.name == settings.DRIVER_ENV)).executor_settings)
    assert executor["node_selector"] == {"kubernetes.io/arch": "arm64"}  # and the driver's workers too
    cluster.add_node(NodeSpec("arm-1", runtime="sim", arch="arm64"))
    done = cluster.wait(lambda: (p := core.read_namespaced_pod(pod.metadata.name, NS)).status.phase == "Succeeded"
                        and p, timeout=60, message="the pod ran on the arm64 node")
    assert done.spec.node_name == "arm-1"


def test_launching_an_image_no_node_can_run_says_so(cluster):
    spec = driver_spec("arm64")
    with pytest.raises(RuntimeError) as err:  # as a user whose kubeconfig may list nodes
        launch_driver(spec, spec.root_id, {}, namespace=NS, api_client=cluster.client())
    assert str(err.value) == (f"image {IMAGE} was built for arm64 but the cluster's nodes are amd64: build from a "
                              "base image for amd64 (CloudResolver(base_image=...), $SEMATIC_K8S_BASE_IMAGE) or add "
                              "arm64 nodes")
    assert client.BatchV1Api(cluster.client()).list_namespaced_job(NS).items == []


def test_an_unknown_platform_is_refused():
    with pytest.raises(ValueError, match="image platform 's390x' is not one of amd64, arm64"):
        manifests.driver_job(driver_spec("s390x"), "r", {}, namespace=NS)


# -- what a driver passes on to its workers ---------------------------------------------------------------------


IDENTITY = {  # what EKS injects into pods of a ServiceAccount (IRSA), and Pod Identity's, and a local profile
    "AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/sematic-driver",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
    "AWS_STS_REGIONAL_ENDPOINTS": "regional",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE":
        "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
    "AWS_PROFILE": "laptop", "AWS_CONFIG_FILE": "/home/me/.aws/config",
}


def test_workers_get_storage_settings_but_never_the_drivers_pod_identity(monkeypatch):
    for name, value in IDENTITY.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://minio:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("SEMATIC_K8S_S3_BUCKET", "b")
    env = settings.worker_env()
    assert not IDENTITY.keys() & env.keys()
    assert {"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL_S3": "http://minio:9000",
            "SEMATIC_K8S_S3_BUCKET": "b"}.items() <= env.items()
    job = manifests.to_dict(manifests.worker_job(task(), Func, IMAGE, env, namespace=NS, storage_secret="sk-s3"))
    container = job["spec"]["template"]["spec"]["containers"][0]
    by_name = {e["name"]: e for e in container["env"]}
    assert not IDENTITY.keys() & by_name.keys()
    assert by_name["AWS_SECRET_ACCESS_KEY"] == {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {
        "name": "sk-s3", "key": "AWS_SECRET_ACCESS_KEY", "optional": False}}}  # credentials only by Secret
    assert by_name["AWS_REGION"]["value"] == "eu-west-1"
