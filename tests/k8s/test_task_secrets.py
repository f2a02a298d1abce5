"""Worker pods with presigned URLs, on the cluster model (tests/support/kube_model) and a real S3 API: each attempt's
task in a Secret of its Job's own, made before the Job and deleted when the attempt ends, mounted as a kubelet mounts
it (root's files of the pod's fsGroup) and read by the worker as the container's user; no storage key in the pod.
Relaunches presign afresh, a Secret left by a driver before is made again, RBAC's refusal is one line, a quota on
Secrets queues the create, and the garbage collector takes the Secrets of a deleted driver Job. A task more than a
Secret holds (a fan-in of thousands of inputs) is stored and its Secret holds a presigned GET of it. Workers run the
real worker code in-process on simulated nodes, reading their task from the mounted file (PermissionError where its
mode keeps the container's user out)."""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

kubernetes = pytest.importorskip("kubernetes")
pytest.importorskip("boto3")

from kubernetes import client  # noqa: E402
from wide_pipeline import WIDTH, wide  # noqa: E402

import sematic_k8s as sk  # noqa: E402
from kube_model import Cluster, Script, SimContext  # noqa: E402
from model_workers import behave, ended, held, worker  # noqa: E402
from s3server import fresh_bucket  # noqa: E402
from sematic_k8s import serialization  # noqa: E402
from sematic_k8s.errors import KubernetesForbidden  # noqa: E402
from sematic_k8s.executors.base import Task  # noqa: E402
from sematic_k8s.executors.kubernetes import KubernetesExecutor  # noqa: E402
from sematic_k8s.executors.remote import load_task  # noqa: E402
from sematic_k8s.future import new_id  # noqa: E402
from sematic_k8s.k8s.client import Backoff  # noqa: E402
from sematic_k8s.k8s.manifests import task_secret_name, worker_job_name  # noqa: E402
from sematic_k8s.settings import STORAGE_KEY_ENVS, TASK_ENV, TASK_FILE_ENV  # noqa: E402
from sematic_k8s.specs import IMAGE_UID, TaskRef, TaskSpec, outcome_key, staged_key  # noqa: E402
from sematic_k8s.storage.base import artifact_key, put_artifact  # noqa: E402
from sematic_k8s.storage.s3 import S3Storage  # noqa: E402

NS = "runs"
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "cd" * 32
FAST = Backoff(base=0.01, cap=0.05, attempts=6)


@sk.func(inline=False, cpu="100m", memory="64Mi")
def square(x: int) -> int:
    return x * x


@pytest.fixture
def storage(monkeypatch) -> S3Storage:
    endpoint, bucket = fresh_bucket(monkeypatch, "sk-task-secrets")
    return S3Storage(bucket, "runs", endpoint_url=endpoint, region="us-east-1")


def executor(api: client.ApiClient, storage: S3Storage, **kw: Any) -> KubernetesExecutor:
    kw.setdefault("owner", False)
    kw.setdefault("creates_per_second", 0)
    kw.setdefault("event_check", 0.2)
    return KubernetesExecutor(storage, f"s3://{storage.bucket}/runs", IMAGE, namespace=NS, api_client=api, env={},
                              backoff=FAST, storage_secret="sk-s3", **kw)


def submit(ex: KubernetesExecutor, root_id: str, x: int, run_id: str | None = None) -> str:
    run_id = run_id or new_id()
    s = serialization.serialize(x)
    put_artifact(ex.storage, s)
    ex.submit(Task(run_id, root_id, square, {"x": serialization.Value(s.id, s.format, "", load=lambda _id: x)}, 1))
    return run_id


