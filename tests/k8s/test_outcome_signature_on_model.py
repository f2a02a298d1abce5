"""Worker pods sign their outcome document, on the cluster model (tests/support/kube_model) and a real S3 API: the
key of each attempt is in its Job's own task Secret (mounted as a file), never in the Job, never in the bucket; its
driver, and a restarted one, adopts nothing else. The image says whether its worker signs (its label, read by digest
from the test registry, as a driver reads it): one without the label (built before) is handed no key and its outcome
is adopted unsigned. Workers run the real worker code in-process on simulated nodes."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from executor_tasks import value_of

kubernetes = pytest.importorskip("kubernetes")
pytest.importorskip("boto3")

from kubernetes import client  # noqa: E402
from wide_pipeline import WIDTH, wide  # noqa: E402

import sematic_k8s as sk  # noqa: E402
from infra import REGISTRY, docker_client, require_docker  # noqa: E402
from kube_model import Cluster, Script, SimContext  # noqa: E402
from model_workers import behave, ended, held, worker  # noqa: E402
from s3_front import relay  # noqa: E402
from s3server import fresh_bucket  # noqa: E402
from sematic_k8s import serialization  # noqa: E402
from sematic_k8s.executors import outcome_signing, remote  # noqa: E402
from sematic_k8s.executors.base import Outcome, Task  # noqa: E402
from sematic_k8s.executors.kubernetes import KubernetesExecutor  # noqa: E402
from sematic_k8s.executors.remote import load_task  # noqa: E402
from sematic_k8s.future import new_id  # noqa: E402
from sematic_k8s.k8s.client import Backoff  # noqa: E402
from sematic_k8s.k8s.manifests import task_secret_name, worker_job_name  # noqa: E402
from sematic_k8s.settings import API_KEY_ENV, API_KEY_FILE_ENV, TASK_ENV, TASK_FILE_ENV  # noqa: E402
from sematic_k8s.specs import TaskRef, TaskSpec, outcome_key  # noqa: E402
from sematic_k8s.storage.base import put_artifact  # noqa: E402
from sematic_k8s.storage.local import LocalStorage  # noqa: E402
from sematic_k8s.storage.s3 import S3Storage  # noqa: E402
from sematic_k8s.storage.urls import storage_url  # noqa: E402
from serving import free_port  # noqa: E402
from signing_images import labelled  # noqa: E402

NS = "runs"
FAST = Backoff(base=0.01, cap=0.05, attempts=6)


@sk.func(inline=False, cpu="100m", memory="64Mi")
def square(x: int) -> int:
    return x * x


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """Images by digest in the test registry: "signs" labelled as this version's build labels it, "older" without."""
    base, docker = require_docker(), docker_client()
    return {"signs": labelled(docker, base, f"signs-{uuid.uuid4().hex[:8]}", "1"),
            "older": labelled(docker, base, f"older-{uuid.uuid4().hex[:8]}", None)}


