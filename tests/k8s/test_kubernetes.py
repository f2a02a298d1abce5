"""The Kubernetes executor and driver Job, through the official client: manifests (validated against two
Kubernetes versions' schemas), and the executor on the cluster model (tests/support/kube_model: API server, RBAC,
admission, Job controller, scheduler, kubelets; worker containers run the real worker code in-process, in a
subprocess or in Docker): driver Jobs, owners, conflicts, cancels, API errors, watch resumption, a fan-out's API
calls, and generated pods that run a real pipeline end to end."""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from kubernetes import client  # noqa: E402

import sematic_k8s as sk  # noqa: E402
from fd_report import connections_to  # noqa: E402
from kube_model import Cluster, NodeSpec, Script  # noqa: E402
from model_workers import behave, ended, held  # noqa: E402
from sematic_k8s import settings  # noqa: E402
from sematic_k8s.errors import ResolutionFailed  # noqa: E402
from sematic_k8s.executors.base import Task  # noqa: E402
from sematic_k8s.executors.inline import InlineExecutor  # noqa: E402
from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor  # noqa: E402
from sematic_k8s.executors.kubernetes import KubernetesExecutor  # noqa: E402
from sematic_k8s.future import new_id  # noqa: E402
from sematic_k8s.k8s import manifests  # noqa: E402
from sematic_k8s.k8s.client import Backoff, TokenBucket  # noqa: E402
from sematic_k8s.launchers.kubernetes import launch_driver  # noqa: E402
from sematic_k8s.resolvers.driven import remote_executor  # noqa: E402
from sematic_k8s.resolvers.loop import ResolutionLoop  # noqa: E402
from sematic_k8s.settings import DRIVER_ENV  # noqa: E402
from sematic_k8s.specs import (  # noqa: E402
    DRIVER_POD_COMMAND,
    IMAGE_UID,
    WORKER_ONE_STREAM_COMMAND,
    DriverSpec,
    ResolutionSettings,
    TaskSpec,
)
from sematic_k8s.storage.base import log_key  # noqa: E402
from sematic_k8s.storage.local import LocalStorage  # noqa: E402
from sematic_k8s.storage.urls import storage_from_url, storage_url  # noqa: E402
from sematic_k8s.store import sql_store  # noqa: E402

NS = "sk-test"
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "ab" * 32
K8S_VERSIONS = ("1.30.0", "1.37.0")
FAST = Backoff(base=0.01, cap=0.05, attempts=6)
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- funcs ---------------------------------------------------------------------------------------------------


@sk.func(inline=False, cpu="250m", memory="128Mi")
def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


@sk.func
def total(xs: list[int]) -> int:
    return sum(xs)


@sk.func
def fan_out(n: int) -> int:
    return total([square(i) for i in range(n)])


@sk.func(inline=False)
def cube(x: int) -> int:
    return x * x * x


@sk.func
def cubes(n: int) -> int:
    return total([cube(i) for i in range(n)])


@sk.func(inline=False, gpu=1, memory="2Gi", timeout=90.5)
def train(steps: int) -> float:
    return steps / 2


@sk.func(inline=False)
def explode(x: int) -> int:
    raise ValueError(f"bad input {x}")


@sk.func(inline=False)
def noop() -> int:
    return 7



# -- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster([NodeSpec("node-1", runtime="sim", pods=1100)], behaviour=behave()) as c:
        c.namespace(NS)
        yield c
        assert not c.errors, c.errors