def task_secrets(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {s["metadata"]["name"]: s for s in cluster.list("secrets", NS) if s["metadata"]["name"].endswith("-task")}


def task_of(secret: dict[str, Any]) -> TaskSpec:
    return TaskSpec.from_json(base64.b64decode(secret["data"]["task"]).decode())


def expires(url: str) -> int:
    """When a presigned URL expires (epoch seconds)."""
    query = parse_qs(urlsplit(url).query)
    if "Expires" in query:
        return int(query["Expires"][0])
    signed = datetime.datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    return int(signed.timestamp()) + int(query["X-Amz-Expires"][0])


def recording(seen: list[SimContext]) -> Script:
    def run(ctx: SimContext) -> int:
        seen.append(ctx)
        return worker(ctx)
    return Script(func=run)


def test_a_worker_pod_reads_its_task_from_its_own_secret_and_holds_no_storage_key(cluster, api, storage):
    seen: list[SimContext] = []
    cluster.behaviour = behave({"worker": recording(seen)})
    ex = executor(api, storage)
    run_id = submit(ex, new_id(), 7)
    outcome = ended(ex, 1)[run_id]
    job_name = worker_job_name(run_id, 1)
    [job] = [j for j in cluster.list("jobs.batch", NS) if j["metadata"]["name"] == job_name]
    ex.close()
    assert outcome.error_info is None and storage.get(artifact_key(outcome.output["id"])) is not None
    # the Job (which whoever may read Jobs reads) holds no URL and no key: a volume of its own Secret
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert not set(STORAGE_KEY_ENVS) & set(env) and TASK_ENV not in env and "envFrom" not in container
    assert "Signature=" not in json.dumps(job) and "X-Amz-" not in json.dumps(job)
    assert pod["volumes"] == [{"name": "task", "secret": {"secretName": task_secret_name(job_name),
                                                          "defaultMode": 0o440}}]
    assert env[TASK_FILE_ENV]["value"] == f"{container['volumeMounts'][0]['mountPath']}/task"
    assert container["volumeMounts"][0]["readOnly"] is True and pod["securityContext"]["fsGroup"] == IMAGE_UID
    # the worker ran as the image's user, read the file through fsGroup, and had nothing but its URLs
    [ctx] = seen
    assert ctx.spec is not None and ctx.spec.user == f"{IMAGE_UID}:{IMAGE_UID}" and ctx.spec.groups == [IMAGE_UID]
    assert not set(STORAGE_KEY_ENVS) & set(ctx.env)
    task = TaskSpec.from_json(ctx.read(ctx.env[TASK_FILE_ENV]))
    assert set(task.urls) == {f"GET {artifact_key(i)}" for i in task.input_ids.values()} | {
        f"PUT {outcome_key(run_id, 1)}", f"PUT {staged_key(run_id, 1)}"}
    # made before its Job (its pod never waited on a missing volume), deleted when the attempt ended
    creates = [c.resource_path for c in cluster.calls(verb="create") if c.resource_path in ("secrets", "jobs")]
    assert creates == ["secrets", "jobs"], creates
    assert not [e for e in cluster.events(NS) if e["reason"] == "FailedMount"]
    assert task_secrets(cluster) == {}
    assert ex.stats.secret_creates == 1 and ex.stats.secret_deletes == 1


def test_an_evicted_worker_runs_again_with_fresh_urls_in_a_secret_of_its_new_job(cluster, api, storage):
    gate = threading.Event()
    cluster.behaviour = behave({"worker": Script(func=held(gate))})
    ex = executor(api, storage)
    run_id = submit(ex, new_id(), 5)
    first = cluster.wait(lambda: task_secrets(cluster).get(task_secret_name(worker_job_name(run_id, 1))))
    pod = cluster.wait(lambda: [p["metadata"]["name"] for p in cluster.list("pods", NS)
                                if p["status"].get("phase") == "Running"])[0]
    time.sleep(1.1)  # URLs presigned a second later than the first (their expiry counts in seconds)
    cluster.evict(NS, pod)
    relaunched = task_secret_name(worker_job_name(run_id, 1, 1))
    second = cluster.wait(lambda: not ex.wait(0.05) and task_secrets(cluster).get(relaunched), message="relaunch")
    assert list(task_secrets(cluster)) == [relaunched]  # the evicted Job's Secret is deleted
    gate.set()
    outcome = ended(ex, 1)[run_id]
    ex.close()
    assert outcome.error_info is None and outcome.details["relaunches"] == 1
    old, new = task_of(first).urls, task_of(second).urls
    assert old.keys() == new.keys() and all(expires(new[k]) > expires(old[k]) for k in old)  # presigned again
    assert task_secrets(cluster) == {}


def test_a_restarted_driver_keeps_the_secret_of_the_job_it_reattaches_to_and_deletes_it_at_the_end(cluster, api,
                                                                                                     storage):
    gate = threading.Event()
    cluster.behaviour = behave({"worker": Script(func=held(gate))})
    root = new_id()
    first = executor(api, storage)
    run_id = submit(first, root, 9)
    name = task_secret_name(worker_job_name(run_id, 1))
    made = cluster.wait(lambda: task_secrets(cluster).get(name))
    first.detach()  # the driver dies: nothing cleaned up, the Job runs on
    second = executor(api, storage)
    s = serialization.serialize(9)
    second.submit(Task(run_id, root, square, {"x": serialization.Value(s.id, s.format, "", load=lambda _id: 9)}, 1,
                       resumed=True))
    assert task_secrets(cluster)[name]["metadata"]["uid"] == made["metadata"]["uid"]  # kept: its pod reads it
    gate.set()
    outcome = ended(second, 1)[run_id]
    second.close()
    assert outcome.error_info is None and second.stats.reattached == 1 and second.stats.secret_creates == 0
    assert task_secrets(cluster) == {}


def node_held(cluster: Cluster, api: client.ApiClient, storage: S3Storage) -> \
        tuple[KubernetesExecutor, str, str, threading.Event, list[SimContext]]:
    """A node that takes one pod, held by a first run's worker until the gate is set (its executor refreshing task
    Secrets every second): the executor, the root id, the first run's id, the gate, and the workers seen so far."""
    cluster.update_node("node-1", pods=1)
    gate = threading.Event()
    seen: list[SimContext] = []

    def run(ctx: SimContext) -> int:
        seen.append(ctx)
        return held(gate)(ctx) if len(seen) == 1 else worker(ctx)
    cluster.behaviour = behave({"worker": Script(func=run)})
    ex = executor(api, storage, task_refresh=1.0)
    root = new_id()
    first = submit(ex, root, 2)
    cluster.wait(lambda: seen, message="the first worker running")
    return ex, root, first, gate, seen


def test_a_pod_that_waits_for_room_starts_with_urls_presigned_while_it_waited(cluster, api, storage):
    """The node takes one pod: the second waits (Unschedulable) as long as the first runs, its Secret made again with
    fresh URLs every ``task_refresh`` seconds while it does, never once it is on a node; it reads the newest."""
    ex, root, first, gate, seen = node_held(cluster, api, storage)
    second = submit(ex, root, 3)
    name = task_secret_name(worker_job_name(second, 1))
    made = cluster.wait(lambda: task_secrets(cluster).get(name))
    cluster.wait(lambda: not ex.wait(0.05) and task_secrets(cluster).get(name, {}).get("metadata", {}).get("uid")
                 not in (None, made["metadata"]["uid"]), message="its Secret made again while it waited")
    gate.set()
    got = ended(ex, 2)
    ex.close()
    assert got[first].error_info is None and got[second].error_info is None, got
    assert ex.stats.waits.get("waiting for capacity", 0) >= 1
    read = TaskSpec.from_json(seen[1].read(seen[1].env[TASK_FILE_ENV]))
    assert all(expires(read.urls[k]) > expires(url) for k, url in task_of(made).urls.items())
    assert task_secrets(cluster) == {}


def outputs(storage: S3Storage, n: int) -> dict[str, serialization.Value]:
    """``n`` inputs x0 ... x<n-1>, each the stored output (i, its own artifact) of a run of its own."""
    stored = [serialization.serialize(i) for i in range(n)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda s: put_artifact(storage, s), stored))
    values = {}
    for i, s in enumerate(stored):
        values[f"x{i}"] = v = serialization.Value(s.id, s.format, "", load=lambda _v, i=i: i)
        v.origin = new_id()
    return values