@pytest.fixture
def storage(monkeypatch) -> S3Storage:
    monkeypatch.delenv(API_KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(API_KEY_ENV, "the resolution's token")  # a driver's, from its Secret: a restarted one's too
    endpoint, bucket = fresh_bucket(monkeypatch, "sk-signing")
    return S3Storage(bucket, "runs", endpoint_url=endpoint, region="us-east-1")


def executor(api: client.ApiClient, storage: S3Storage, image: str) -> KubernetesExecutor:
    return KubernetesExecutor(storage, f"s3://{storage.bucket}/runs", image, namespace=NS, api_client=api, env={},
                              backoff=FAST, storage_secret="sk-s3", owner=False, creates_per_second=0,
                              event_check=0.2)


def submit(ex: KubernetesExecutor, root_id: str, x: int, run_id: str | None = None, *, resumed: bool = False) -> str:
    run_id = run_id or new_id()
    s = serialization.serialize(x)
    put_artifact(ex.storage, s)
    ex.submit(Task(run_id, root_id, square, {"x": serialization.Value(s.id, s.format, "", load=lambda _id: x)}, 1,
                   resumed=resumed))
    return run_id


def handed(cluster: Cluster, run_id: str) -> tuple[dict[str, Any], TaskSpec]:
    """The attempt's Job and the task its Secret holds, once both are there."""
    name = worker_job_name(run_id, 1)
    secret = cluster.wait(lambda: [s for s in cluster.list("secrets", NS) if s["metadata"]["name"] ==
                                   task_secret_name(name)], message="its task Secret")[0]
    job = cluster.wait(lambda: [j for j in cluster.list("jobs.batch", NS) if j["metadata"]["name"] == name])[0]
    return job, TaskSpec.from_json(base64.b64decode(secret["data"]["task"]).decode())


def one_attempt(cluster: Cluster, ex: KubernetesExecutor, x: int) -> tuple[str, dict[str, Any], TaskSpec, Outcome]:
    """``square(x)`` run by ``ex`` (closed after): its run's id, its attempt's Job, the task its Secret held, and the
    outcome its driver read."""
    try:
        run_id = submit(ex, new_id(), x)
        job, task = handed(cluster, run_id)
        return run_id, job, task, ended(ex, 1)[run_id]
    finally:
        ex.close()


def replacing(storage: S3Storage) -> Script:
    """A worker whose outcome another writer of the bucket replaces once it is stored, before its pod ends: 666,
    stored under its true id, the worker's carried bytes dropped, its signature kept."""
    def run(ctx: SimContext) -> int:
        code = worker(ctx)
        for key in storage.keys("outcomes/"):  # the test's one attempt
            doc = json.loads(storage.get(key))
            forged = put_artifact(storage, serialization.serialize(666))
            doc = {**{k: v for k, v in doc.items() if k not in ("payload", "staged")}, "output": forged}
            storage.put(key, json.dumps(doc).encode(), repair=True)
        return code
    return Script(func=run)


def test_a_pods_outcome_is_signed_with_the_key_in_its_task_secret_and_one_replaced_is_not_adopted(
        cluster, api, storage, images, caplog):
    """Was: a pod's outcome document was adopted unsigned, so the replaced one's 666 became the run's output."""
    caplog.set_level(logging.WARNING, "sematic_k8s")
    cluster.behaviour = behave({"worker": replacing(storage)})
    run_id, job, task, outcome = one_attempt(cluster, executor(api, storage, images["signs"]), 7)
    assert outcome.output is None and outcome.error_info is not None, value_of(storage, outcome)
    assert outcome.error_info["type"] == "OutcomeUnverified", outcome.error_info
    assert "InfrastructureError" in outcome.error_info["mro"]  # the attempt is lost: run again
    said = [r.getMessage() for r in caplog.records if "not adopted" in r.getMessage()]
    assert len(said) == 1 and f"run {run_id} attempt 1" in said[0], said
    # the key: in the Secret only (mounted as a file), never in the Job (env, annotations), nor in the bucket
    assert len(task.signing_key) == 64 and task.signing_key not in json.dumps(job)
    assert storage.keys("tasks/") == []


def test_a_pods_signed_outcome_is_adopted_by_a_restarted_driver(cluster, api, storage, images, monkeypatch):
    """The driver dies while its worker runs; the restarted one (its key derived again from the resolution's token
    and the attempt, nothing of its predecessor's memory) verifies, and adopts, what that worker signed."""
    gate = threading.Event()
    cluster.behaviour = behave({"worker": Script(func=held(gate))})
    root = new_id()
    first = executor(api, storage, images["signs"])
    run_id = submit(first, root, 9)
    handed(cluster, run_id)
    first.detach()
    monkeypatch.setattr(outcome_signing, "_memory", None)  # a new process: whatever the first kept in memory is gone
    second = executor(api, storage, images["signs"])
    try:
        submit(second, root, 9, run_id, resumed=True)
        gate.set()
        outcome = ended(second, 1)[run_id]
    finally:
        second.close()
    assert value_of(storage, outcome) == 81 and second.stats.reattached == 1
    assert "signature" in json.loads(storage.get(outcome_key(run_id, 1)))


def test_an_older_images_pod_is_handed_no_key_and_its_outcome_is_adopted_unsigned(cluster, api, storage, images):
    """An image without the label (built before workers signed): no key in its task (its TaskSpec would refuse the
    field), its unsigned outcome adopted."""
    run_id, _, task, outcome = one_attempt(cluster, executor(api, storage, images["older"]), 6)
    assert task.signing_key == "" and value_of(storage, outcome) == 36
    assert "signature" not in json.loads(storage.get(outcome_key(run_id, 1)))


def test_a_fan_in_too_large_for_a_secret_has_its_key_in_the_secret_never_in_the_stored_copy(cluster, api, storage,
                                                                                              images):
    """A task more than a Secret holds is stored in the bucket (its reference in the Secret): the stored copy holds no
    key, the reference beside it does; the worker signs with it and its outcome is adopted."""
    fetched: list[TaskSpec] = []

    def fetching(ctx: SimContext) -> int:
        fetched.append(load_task(ctx.read(ctx.env[TASK_FILE_ENV])))
        return worker(ctx)
    cluster.behaviour = behave({"worker": Script(func=fetching)})
    stored = [serialization.serialize(i) for i in range(WIDTH)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda v: put_artifact(storage, v), stored))
    inputs = {f"x{i}": serialization.Value(v.id, v.format, "", load=lambda _v, i=i: i) for i, v in enumerate(stored)}
    ex = executor(api, storage, images["signs"])
    run_id = new_id()
    try:
        ex.submit(Task(run_id, new_id(), wide, inputs, 1))
        name = task_secret_name(worker_job_name(run_id, 1))
        secret = cluster.wait(lambda: [s for s in cluster.list("secrets", NS) if s["metadata"]["name"] == name],
                              message="its task Secret")[0]
        ref = TaskRef.parse(base64.b64decode(secret["data"]["task"]).decode())
        assert ref is not None
        copy = storage.get(ref.key).decode()
        outcome = ended(ex, 1, timeout=180)[run_id]
    finally:
        ex.close()
    assert len(ref.signing_key) == 64 and ref.signing_key not in copy and TaskSpec.from_json(copy).signing_key == ""
    assert [t.signing_key for t in fetched] == [ref.signing_key]
    assert value_of(storage, outcome) == sum(range(WIDTH))
    assert "signature" in json.loads(storage.get(outcome_key(run_id, 1)))