@pytest.fixture
def storage(tmp_path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


@pytest.fixture
def store(tmp_path):
    return sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")


def executor(api: client.ApiClient, storage: LocalStorage, **kw: Any) -> KubernetesExecutor:
    kw.setdefault("owner", False)
    kw.setdefault("creates_per_second", 0)
    return KubernetesExecutor(storage, storage_url(storage), IMAGE, namespace=NS, api_client=api, env={},
                              backoff=FAST, **kw)


def submit(ex: KubernetesExecutor, func: Any, root_id: str, run_id: str | None = None, attempt: int = 1) -> str:
    run_id = run_id or new_id()
    ex.submit(Task(run_id, root_id, func, {}, attempt))
    return run_id


def jobs(api: client.ApiClient, selector: str | None = None) -> list[client.V1Job]:
    return client.BatchV1Api(api).list_namespaced_job(NS, label_selector=selector).items


def pods_in(cluster: Cluster, phase: str) -> list[str]:
    return [p["metadata"]["name"] for p in cluster.list("pods", NS) if p["status"].get("phase") == phase]


def valid(obj: Any) -> dict[str, Any]:
    """``obj`` as the API gets it, validated (strict) against two Kubernetes versions' schemas."""
    data = client.ApiClient().sanitize_for_serialization(obj)
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(data, version, strict=True)
    return data


def env_of(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


# -- manifests -----------------------------------------------------------------------------------------------


def test_worker_job_manifest_is_valid_labelled_owned_and_keeps_secrets_out():
    spec = TaskSpec(new_id(), new_id(), train.path, train.source_file, {"steps": "a" * 64}, {"steps": "json"}, 2)
    env = {"SEMATIC_K8S_TASK": spec.to_json(), "SEMATIC_K8S_STORAGE": "s3://bucket/prefix",
           "AWS_ENDPOINT_URL": "http://minio:9000", "AWS_SECRET_ACCESS_KEY": "hunter2", "AWS_ACCESS_KEY_ID": "AK"}
    job = valid(manifests.worker_job(
        spec, train, IMAGE, env, namespace=NS, owner=("sk-driver-x", "uid-1"), service_account="sk-worker",
        storage_secret="sk-s3", node_selector={"pool": "gpu"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        image_pull_secrets=["regcred"], ttl_seconds_after_finished=600))
    meta, pod = job["metadata"], job["spec"]["template"]["spec"]
    assert meta["name"] == f"sk-{spec.run_id}-2" and DNS_1123.match(meta["name"]) and len(meta["name"]) <= 52
    want = {"sematic-k8s/resolution-id": spec.root_id, "sematic-k8s/run-id": spec.run_id,
            "sematic-k8s/func": "train", "sematic-k8s/role": "worker", "sematic-k8s/attempt": "2"}
    assert want.items() <= meta["labels"].items() and want.items() <= job["spec"]["template"]["metadata"][
        "labels"].items()
    assert meta["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "sk-driver-x",
                                        "uid": "uid-1", "controller": False, "blockOwnerDeletion": False}]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] == 600
    assert "activeDeadlineSeconds" not in pod and "activeDeadlineSeconds" not in job["spec"]  # counted by the executor
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "sk-worker"
    assert pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"pool": "gpu"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    c = pod["containers"][0]
    assert c["image"] == IMAGE and c["command"] == list(WORKER_ONE_STREAM_COMMAND)  # one stream: its last words last
    assert c["resources"] == {"requests": {"memory": "2Gi"}, "limits": {"memory": "2Gi", "nvidia.com/gpu": "1"}}
    e = env_of(job)
    assert json.loads(e["SEMATIC_K8S_TASK"]["value"])["run_id"] == spec.run_id
    assert e["SEMATIC_K8S_STORAGE"]["value"] == "s3://bucket/prefix"
    assert e["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert "hunter2" not in json.dumps(job) and "value" not in e["AWS_SECRET_ACCESS_KEY"]
    assert e["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "sk-s3", "key": "AWS_SECRET_ACCESS_KEY", "optional": False}
    assert e["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True

    plain = valid(manifests.worker_job(spec, square, IMAGE, {}, namespace=NS, cpu_limits=True))
    assert "ownerReferences" not in plain["metadata"] and "activeDeadlineSeconds" not in plain["spec"]
    assert plain["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"cpu": "250m", "memory": "128Mi"}}


def test_driver_job_manifest_is_valid_and_reads_the_token_from_a_secret():
    spec = DriverSpec(root={"id": "a" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                      executor="kubernetes")
    root = new_id()
    env = {DRIVER_ENV: spec.to_json(), "SEMATIC_K8S_SERVER": "http://sk-server:8000",
           "SEMATIC_K8S_API_KEY": "sk-secret-key", "AWS_SECRET_ACCESS_KEY": "hunter2"}
    job = valid(manifests.driver_job(spec, root, env, namespace=NS, service_account="sk-driver",
                                     secret_name="sk-api", storage_secret="sk-s3", func_name="my_pipeline",
                                     cpu="500m", memory="1Gi"))
    assert job["metadata"]["name"] == f"sk-driver-{root}" and job["metadata"]["labels"]["sematic-k8s/role"] == "driver"
    assert job["metadata"]["labels"]["sematic-k8s/func"] == "my_pipeline"
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "sk-driver" and pod["containers"][0]["command"] == list(DRIVER_POD_COMMAND)
    e = env_of(job)
    assert "sk-secret-key" not in json.dumps(job) and "hunter2" not in json.dumps(job)
    assert e["SEMATIC_K8S_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "sk-api", "key": "api-key",
                                                                      "optional": False}
    no_token = valid(manifests.driver_job(spec, root, env, namespace=NS))  # a server without keys
    assert "SEMATIC_K8S_API_KEY" not in env_of(no_token) and "sk-secret-key" not in json.dumps(no_token)
    secret = manifests.to_dict(manifests.token_secret(root, "sk8t_token", namespace=NS, owner=("sk-driver-x", "u1")))
    assert secret["metadata"]["name"] == manifests.token_secret_name(root) == f"sk-token-{root}"
    assert secret["metadata"]["labels"]["sematic-k8s/resolution-id"] == root
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u1" and "stringData" not in secret
    assert e["SEMATIC_K8S_SERVER"]["value"] == "http://sk-server:8000"
    assert e[settings.DRIVER_JOB_UID_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['batch.kubernetes.io/controller-uid']")
    with pytest.raises(ValueError, match="by digest"):
        manifests.driver_job(DriverSpec(root={}, storage_url="", image="repo:latest"), root, {}, namespace=NS)


def test_names_are_dns_labels_and_quantities_are_checked():
    for parts in [("sk", "A" * 80, "1"), ("sk", "Run_ID.with/odd chars", "3"), ("-sk-",), ("sk-driver", "x" * 200)]:
        name = manifests.dns_name(*parts)
        assert DNS_1123.match(name) and len(name) <= 52, name
    assert manifests.dns_name("sk", "A" * 80) != manifests.dns_name("sk", "A" * 79 + "B")
    assert manifests.worker_job_name("abc", 1, relaunch=2) == "sk-abc-1-r2"
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        manifests.resources(None, "lots", None)
    with pytest.raises(ValueError, match=r"memory '512m' is a fraction of a byte .*did you mean '512Mi'\?"):
        manifests.resources(None, "512m", None)
    with pytest.raises(ValueError, match="is 4096 bytes: a container needs at least 6Mi"):
        manifests.resources(None, "4Ki", None)
    assert manifests.resources("500m", "1.5Gi", None).limits == {"memory": "1.5Gi"}



# -- driver Job ----------------------------------------------------------------------------------------------


def test_launch_driver_creates_the_driver_job_once(cluster, api, monkeypatch):
    monkeypatch.setenv("SEMATIC_K8S_SERVICE_ACCOUNT", "sk-driver")
    monkeypatch.setenv("SEMATIC_K8S_STORAGE_SECRET", "sk-s3")
    spec = DriverSpec(root={"id": "a" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                      executor="kubernetes",
                      resolution=ResolutionSettings(root_id=new_id(), max_parallelism=8))
    env = {DRIVER_ENV: spec.to_json(), "SEMATIC_K8S_SERVER": "http://sk:8000", "SEMATIC_K8S_API_KEY": "sk8t_first",
           "SEMATIC_K8S_SOURCE_MAP": "/home/me/proj=/app"}
    name = launch_driver(spec, spec.root_id, env, namespace=NS, api_client=api, func_name="fan_out",
                         node_selector={"pool": "batch"}, driver_settings={"memory": "1Gi"})
    again = {**env, "SEMATIC_K8S_API_KEY": "sk8t_second"}
    assert launch_driver(spec, spec.root_id, again, namespace=NS, api_client=api) == name  # 409: already there
    [job] = jobs(api, f"sematic-k8s/resolution-id={spec.root_id},sematic-k8s/role=driver")
    assert job.metadata.name == name == f"sk-driver-{spec.root_id}"
    assert job.spec.backoff_limit == 3  # a driver that dies is started again and resumes
    evicted, failed, replaced = job.spec.pod_failure_policy.rules  # one that exits 1 (its resolution failed) is not
    assert evicted.action == "Ignore" and evicted.on_pod_conditions[0].type == "DisruptionTarget"
    assert failed.action == "FailJob" and failed.on_exit_codes.values == [1]
    assert replaced.action == "Ignore" and replaced.on_exit_codes.values == [76]  # another driver took over
    pod = job.spec.template.spec
    assert pod.service_account_name == "sk-driver" and pod.containers[0].image == IMAGE
    env_vars = {e.name: e for e in pod.containers[0].env}
    assert env_vars["SEMATIC_K8S_API_KEY"].value is None  # the resolution's token, from its own Secret
    assert env_vars["SEMATIC_K8S_API_KEY"].value_from.secret_key_ref.name == manifests.token_secret_name(spec.root_id)
    secret = client.CoreV1Api(api).read_namespaced_secret(manifests.token_secret_name(spec.root_id), NS)
    assert base64.b64decode(secret.data["api-key"]).decode() == "sk8t_second"  # a second launch updates it
    assert [(o.kind, o.name, o.uid) for o in secret.metadata.owner_references] == [("Job", name, job.metadata.uid)]
    assert "sk8t_" not in json.dumps(api.sanitize_for_serialization(job))
    driven = DriverSpec.from_json(env_vars[DRIVER_ENV].value)
    assert driven.root_id == spec.root_id
    assert driven.executor_settings == {"namespace": NS, "storage_secret": "sk-s3", "node_selector": {"pool": "batch"}}
    posts = cluster.calls(verb="create", resource="jobs")
    assert [c.status for c in posts] == [201, 409]  # the second answered 409 and was not retried


def test_a_driver_job_refused_leaves_no_token_secret_and_an_existing_jobs_stays_its_own(cluster, api):
    """The driver Job's create refused for good (a ResourceQuota on count/jobs.batch, the model's admission): the
    token Secret made just before it is deleted, the launch's own error raised. Was: that Secret, holding the
    resolution's token, left in the namespace owned by nothing. A Job already there (an earlier launch's, refused
    again by the quota before its name is checked) keeps its Secret, owned by it."""
    core = client.CoreV1Api(api)
    first = DriverSpec(root={"id": "a" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                       executor="kubernetes", resolution=ResolutionSettings(root_id=new_id()))
    env = {"SEMATIC_K8S_SERVER": "http://sk:8000", "SEMATIC_K8S_API_KEY": "sk8t_first"}
    made = launch_driver(first, first.root_id, env, namespace=NS, api_client=api)
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "one-job"},
             "spec": {"hard": {"count/jobs.batch": "1"}}}
    core.create_namespaced_resource_quota(NS, quota)
    second = DriverSpec(root={"id": "b" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                        executor="kubernetes", resolution=ResolutionSettings(root_id=new_id()))
    with pytest.raises(RuntimeError, match=r"could not create the driver Job .* \(403\): .*exceeded quota: one-job"):
        launch_driver(second, second.root_id, {**env, "SEMATIC_K8S_API_KEY": "sk8t_second"}, namespace=NS,
                      api_client=api)
    names = [s.metadata.name for s in core.list_namespaced_secret(NS).items]
    assert manifests.token_secret_name(second.root_id) not in names
    assert [c.status for c in cluster.calls(verb="delete", resource="secrets")] == [200]

    with pytest.raises(RuntimeError, match=r"\(403\): .*exceeded quota"):  # the first's launched again: refused
        launch_driver(first, first.root_id, env, namespace=NS, api_client=api)
    secret = core.read_namespaced_secret(manifests.token_secret_name(first.root_id), NS)
    [job] = jobs(api, f"sematic-k8s/resolution-id={first.root_id}")
    assert [(o.name, o.uid) for o in secret.metadata.owner_references] == [(made, job.metadata.uid)]


def test_a_server_urls_password_reaches_the_driver_by_its_secret_never_in_the_jobs_spec(cluster, api, monkeypatch):
    """A CloudResolver whose server URL carries Basic credentials (``http://user:password@host``, which the HTTP
    store sends and never names in a message): the driver Job's spec holds the URL without them, and the driver
    reads them from its resolution's Secret, beside its token, back into the URL it records through. Was: the
    whole URL, password and all, a plain env value of the Job (and of a Docker driver container)."""
    from sematic_k8s.launchers import driver_env
    from sematic_k8s.store import open_store

    spec = DriverSpec(root={"id": "a" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                      executor="kubernetes", resolution=ResolutionSettings(root_id=new_id()))
    env = driver_env(spec, "http://ann%40corp:s3cret@sk.example:8000/sematic", "sk8t_tok", None)
    launch_driver(spec, spec.root_id, env, namespace=NS, api_client=api)
    [job] = jobs(api, f"sematic-k8s/resolution-id={spec.root_id},sematic-k8s/role=driver")
    assert "s3cret" not in json.dumps(api.sanitize_for_serialization(job))
    env_vars = {e.name: e for e in job.spec.template.spec.containers[0].env}
    assert env_vars[settings.SERVER_ENV].value == "http://sk.example:8000/sematic"
    ref = env_vars[settings.SERVER_AUTH_ENV].value_from.secret_key_ref
    secret = client.CoreV1Api(api).read_namespaced_secret(ref.name, NS)
    assert ref.name == manifests.token_secret_name(spec.root_id) and ref.key == "server-auth"
    pod_env = {settings.SERVER_ENV: env_vars[settings.SERVER_ENV].value,  # what the pod's container is given
               settings.SERVER_AUTH_ENV: base64.b64decode(secret.data[ref.key]).decode()}
    for name, value in pod_env.items():
        monkeypatch.setenv(name, value)
    store = open_store(settings.home(create=False))  # as the driver opens it
    assert store.url == "http://sk.example:8000/sematic"  # as messages name it
    assert store.headers["Authorization"] == "Basic " + base64.b64encode(b"ann@corp:s3cret").decode()

    # the chart's ConfigMap gives the in-cluster address: the submitting machine's user info stays behind
    client.CoreV1Api(api).create_namespaced_config_map(NS, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="sematic-k8s"), data={"SEMATIC_K8S_SERVER": "http://sk.sk.svc:8000"}))
    second = DriverSpec(root={"id": "b" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                        executor="kubernetes", resolution=ResolutionSettings(root_id=new_id()))
    launch_driver(second, second.root_id, driver_env(second, "http://ann:s3cret@sk.example:8000", "sk8t_2", None),
                  namespace=NS, api_client=api)
    [job] = jobs(api, f"sematic-k8s/resolution-id={second.root_id},sematic-k8s/role=driver")
    assert {e.name: e.value for e in job.spec.template.spec.containers[0].env}[settings.SERVER_ENV] == \
        "http://sk.sk.svc:8000"
    secret = client.CoreV1Api(api).read_namespaced_secret(manifests.token_secret_name(second.root_id), NS)
    assert set(secret.data) == {"api-key"}


def test_the_submitting_machines_s3_keys_reach_the_driver_job_by_the_storage_secret_never_as_values(cluster, api,
                                                                                                  monkeypatch):
    """The CloudResolver's (or the server's) S3 keys go into the driver's env (``driver_env``, as a Docker driver
    gets them as files): on Kubernetes the driver Job reads each from the storage Secret (``secretKeyRef``) and its
    spec holds no key as a plain value, nor does the token Secret. (Held before the Docker drivers' keys became
    files; kept beside them, as both go through ``settings.SECRET_FILE_ENVS``.)"""
    from sematic_k8s.launchers import driver_env

    secret, session = f"sk-secret-{new_id()}", f"sk-session-{new_id()}"
    for name, value in (("AWS_ACCESS_KEY_ID", "AKSUBMITTER"), ("AWS_SECRET_ACCESS_KEY", secret),
                        ("AWS_SESSION_TOKEN", session)):
        monkeypatch.setenv(name, value)
    spec = DriverSpec(root={"id": "a" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                      executor="kubernetes", resolution=ResolutionSettings(root_id=new_id()))
    env = driver_env(spec, "http://sk.example:8000", "sk8t_tok", None)
    assert env["AWS_SECRET_ACCESS_KEY"] == secret  # given to the launcher, which delivers it its own way
    launch_driver(spec, spec.root_id, env, namespace=NS, api_client=api, storage_secret="sk-s3")
    [job] = jobs(api, f"sematic-k8s/resolution-id={spec.root_id},sematic-k8s/role=driver")
    token = client.CoreV1Api(api).read_namespaced_secret(manifests.token_secret_name(spec.root_id), NS)
    for model in (job, token):
        dumped = json.dumps(api.sanitize_for_serialization(model))
        assert secret not in dumped and session not in dumped and "AKSUBMITTER" not in dumped
    env_vars = {e.name: e for e in job.spec.template.spec.containers[0].env}
    for name in settings.STORAGE_KEY_ENVS:
        assert env_vars[name].value is None and env_vars[name].value_from.secret_key_ref.name == "sk-s3"


def test_launch_driver_takes_in_cluster_settings_from_the_charts_config_map(cluster, api, monkeypatch):
    for name in ("SEMATIC_K8S_SERVICE_ACCOUNT", "SEMATIC_K8S_STORAGE_SECRET", "SEMATIC_K8S_WORKER_SERVICE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    client.CoreV1Api(api).create_namespaced_config_map(NS, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="sematic-k8s"),
        data={"SEMATIC_K8S_SERVER": "http://sematic-k8s-server.sk.svc:8000",
              "SEMATIC_K8S_S3_ENDPOINT": "http://minio:9000",
              "SEMATIC_K8S_SERVICE_ACCOUNT": "sematic-k8s-driver",
              "SEMATIC_K8S_WORKER_SERVICE_ACCOUNT": "sematic-k8s-worker",
              "SEMATIC_K8S_STORAGE_SECRET": "sematic-k8s-s3"}))
    spec = DriverSpec(root={"id": "a" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                      executor="kubernetes",
                      resolution=ResolutionSettings(root_id=new_id(), max_parallelism=8))
    env = {DRIVER_ENV: spec.to_json(), "SEMATIC_K8S_SERVER": "http://127.0.0.1:18000",  # a port-forward
           "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:19000"}
    launch_driver(spec, spec.root_id, env, namespace=NS, api_client=api)
    [job] = jobs(api, f"sematic-k8s/resolution-id={spec.root_id},sematic-k8s/role=driver")
    pod = job.spec.template.spec
    env_vars = {e.name: e.value for e in pod.containers[0].env}
    assert env_vars["SEMATIC_K8S_SERVER"] == "http://sematic-k8s-server.sk.svc:8000"
    assert env_vars["SEMATIC_K8S_S3_ENDPOINT"] == "http://minio:9000" and "AWS_ENDPOINT_URL_S3" not in env_vars
    assert pod.service_account_name == "sematic-k8s-driver"
    driven = DriverSpec.from_json(env_vars[DRIVER_ENV])
    assert driven.executor_settings["service_account"] == "sematic-k8s-worker"
    assert driven.executor_settings["storage_secret"] == "sematic-k8s-s3"


def test_the_driver_builds_the_kubernetes_executor_from_its_spec(cluster, storage):
    spec = DriverSpec(root={}, storage_url=storage_url(storage), image=IMAGE, executor="kubernetes",
                      executor_settings={"namespace": NS, "host": cluster.proxy(), "node_selector": {"pool": "a"},
                                         "tolerations": [{"key": "k", "operator": "Exists"}], "owner": False})
    ex = remote_executor(spec, storage)
    try:
        assert isinstance(ex, KubernetesExecutor) and ex.namespace == NS and ex.image == IMAGE
    finally:
        ex.close()


def test_workers_are_owned_by_the_driver_job_named_by_the_downward_api(cluster, api, storage, monkeypatch):
    root = new_id()
    driver = launch_driver(DriverSpec(root={}, storage_url=storage_url(storage), image=IMAGE, executor="kubernetes"),
                           root, {}, namespace=NS, api_client=api)
    uid = client.BatchV1Api(api).read_namespaced_job(driver, NS).metadata.uid
    monkeypatch.setenv(settings.DRIVER_JOB_ENV, driver)
    monkeypatch.setenv(settings.DRIVER_JOB_UID_ENV, uid)  # as the downward API gives them to the driver's pod
    ex = KubernetesExecutor(storage, storage_url(storage), IMAGE, namespace=NS, api_client=api, env={},
                            backoff=FAST, creates_per_second=0)
    submit(ex, noop, root)
    [job] = jobs(api, "sematic-k8s/role=worker")
    ex.close()
    assert [(o.name, o.uid) for o in job.metadata.owner_references] == [(driver, uid)]
    assert ex.stats.owner_reads == 0


# -- the executor, through the resolution loop ---------------------------------------------------------------


def test_a_pipeline_resolves_with_one_labelled_owned_job_per_run(api, storage, store):
    root = fan_out(4)
    driver = launch_driver(DriverSpec(root={}, storage_url=storage_url(storage), image=IMAGE, executor="kubernetes"),
                           root.id, {}, namespace=NS, api_client=api)
    driver_uid = client.BatchV1Api(api).read_namespaced_job(driver, NS).metadata.uid
    ex = KubernetesExecutor(storage, storage_url(storage), IMAGE, namespace=NS, api_client=api, env={},
                            backoff=FAST)
    loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(2), ex),
                          ResolutionSettings(max_parallelism=8, root_id=root.id), kind="cloud")
    assert loop.run(root) == 0 + 1 + 4 + 9
    workers = jobs(api, f"sematic-k8s/resolution-id={root.id},sematic-k8s/role=worker")
    assert len(workers) == 4
    runs = {r.id: r for r in store.runs_of_root(root.id)}
    for job in workers:
        labels = job.metadata.labels
        assert runs[labels["sematic-k8s/run-id"]].func_name == "square" and labels["sematic-k8s/func"] == "square"
        assert job.metadata.name == f"sk-{labels['sematic-k8s/run-id']}-1"
        assert [(o.kind, o.name, o.uid) for o in job.metadata.owner_references] == [("Job", driver, driver_uid)]
        assert job.spec.template.spec.containers[0].resources.requests == {"cpu": "250m", "memory": "128Mi"}
    notes = next(r for r in runs.values() if r.func_name == "square").notes["executor"]
    assert notes["executor"] == "kubernetes" and notes["pod"].startswith(notes["job"]) and notes["namespace"] == NS
    assert not ex.watchers[0]._thread.is_alive()  # the loop closed the executor


def test_a_func_error_in_a_pod_fails_the_resolution_with_its_traceback(api, storage, store):
    ex = executor(api, storage)
    loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), ex), kind="cloud")
    with pytest.raises(ResolutionFailed) as err:
        loop.run(explode(3))
    assert err.value.error["type"] == "ValueError" and "bad input 3" in err.value.error["message"]


# -- the watch stream ----------------------------------------------------------------------------------------


def test_the_watch_resumes_and_relists_after_410_without_losing_endings(cluster, api, storage):
    gates: dict[str, threading.Event] = {}
    cluster.behaviour = lambda pod, c: Script(func=held(gates.setdefault(
        pod["metadata"]["labels"]["sematic-k8s/run-id"], threading.Event())))
    ex = executor(api, storage)
    root = new_id()
    run_ids = [submit(ex, noop, root) for _ in range(6)]
    cluster.wait(lambda: not ex.wait(0.02) and len(pods_in(cluster, "Running")) == 6)
    pod_watch = ex.watchers[0]
    cluster.wait(lambda: not ex.wait(0.02) and pod_watch.stats.events >= 12)  # ADDED + Running for each pod
    # 1. the stream ends (an API server restart) and reconnects fail for a while; meanwhile three pods finish and
    #    history is compacted: the resumed watch gets 410 Gone and must list again.
    cluster.fail(503, resource="pods", times=None)
    cluster.drop_watches()
    for r in run_ids[:3]:
        gates[r].set()
    cluster.wait(lambda: len(pods_in(cluster, "Succeeded")) == 3)
    cluster.compact()
    cluster.clear_faults()  # the API server is back
    first = ended(ex, 3)
    assert set(first) == set(run_ids[:3]) and all(o.error_info is None for o in first.values())
    assert pod_watch.stats.gone >= 1 and pod_watch.stats.lists >= 2
    # 2. a plain stream end: resumed from the last resourceVersion, no list needed.
    lists = pod_watch.stats.lists
    cluster.drop_watches()
    for r in run_ids[3:]:
        gates[r].set()
    rest = ended(ex, 3)
    assert set(rest) == set(run_ids[3:]) and all(o.error_info is None for o in rest.values())
    assert pod_watch.stats.lists == lists and pod_watch.stats.watches >= 3
    ex.close()


# -- API errors ----------------------------------------------------------------------------------------------


def test_429_and_5xx_are_retried_with_backoff(cluster, api, storage):
    ex = executor(api, storage)
    cluster.fail(429, verb="create", resource="jobs", times=2, retry_after=1)  # API Priority and Fairness
    cluster.fail(500, verb="create", resource="jobs", times=1)
    run_id = submit(ex, noop, new_id())
    outcome = ended(ex, 1)[run_id]
    ex.close()
    assert outcome.error_info is None
    assert [c.status for c in cluster.calls(verb="create", resource="jobs")] == [429, 429, 500, 201]
    assert len(jobs(api)) == 1


def test_a_refused_job_fails_its_run_not_the_driver(cluster, api, storage):
    ex = executor(api, storage, node_selector={"pool": "not a label value!"})  # the API server's validation: 422
    run_id = submit(ex, noop, new_id())
    info = ended(ex, 1)[run_id].error_info
    ex.close()
    assert info["type"] == "JobCreateFailed", info
    assert "could not be created" in info["message"] and "(422)" in info["message"], info["message"]
    assert [c.status for c in cluster.calls(verb="create", resource="jobs")] == [422]  # not retried


def test_409_reattaches_to_this_attempts_job_and_refuses_a_foreign_one(cluster, api, storage):
    root = new_id()
    mine, foreign = new_id(), new_id()
    batch = client.BatchV1Api(api)
    for run_id, labels_run in ((mine, mine), (foreign, new_id())):
        spec = TaskSpec(labels_run, root, noop.path, noop.source_file, {}, {}, 1)  # the foreign Job works for its
        env = {"SEMATIC_K8S_TASK": spec.to_json(), "SEMATIC_K8S_STORAGE": storage_url(storage)}  # own run (it
        job = manifests.worker_job(spec, noop, IMAGE, env, namespace=NS)  # only shares our Job's name)
        job.metadata.name = job.spec.template.metadata.name = manifests.worker_job_name(run_id, 1)
        batch.create_namespaced_job(NS, job)
    ex = executor(api, storage)
    submit(ex, noop, root, run_id=mine)
    submit(ex, noop, root, run_id=foreign)
    got = ended(ex, 2)
    ex.close()
    assert got[mine].error_info is None and ex.stats.reattached == 1  # found by the start-up list of Jobs
    assert ex.stats.conflicts == 1  # the foreign one: created, 409, its labels read
    assert got[foreign].error_info["type"] == "JobNameConflict"
    assert len(jobs(api)) == 2  # nothing duplicated


def test_404_on_delete_is_fine(cluster, api, storage):
    gate = threading.Event()
    cluster.behaviour = behave({"worker": Script(func=held(gate))})
    ex = executor(api, storage)
    run_id = submit(ex, noop, new_id())
    cluster.wait(lambda: jobs(api))
    client.BatchV1Api(api).delete_namespaced_job(f"sk-{run_id}-1", NS)  # someone else deleted it
    ex.cancel([run_id])
    gate.set()
    ex.close()
    deletes = [c.status for c in cluster.calls(verb="delete", resource="jobs") if c.name == f"sk-{run_id}-1"]
    assert deletes == [200, 404]


# -- restart, cancel, rate limit -----------------------------------------------------------------------------


def test_a_restarted_driver_reattaches_to_its_jobs_instead_of_duplicating_them(cluster, api, storage):
    root = new_id()
    run_ids = [new_id() for _ in range(3)]
    gate = threading.Event()  # the others finish after the first driver is gone
    cluster.behaviour = lambda pod, c: behave({"worker": Script(func=held(gate))})(pod, c) if (
        pod["metadata"]["labels"]["sematic-k8s/run-id"] != run_ids[0]) else behave()(pod, c)
    first = executor(api, storage)
    for r in run_ids:
        submit(first, noop, root, run_id=r)
    assert set(ended(first, 1)) == {run_ids[0]}
    for w in first.watchers:  # the driver's pod dies: no cleanup, its Jobs keep running
        w.stop()
    gate.set()
    cluster.wait(lambda: len(pods_in(cluster, "Succeeded")) == 3)
    second = executor(api, storage)
    for r in run_ids:
        submit(second, noop, root, run_id=r)
    got = ended(second, 3)
    second.close()
    assert all(o.error_info is None for o in got.values())
    assert second.stats.creates == 0 and second.stats.reattached == 3  # found by one list of the resolution's Jobs
    assert second.stats.job_lists == 1
    assert len(jobs(api)) == 3


def test_cancel_deletes_the_jobs_and_close_stops_watching(cluster, api, storage):
    gate = threading.Event()
    cluster.behaviour = behave({"worker": Script(func=held(gate))})
    ex = executor(api, storage)
    root = new_id()
    run_ids = [submit(ex, noop, root) for _ in range(3)]
    cluster.wait(lambda: len(pods_in(cluster, "Running")) == 3)
    ex.cancel(run_ids[:2])
    assert {j.metadata.name for j in jobs(api)} == {f"sk-{run_ids[2]}-1"}
    cluster.wait(lambda: len(cluster.list("pods", NS)) == 1)  # the garbage collector took their pods
    ex.close()  # cancels what is left
    gate.set()
    assert jobs(api) == []
    deletes = cluster.calls(verb="delete", resource="jobs")
    assert len(deletes) == 3 and all(c.query.get("propagationPolicy") == "Background" for c in deletes)
    assert not any(w._thread.is_alive() for w in ex.watchers)
    assert ex.wait(0) == []


@pytest.mark.parametrize("end", ["close", "detach"])
def test_an_executor_ended_holds_no_connection_to_the_api_server(cluster, storage, end):
    """A driver's executor makes its API client itself (one for the driver's life); closed (or detached, a driver
    about to be restarted), it kept that client's connections to the API server open until the garbage collector
    found it. Made as a driver makes it, on a URL of its own (a proxy: its connections told from any other's), it
    runs funcs to their end and is kept after it ends: what it holds then is what ending it left open."""
    host = cluster.proxy()
    ex = KubernetesExecutor.from_spec(DriverSpec(
        root={}, storage_url=storage_url(storage), image=IMAGE, executor="kubernetes",
        executor_settings={"namespace": NS, "host": host, "owner": False, "creates_per_second": 0, "env": {}}),
        storage)
    port = int(host.rsplit(":", 1)[1])
    root = new_id()
    run_ids = [submit(ex, noop, root) for _ in range(3)]
    assert set(ended(ex, 3)) == set(run_ids)
    assert connections_to(port)  # its calls' and watches'
    getattr(ex, end)()
    cluster.wait(lambda: not any(w._thread.is_alive() for w in ex.watchers), message="the watches' end")
    assert connections_to(port) == []


def test_a_driver_launched_and_followed_as_the_cloud_resolver_does_holds_no_connection_to_the_api_server(
        cluster, monkeypatch):
    """The CloudResolver starts a Kubernetes driver (``launchers.start_driver``) and follows it
    (``launchers.watch_driver``), each with an API client it makes for $SEMATIC_K8S_KUBE_HOST (here a proxy of its
    own: their connections told from any other's). Once a launch returned or raised, nothing it made holds a
    connection to the API server; once the follower is closed, nothing either. Was: the launch's client was never
    closed: a launch refused (here an image for arm64 on a cluster of amd64 nodes, said after the nodes were listed)
    kept its connection open as long as its error was kept (its traceback holds the client: a notebook's last
    error, a caller that logs it later); one that succeeded, until its client was collected."""
    from sematic_k8s.launchers import driver_env, start_driver, watch_driver

    host = cluster.proxy()
    port = int(host.rsplit(":", 1)[1])
    monkeypatch.setenv(settings.KUBE_HOST_ENV, host)

    def spec_for(platform: str | None) -> DriverSpec:
        return DriverSpec(root={"id": "a" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                          executor="kubernetes", executor_settings={"namespace": NS},
                          resolution=ResolutionSettings(root_id=new_id()), platform=platform)

    refused = spec_for("arm64")
    with pytest.raises(RuntimeError, match="built for arm64 but the cluster's nodes are amd64") as err:
        start_driver(refused, driver_env(refused, "http://127.0.0.1:9", "sk8t_tok", None))
    assert err.value.__traceback__ is not None  # kept, as its caller keeps it
    assert connections_to(port) == []
    spec = spec_for(None)
    start_driver(spec, driver_env(spec, "http://127.0.0.1:9", "sk8t_tok", None))  # its token's Secret made, owned
    assert cluster.get("jobs.batch", NS, f"sk-driver-{spec.root_id}") is not None
    assert connections_to(port) == []
    follower = watch_driver(spec)
    assert follower.ended() is None and connections_to(port)  # running; read through a connection of its own
    follower.close()
    assert connections_to(port) == []


def test_a_client_given_to_the_driver_launch_and_follower_is_left_open_for_its_giver(cluster):
    """A client given to ``launch_driver`` and to a ``DriverJob`` is its giver's: the follower's close() leaves its
    kept-alive connection to the API server as it was (was: closed with the follower's, under its giver), and the
    giver goes on using it."""
    from sematic_k8s.launchers.kubernetes import DriverJob

    host = cluster.proxy()
    port = int(host.rsplit(":", 1)[1])
    given = client.ApiClient(client.Configuration(host=host))
    root = new_id()
    spec = DriverSpec(root={"id": "a" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                      executor="kubernetes", executor_settings={"namespace": NS},
                      resolution=ResolutionSettings(root_id=root))
    launch_driver(spec, root, {}, namespace=NS, api_client=given)
    held = connections_to(port)
    assert held  # the giver's, kept alive
    follower = DriverJob(spec, api_client=given)
    assert follower.ended() is None
    follower.close()
    assert connections_to(port) == held
    assert client.BatchV1Api(given).read_namespaced_job(f"sk-driver-{root}", NS).metadata.name == f"sk-driver-{root}"
    given.close()
    assert connections_to(port) == []


def test_to_dict_serializes_without_the_processs_default_client_configuration(monkeypatch):
    """``manifests.to_dict`` (every worker Job, every owner reference) serializes with one client of its own, made
    once. Was: a new client on every call, made from the process's default configuration (what load_kube_config set):
    waste, and a failure where that configuration's client cannot be made, as for a kubeconfig's socks5 proxy-url
    without PySocks (here made absent)."""
    default = client.Configuration(host="https://cluster.example:6443")
    default.proxy = "socks5://127.0.0.1:1080"
    monkeypatch.setattr(client.Configuration, "_default", default)
    monkeypatch.setitem(sys.modules, "socks", None)
    monkeypatch.setitem(sys.modules, "urllib3.contrib.socks", None)
    with pytest.raises(ImportError):
        client.ApiClient()  # what each call made
    owner = manifests.to_dict(manifests.owner_reference("sk-driver-x", "uid-1"))
    assert owner == {"apiVersion": "batch/v1", "kind": "Job", "name": "sk-driver-x", "uid": "uid-1",
                     "controller": False, "blockOwnerDeletion": False}


def test_token_bucket():
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(20, burst=5, clock=lambda: now[0], sleep=sleep)
    for _ in range(25):
        bucket.acquire()
    assert len(slept) == 20 and now[0] == pytest.approx(20 / 20)  # a burst of 5 free, then 20 at 20/s



def test_job_creation_is_rate_limited(api, storage):
    ex = executor(api, storage, creates_per_second=50, create_burst=1)
    started = time.monotonic()
    for _ in range(16):
        submit(ex, noop, "r" * 32)
    elapsed = time.monotonic() - started
    ex.close()
    assert elapsed >= 15 / 50 * 0.9


# -- a fan-out: API calls are O(runs) ------------------------------------------------------------------------


def fanout_calls(cluster: Cluster, after: int) -> Counter:
    """The calls served after request number ``after`` (all the executor's: the test makes none meanwhile)."""
    kinds: Counter = Counter()
    for c in cluster.requests[after:]:
        kinds[f"{c.verb} {c.resource_path}"] += 1
    return kinds


def test_a_1000_run_fan_out_costs_one_create_per_run_and_a_constant_number_of_watch_calls(cluster, api, storage,
                                                                                           store):
    n = 1000
    after = len(cluster.requests)
    ex = executor(api, storage)
    loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), ex),
                          ResolutionSettings(max_parallelism=n), kind="cloud")
    started = time.monotonic()
    value = loop.run(cubes(n))
    elapsed = time.monotonic() - started
    calls = fanout_calls(cluster, after)
    print(f"\n{n}-run fan-out through the Kubernetes executor on the model: {elapsed:.1f}s, API calls: {dict(calls)}")
    assert value == sum(i**3 for i in range(n))
    assert calls["create jobs"] == n
    other = sum(calls.values()) - n
    assert other <= 9, calls  # list + watch per kind (+ a reconnect or two): no per-run polling
    assert calls["list pods"] == 2 and calls["list jobs"] == 1  # pods: the watch's, and pods left by deleted Jobs
    assert ex.stats.log_reads == 0 and ex.stats.deletes == 0


# -- pods that really run: the generated pod spec is runnable end to end ------------------------------------

PIPELINE_MODULE = '''\
import os
import queue

import sematic_k8s as sk


@sk.func(inline=False, memory="256Mi")
def shout(word: str) -> str:
    print("shouting", word, "in", os.getcwd())
    return word.upper()


@sk.func
def join(words: list[str]) -> str:
    return " ".join(words)


@sk.func
def pipeline(words: list[str]) -> str:
    return join([shout(w) for w in words])


@sk.func(inline=False)
def boom(x: int) -> int:
    raise RuntimeError(f"boom {x}")


@sk.func(inline=False)
def reach_storage() -> str:
    """What the worker's own code gets from the storage its pod names, with the pod's credentials (none)."""
    from sematic_k8s.storage.urls import storage_from_url

    try:
        storage_from_url(os.environ["SEMATIC_K8S_STORAGE"]).exists("outcomes")
    except Exception as e:
        return type(e).__name__
    return "reached"
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Iterator[Any]:
    """A user project with a pipeline module, importable here as it will be in the image (/app)."""
    import importlib
    import sys
    import uuid

    root = tmp_path_factory.mktemp("k8sproj")
    name = f"k8s_pipe_{uuid.uuid4().hex[:8]}"
    (root / f"{name}.py").write_text(PIPELINE_MODULE)
    (root / "requirements.txt").write_text("")
    sys.path.insert(0, str(root))
    try:
        yield root, importlib.import_module(name)
    finally:
        sys.path.remove(str(root))


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, str]]:
    """A real S3 API on 127.0.0.1 (moto's server, in-process): (endpoint, storage URL)."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="AKTEST",
                 aws_secret_access_key="s3cr3t").create_bucket(Bucket="sk-k8s")
    try:
        yield endpoint, "s3://sk-k8s/artifacts"
    finally:
        server.stop()



@pytest.mark.parametrize("kubelet", ["docker", "process"])
def test_generated_pods_run_a_real_pipeline_end_to_end(project, s3, store, monkeypatch, kubelet):
    """Worker pods run from the generated spec: image by digest, the worker command, the storage URL in env and
    the task, with its presigned URLs, in a file of the Job's own Secret that the image's non-root user reads (the
    model's kubelet mounts it as a kubelet does, in a container in Docker, or for the pod's command run as a local
    process); no S3 key in the pod; each Secret deleted when its run ends. The loop resolves the pipeline through
    the executor."""
    root, module = project
    endpoint, url_s3 = s3
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "SEMATIC_K8S_S3_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("SEMATIC_K8S_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    if kubelet == "docker":
        import infra
        from sematic_k8s.packaging.build import ensure_image

        base = infra.require_docker()
        image = ensure_image(root, f"{infra.REGISTRY}/sematic-k8s-k8s-test", base, progress=lambda _: None).digest_ref
        node, behaviour = NodeSpec("node-1", runtime="docker"), None
    else:  # the pod's command, with only the pod's env and where the code is
        image, node = IMAGE, NodeSpec("node-1", runtime="sim")
        behaviour = behave({"worker": Script(process=True, extra_env={
            "PYTHONPATH": os.pathsep.join([str(root), REPO])})})
    storage = storage_from_url(url_s3)
    worker_env = {"SEMATIC_K8S_S3_ENDPOINT": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                  "AWS_EC2_METADATA_DISABLED": "true", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}  # the last: dropped
    with Cluster([node], behaviour=behaviour) as cluster:
        cluster.namespace(NS)
        api = cluster.client()
        client.CoreV1Api(api).create_namespaced_secret(NS, client.V1Secret(
            metadata=client.V1ObjectMeta(name="sk-s3"),
            data={k: base64.b64encode(v.encode()).decode() for k, v in
                  {"AWS_ACCESS_KEY_ID": "AKTEST", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}.items()}))

        def resolve(future: Any) -> Any:
            ex = KubernetesExecutor(storage, url_s3, image, namespace=NS, api_client=api, env=worker_env,
                                    storage_secret="sk-s3", owner=False, backoff=FAST)
            loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(2), ex),
                                  ResolutionSettings(max_parallelism=4), kind="cloud")
            return loop.run(future)

        f = module.pipeline(["hello", "pod", "world"])
        assert resolve(f) == "HELLO POD WORLD"
        with pytest.raises(ResolutionFailed) as err:
            resolve(module.boom(4))
        reached = resolve(module.reach_storage())  # its pod's own code: no key to reach storage with, only its URLs
        pod_jobs = jobs(api, f"sematic-k8s/resolution-id={f.id}")
        left_secrets = [s["metadata"]["name"] for s in cluster.list("secrets", NS)
                        if s["metadata"]["name"].endswith("-task")]
        where = "/app" if kubelet == "docker" else os.path.join(cluster.workdir, "sim")  # the image's code
        api.close()  # directory, or the simulated kubelet's
        assert not cluster.errors, cluster.errors
    assert err.value.error["type"] == "RuntimeError" and "boom 4" in err.value.error["message"]
    shout_runs = [r for r in store.runs_of_root(f.id) if r.func_name == "shout"]
    assert len(shout_runs) == 3
    logs = [storage.get(log_key(r.id)).decode() for r in shout_runs]  # the workers' own logs
    assert all(f"in {where}\n" in text for text in logs), logs
    assert len(pod_jobs) == 3
    for job in pod_jobs:  # no storage key: the task's presigned URLs, from the Job's own Secret (gone with its run)
        container = job.spec.template.spec.containers[0]
        env = {e.name: e for e in container.env}
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "SEMATIC_K8S_TASK"} & set(env)
        assert not container.env_from and "s3cr3t" not in json.dumps(api.sanitize_for_serialization(job))
        [volume] = job.spec.template.spec.volumes
        assert volume.secret.secret_name == f"{job.metadata.name}-task"
        assert env["SEMATIC_K8S_TASK_FILE"].value == f"{container.volume_mounts[0].mount_path}/task"
        assert job.spec.template.spec.security_context.fs_group == IMAGE_UID
        assert container.image == image
    assert not left_secrets
    assert reached == "S3CredentialsError"


@sk.func(node_selector={"pool": "highmem"}, tolerations=[{"key": "dedicated", "operator": "Equal",
                                                          "value": "ml", "effect": "NoSchedule"}])
def placed(x: int) -> int:
    return x


def plain_one() -> int:
    """A plain function to decorate with settings (a lambda is refused)."""
    return 1


def test_a_funcs_node_selector_and_tolerations_place_its_pod():
    assert placed.inline is False  # placement means a pod of its own
    spec = TaskSpec(new_id(), new_id(), placed.path, placed.source_file, {}, {}, 1)
    job = valid(manifests.worker_job(spec, placed, IMAGE, {"SEMATIC_K8S_TASK": spec.to_json()}, namespace=NS,
                                     node_selector={"zone": "a"}))
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"zone": "a", "pool": "highmem"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    with pytest.raises(sk.FuncError, match="node_selector must map"):
        sk.func(node_selector={"pool": 1})(plain_one)


def test_the_pods_a_deleted_job_left_are_its_own_for_this_run_and_not_already_going():
    """What the executor deletes after a worker's Job was deleted without its pods: the pods with the Job's uid (or,
    while its uid is unknown, its name) in the Job controller's labels, whose own labels name this resolution, run
    and the worker role, and that are not being deleted already."""
    from sematic_k8s.k8s.pods import pods_left

    def pod(name: str, *, uid_label: str = "u1", job: str = "sk-r-1", run: str = "r", role: str = "worker",
            deleting: bool = False, legacy: bool = False) -> dict[str, Any]:
        job_labels = {"controller-uid": uid_label, "job-name": job} if legacy else {
            "batch.kubernetes.io/controller-uid": uid_label, "batch.kubernetes.io/job-name": job}
        return {"metadata": {"name": name, "uid": f"uid-{name}", "labels": {
            **job_labels, "sematic-k8s/resolution-id": "root", "sematic-k8s/run-id": run, "sematic-k8s/role": role},
            **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})}}

    pods = [pod("a"), pod("b", legacy=True), pod("older", uid_label="u0"), pod("going", deleting=True),
            pod("other-run", run="s"), pod("driver", role="driver")]
    assert pods_left(pods, "sk-r-1", "u1", "root", "r") == [("a", "uid-a"), ("b", "uid-b")]
    assert pods_left(pods, "sk-r-1", None, "root", "r") == [("a", "uid-a"), ("b", "uid-b"), ("older", "uid-older")]
    assert pods_left(pods, "sk-r-1-r1", None, "root", "r") == []


def test_the_pods_a_restarted_driver_deletes_are_its_resolutions_workers_no_live_job_made():
    """Before a restarted driver makes any Job: the worker pods of its resolution that no live Job of it made (the
    Job controller's uid label, or the controller ownerReference, names none of them: a Job deleted without its pods
    while no driver ran), not being deleted already. Another resolution's, a driver's, a live Job's are left."""
    from sematic_k8s.k8s.pods import made_by, orphans

    def pod(name: str, uid_label: str | None, *, owner: str | None = None, root: str = "root", role: str = "worker",
            deleting: bool = False) -> dict[str, Any]:
        labels = {"sematic-k8s/resolution-id": root, "sematic-k8s/run-id": "r", "sematic-k8s/role": role,
                  **({"batch.kubernetes.io/controller-uid": uid_label} if uid_label else {})}
        refs = [{"kind": "Job", "name": "sk-r-1", "uid": owner, "controller": True}] if owner else []
        return {"metadata": {"name": name, "uid": f"uid-{name}", "labels": labels, "ownerReferences": refs,
                             **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})}}

    live = pod("live", "u1", owner="u1")
    pods = [live, pod("orphan", "u0"), pod("unlabelled", None), pod("going", "u0", deleting=True),
            pod("other", "u0", root="other"), pod("driver", "u0", role="driver")]
    assert made_by(live) == "u1" and made_by(pod("orphan", "u0")) == "u0" and made_by(pod("x", None)) is None
    assert orphans(pods, {"u1"}, "root") == [("orphan", "uid-orphan"), ("unlabelled", "uid-unlabelled")]
    assert orphans(pods, {"u0", "u1"}, "root") == [("unlabelled", "uid-unlabelled")]


def test_a_watch_stopped_while_its_list_is_retried_ends_then(caplog):
    """The API server stopped: a watch's list is retried with backoff. stop() (as the executor's close() and
    detach() call it) ends its thread then; it slept on through its retries, logging, past its owner's close (and
    past pytest's end: a daemon thread writing to stderr at interpreter shutdown aborts the process)."""
    from sematic_k8s.k8s.watch import Watcher
    from waiting import wait_for

    caplog.set_level(logging.WARNING, logger="sematic_k8s.k8s")
    with Cluster([NodeSpec("node-1", runtime="sim")]) as c:
        api = c.client()
    try:
        watcher = Watcher("pod", client.CoreV1Api(api).list_namespaced_pod, NS, "", queue.Queue(),
                          backoff=Backoff()).start()  # the executor's backoff
        wait_for(lambda: any("retrying" in r.getMessage() for r in caplog.records), 60,
                 what="the watch's list retried")
        watcher.stop()
        assert not watcher._thread.is_alive()
    finally:
        api.close()