def test_a_fan_in_too_large_for_a_secret_gets_its_task_through_storage_presigned_again_while_it_waits(cluster, api,
                                                                                                        storage):
    """A run of WIDTH inputs: its task (a presigned GET an input) is more than the 1 MiB an API server lets a Secret
    hold (422 Too long: the Job was never made, JobCreateFailed). The task is stored under a key of its own and its
    Secret holds a presigned GET of it, nothing else; the worker fetches it and runs. Its pod waits for room meanwhile:
    the task is stored again with fresh URLs, the Secret made again with a fresh GET of that copy; the worker reads
    the newest. No storage key in the pod, no URL in the Job."""
    ex, root, first, gate, seen = node_held(cluster, api, storage)
    fetched: list[TaskSpec] = []  # what the fan-in's worker fetched (its copy is deleted once it ended)

    def fetching(ctx: SimContext) -> int:
        seen.append(ctx)
        fetched.append(load_task(ctx.read(ctx.env[TASK_FILE_ENV])))
        return worker(ctx)
    cluster.behaviour = behave({"worker": Script(func=fetching)})
    fan_in = new_id()
    ex.submit(Task(fan_in, root, wide, outputs(storage, WIDTH), 1))
    job_name = worker_job_name(fan_in, 1)
    name = task_secret_name(job_name)

    def secret() -> dict[str, Any]:
        ended_early = [o for o in ex.wait(0.05) if o.run_id == fan_in]  # without a stored task: JobCreateFailed, 422
        assert not ended_early, ended_early[0].error_info
        return task_secrets(cluster).get(name) or {}
    made = cluster.wait(secret, message="its Secret made")
    first_ref = TaskRef.parse(base64.b64decode(made["data"]["task"]).decode())
    assert first_ref is not None
    old = TaskSpec.from_json(storage.get(first_ref.key).decode())
    cluster.wait(lambda: secret().get("metadata", {}).get("uid") not in (None, made["metadata"]["uid"]),
                 message="its Secret made again while it waited")
    cluster.wait(lambda: not ex.wait(0.05) and not storage.exists(first_ref.key),
                 message="the copy the new Secret replaced deleted")
    [job] = [j for j in cluster.list("jobs.batch", NS) if j["metadata"]["name"] == job_name]
    gate.set()
    got = ended(ex, 2, timeout=180)
    ex.close()
    assert got[first].error_info is None and got[fan_in].error_info is None, got[fan_in].error_info
    output = got[fan_in].output
    assert serialization.deserialize(output["format"], storage.get(artifact_key(output["id"]))) == sum(range(WIDTH))
    # the Secret: a reference to the stored task, whose every URL (and its own) was presigned again as it waited
    read = TaskRef.parse(seen[1].read(seen[1].env[TASK_FILE_ENV]))
    assert read is not None and read.key != first_ref.key
    assert len(made["data"]["task"]) < 4096 and expires(read.url) > expires(first_ref.url)
    [new] = fetched
    assert len(new.to_json()) > 1024 * 1024 and len(new.urls) == WIDTH + 2 and new.input_ids == old.input_ids
    assert all(expires(new.urls[k]) > expires(url) for k, url in old.urls.items())
    assert ex.stats.tasks_stored >= 2 and ex.stats.refreshes >= 1
    # every copy deleted: the ones its refreshes replaced, and the one its pod read once the attempt ended
    assert stored_tasks(storage, root, fan_in) == [] and ex.stats.tasks_deleted == ex.stats.tasks_stored
    # the trust boundary: nothing in the Job, no storage key in the pod
    assert "X-Amz-" not in json.dumps(job) and "Signature=" not in json.dumps(job)
    assert not set(STORAGE_KEY_ENVS) & set(seen[1].env)
    assert task_secrets(cluster) == {}