def test_a_pod_of_a_storage_without_urls_gets_its_key_in_its_task_secret_beside_its_storage_secret(cluster, api,
                                                                                                    storage, images,
                                                                                                    tmp_path):
    """A storage that makes no presigned URLs (its pods read it with the storage Secret's keys): the task held no
    secret and went in $SEMATIC_K8S_TASK; with its key it goes in the Job's task Secret, the storage Secret kept."""
    local = LocalStorage(tmp_path / "storage")
    client.CoreV1Api(api).create_namespaced_secret(NS, {"metadata": {"name": "sk-s3"}, "stringData": {
        "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}})
    ex = KubernetesExecutor(local, storage_url(local), images["signs"], namespace=NS, api_client=api, env={},
                            backoff=FAST, storage_secret="sk-s3", owner=False, creates_per_second=0, event_check=0.2)
    run_id, job, task, outcome = one_attempt(cluster, ex, 4)
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert TASK_ENV not in env and TASK_FILE_ENV in env and task.urls == {}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "sk-s3"
    assert len(task.signing_key) == 64 and task.signing_key not in json.dumps(job)
    assert value_of(local, outcome) == 16 and "signature" in json.loads(local.get(outcome_key(run_id, 1)))


@contextlib.contextmanager
def registry_on(port: int) -> Iterator[None]:
    """The test registry answering on ``port`` too (a relay to it), for the block's length."""

    class Relay(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            relay(self, REGISTRY, None)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Relay)
    threading.Thread(target=server.serve_forever, daemon=True, name="registry-relay").start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_an_images_labels_unreadable_at_first_are_asked_for_again_and_its_workers_then_sign(
        cluster, api, storage, images, monkeypatch, caplog):
    """Its registry not answering at the first submit (nothing on its port) is not taken for an image that does not
    sign for the driver's life: asked again (here at once: SIGNS_ASKED_AGAIN_AFTER 0) once it answers. Was: cached
    as False at the first submit, every worker's outcome adopted unsigned for good (a downgrade whoever can make the
    registry slow at a driver's start could choose)."""
    caplog.set_level(logging.WARNING, "sematic_k8s")
    monkeypatch.setattr(remote, "SIGNS_ASKED_AGAIN_AFTER", 0.0)
    port = free_port()
    ex = executor(api, storage, images["signs"].replace(REGISTRY, f"127.0.0.1:{port}", 1))
    task = Task(new_id(), new_id(), square, {}, 1)
    try:
        assert ex.workers_sign(task) is False
        with registry_on(port):
            assert ex.workers_sign(task) is True
    finally:
        ex.close()
    assert "asked again in a minute" in caplog.text