def stored_tasks(storage: S3Storage, root_id: str, run_id: str = "") -> list[str]:
    """The keys of the copies of the tasks of resolution ``root_id`` (of its run ``run_id`` alone, if given) in
    storage, listed by S3 itself."""
    folder = f"runs/tasks/{root_id}/" + (f"{run_id}/" if run_id else "")
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=folder)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_a_stored_task_whose_delete_is_refused_is_left_and_logged_and_its_run_resolves(cluster, api, storage,
                                                                                      caplog):
    """Storage refusing every DELETE (403 AccessDenied, a proxy before the S3 API: a bucket policy without
    s3:DeleteObject): the attempt's end logs the copy left, in one line naming it, and the run resolves as it would;
    the end (the executor's close) notes what is left of the resolution's copies, and where."""
    from outages import ThrottlingProxy

    proxy = ThrottlingProxy(int(urlsplit(storage.endpoint_url).port or 80), lambda head: head.startswith(b"DELETE "),
                            1000, status=403, code="AccessDenied")
    through = S3Storage(storage.bucket, "runs", endpoint_url=proxy.url, region="us-east-1")
    cluster.behaviour = behave({"worker": Script(func=worker)})
    ex = executor(api, through)
    fan_in, root = new_id(), new_id()
    ex.submit(Task(fan_in, root, wide, outputs(storage, WIDTH), 1))
    got = ended(ex, 1, timeout=180)
    ex.close()
    proxy.close()
    assert got[fan_in].error_info is None and got[fan_in].output is not None, got[fan_in].error_info
    [left] = stored_tasks(storage, root, fan_in)
    assert proxy.throttled >= 1 and ex.stats.tasks_stored == 1 and ex.stats.tasks_deleted == 0
    assert f"could not delete run {fan_in}'s stored task {left.removeprefix('runs/')}, left in storage: " in caplog.text
    assert "AccessDenied" in caplog.text
    # the resolution's end tried the copies left once more, and noted the one left where it is
    assert f"1 stored task(s) of resolution {root} left in storage under tasks/{root}/ of s3://{storage.bucket}/runs" \
        in caplog.text


def test_a_stored_task_whose_refresh_meets_storage_out_of_reach_is_refreshed_once_it_is_back(cluster, api, storage,
                                                                                             monkeypatch, caplog):
    """Storage out of reach (a proxy before it dropping every connection, past the retry window) as a waiting pod's
    stored task is stored again: logged, the Secret there kept (its URLs last a while yet), tried again later; once
    storage answers, refreshed; the run resolves. The driver goes on meanwhile."""
    from outages import DroppingProxy

    proxy = DroppingProxy(int(urlsplit(storage.endpoint_url).port or 80))
    through = S3Storage(storage.bucket, "runs", endpoint_url=proxy.url, region="us-east-1")
    cluster.update_node("node-1", pods=1)
    gate = threading.Event()
    cluster.behaviour = behave({"worker": Script(func=lambda ctx: held(gate)(ctx) if not gate.is_set() else
                                                 worker(ctx))})
    ex = executor(api, through, task_refresh=1.0)
    root = new_id()
    first = submit(ex, root, 2)
    cluster.wait(lambda: [p for p in cluster.list("pods", NS) if p["status"].get("phase") == "Running"])
    fan_in = new_id()
    ex.submit(Task(fan_in, root, wide, outputs(storage, WIDTH), 1))
    name = task_secret_name(worker_job_name(fan_in, 1))
    made = cluster.wait(lambda: not ex.wait(0.05) and task_secrets(cluster).get(name), message="its Secret made")
    monkeypatch.setenv("SEMATIC_K8S_RETRY_WINDOW", "1")
    proxy.drop()
    try:
        cluster.wait(lambda: not ex.wait(0.05) and "could not make Secret" in caplog.text, timeout=60,
                     message="the refresh refused")
        assert task_secrets(cluster)[name]["metadata"]["uid"] == made["metadata"]["uid"]  # kept
    finally:
        proxy.drop(False)
    cluster.wait(lambda: not ex.wait(0.05) and task_secrets(cluster).get(name, {}).get("metadata", {}).get("uid")
                 not in (None, made["metadata"]["uid"]), timeout=60, message="its Secret made again")
    gate.set()
    got = ended(ex, 2, timeout=180)
    ex.close()
    proxy.close()
    assert got[first].error_info is None and got[fan_in].error_info is None, got[fan_in].error_info


def test_a_secret_left_by_an_earlier_driver_is_made_again_with_fresh_urls(cluster, api, storage):
    """A driver killed between its Secret's create and its Job's leaves the Secret: the next one's create meets 409,
    and the Secret (stale, here unusable) is deleted and made again, never read back."""
    run_id = new_id()
    name = task_secret_name(worker_job_name(run_id, 1))
    stale = TaskSpec(run_id=run_id, root_id="r", func_path="nowhere:gone", source_file=None, input_ids={},
                     input_formats={}, attempt=1, urls={"PUT x": "http://127.0.0.1:9/expired"})
    client.CoreV1Api(api).create_namespaced_secret(NS, {"metadata": {"name": name}, "data": {
        "task": base64.b64encode(stale.to_json().encode()).decode()}})
    ex = executor(api, storage)
    submit(ex, new_id(), 4, run_id=run_id)
    outcome = ended(ex, 1)[run_id]
    ex.close()
    assert outcome.error_info is None, outcome.error_info
    assert ex.stats.conflicts == 1 and task_secrets(cluster) == {}
    assert not [c for c in cluster.calls(resource="secrets") if c.verb in ("get", "list", "patch", "update")]


def restricted(cluster: Cluster, name: str, rules: list[dict[str, Any]]) -> client.ApiClient:
    """A client acting as ServiceAccount ``name`` of NS, bound to a Role of ``rules`` there."""
    return cluster.client_with_role(NS, name, rules)


OLD_DRIVER_ROLE = [  # the chart's driver Role before workers' tasks went in Secrets
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list", "watch"]}]


def test_a_driver_whose_role_may_not_create_secrets_is_told_in_one_line_what_to_add(cluster, storage):
    old = restricted(cluster, "old-role", OLD_DRIVER_ROLE)
    ex = executor(old, storage)
    with pytest.raises(KubernetesForbidden) as err:
        submit(ex, new_id(), 2)
    ex.close()
    old.close()
    said = str(err.value)
    assert "\n" not in said and said.startswith("the Kubernetes API refuses to let this driver create Secret sk-")
    assert 'it lacks create on secrets in API group ""' in said and "create and delete on secrets" in said, said
    assert not cluster.list("jobs.batch", NS)


def test_a_quota_on_secrets_queues_the_create_until_secrets_go(cluster, api, storage):
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(NS, {"metadata": {"name": "secrets"}, "spec": {"hard": {"secrets": "1"}}})
    ex = executor(api, storage)
    root = new_id()
    run_ids = [submit(ex, root, i) for i in range(2)]
    got = ended(ex, 2)
    ex.close()
    assert all(got[r].error_info is None for r in run_ids), [got[r].error_info for r in run_ids]
    assert ex.stats.requeued >= 1 and task_secrets(cluster) == {}


def test_the_secrets_of_a_deleted_driver_job_go_with_it(cluster, api, storage):
    """Owned by the driver's Job: a garbage collector deletes them with it, whatever became of the driver."""
    batch = client.BatchV1Api(api)
    driver = batch.create_namespaced_job(NS, {"metadata": {"name": "sk-driver-x"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "driver", "image": IMAGE}]}}}})
    cluster.behaviour = behave({"worker": Script(func=held(threading.Event()))})
    ex = executor(api, storage, owner=(driver.metadata.name, driver.metadata.uid))
    run_id = submit(ex, new_id(), 6)
    secret = cluster.wait(lambda: task_secrets(cluster).get(task_secret_name(worker_job_name(run_id, 1))))
    assert [(o["kind"], o["uid"]) for o in secret["metadata"]["ownerReferences"]] == [("Job", driver.metadata.uid)]
    ex.detach()  # the driver is gone (killed): nothing deletes the Secret but the garbage collector
    batch.delete_namespaced_job("sk-driver-x", NS, propagation_policy="Background")
    cluster.wait(lambda: not task_secrets(cluster) and not cluster.list("jobs.batch", NS), message="collected")


def test_a_driver_job_deleted_without_its_pod_has_its_follower_delete_the_orphaned_task_secrets(cluster, api, storage):
    """Deleted with propagationPolicy Orphan, the driver's Job leaves its dependents unowned, the task Secrets too: the
    CloudResolver's follower deletes them with the worker Jobs (the driver, here gone without cleaning up, would
    have)."""
    from sematic_k8s.launchers.kubernetes import DriverJob, launch_driver
    from sematic_k8s.specs import DriverSpec, ResolutionSettings

    cluster.behaviour = lambda pod, c: Script(func=held(threading.Event())) if c["name"] == "worker" else \
        Script(forever=True)
    root = new_id()
    spec = DriverSpec(root={"id": "a" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                      executor="kubernetes", executor_settings={"namespace": NS},
                      resolution=ResolutionSettings(root_id=root))
    launch_driver(spec, root, {}, namespace=NS, api_client=api)
    job = cluster.wait(lambda: cluster.get("jobs.batch", NS, f"sk-driver-{root}"))
    ex = executor(api, storage, owner=(job["metadata"]["name"], job["metadata"]["uid"]))
    run_id = submit(ex, root, 8)
    name = task_secret_name(worker_job_name(run_id, 1))
    cluster.wait(lambda: task_secrets(cluster).get(name))
    ex.detach()
    follower = DriverJob(spec, api_client=cluster.client())
    client.BatchV1Api(api).delete_namespaced_job(f"sk-driver-{root}", NS, propagation_policy="Orphan")
    end = cluster.wait(follower.ended)
    assert end.leftovers
    cluster.wait(lambda: not task_secrets(cluster).get(name, {}).get("metadata", {}).get("ownerReferences"),
                 message="the Secret orphaned")
    follower.cleanup()
    follower.close()
    cluster.wait(lambda: not task_secrets(cluster) and not [j for j in cluster.list("jobs.batch", NS)
                                                            if j["metadata"]["labels"]["sematic-k8s/role"] == "worker"],
                 message="the worker Jobs and their Secrets deleted")


def test_a_driver_that_finds_its_job_deleted_deletes_its_workers_secrets_as_it_stops(cluster, api, storage):
    """DriverJobDeleted (its Job deleted without its pod, the Secrets orphaned with it): the executor's close cancels
    the attempts, deleting their Jobs and Secrets, which nothing else would."""
    from sematic_k8s.errors import DriverJobDeleted

    batch = client.BatchV1Api(api)
    driver = batch.create_namespaced_job(NS, {"metadata": {"name": "sk-driver-y"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "driver", "image": IMAGE}]}}}})
    cluster.behaviour = behave({"worker": Script(func=held(threading.Event()))})
    ex = executor(api, storage, owner=(driver.metadata.name, driver.metadata.uid), owner_check=0.1)
    run_id = submit(ex, new_id(), 6)
    cluster.wait(lambda: task_secrets(cluster).get(task_secret_name(worker_job_name(run_id, 1))))
    batch.delete_namespaced_job("sk-driver-y", NS, propagation_policy="Orphan")
    with pytest.raises(DriverJobDeleted):
        cluster.wait(lambda: ex.wait(0.05) and False, message="DriverJobDeleted")
    ex.close()
    assert task_secrets(cluster) == {}
