"""The stored copies of workers' tasks (a task more than a Secret holds, handed over by a presigned GET of its copy)
once their drivers are gone or storage is: a driver killed (SIGKILL) mid-resolution leaves the copy its running worker
reads, which the driver that finishes the resolution keeps while that worker needs it and deletes at the end; deletes
are made off the driver's loop, so S3 out of reach while runs end holds no launch, and the copies go once it is back.
A resolution whose end no driver records (its driver killed for good, marked failed once its beats stop) has its copies
deleted by the server's sweeper, on the server's own storage only, once that storage is in reach.

On the cluster model (tests/support/kube_model) and a real S3 API (moto's server); the drivers are real processes
(``python -m sematic_k8s.driver``, the Kubernetes executor, reaching the model's API server over HTTP); workers run
the real worker code in-process on simulated nodes, reading their task from the mounted Secret."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from typing import Any
from urllib.parse import urlsplit

import pytest

kubernetes = pytest.importorskip("kubernetes")
pytest.importorskip("boto3")

import wide_pipeline as wp  # noqa: E402
from kubernetes import client  # noqa: E402

from kube_model import Script, SimContext  # noqa: E402
from model_workers import DRIVER_PYTHONPATH, ROOT, behave, driver_processes, held  # noqa: E402
from s3server import fresh_bucket  # noqa: E402
from sematic_k8s import serialization  # noqa: E402
from sematic_k8s.executors.base import Task  # noqa: E402
from sematic_k8s.executors.kubernetes import KubernetesExecutor  # noqa: E402
from sematic_k8s.executors.remote import load_task  # noqa: E402
from sematic_k8s.future import new_id  # noqa: E402
from sematic_k8s.k8s.client import Backoff  # noqa: E402
from sematic_k8s.k8s.manifests import worker_job_name  # noqa: E402
from sematic_k8s.settings import DRIVER_ENV, TASK_FILE_ENV  # noqa: E402
from sematic_k8s.specs import DriverSpec, ResolutionSettings, TaskSpec  # noqa: E402
from sematic_k8s.storage.base import artifact_key, put_artifact  # noqa: E402
from sematic_k8s.storage.s3 import S3Storage  # noqa: E402
from sematic_k8s.store import sql_store  # noqa: E402
from sematic_k8s.store.http import HttpStore  # noqa: E402
from sematic_k8s.store.records import Batch, ResolutionRecord, utcnow  # noqa: E402
from serving import serve  # noqa: E402

NS = "runs"
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "cd" * 32


@pytest.fixture
def storage(monkeypatch) -> S3Storage:
    endpoint, bucket = fresh_bucket(monkeypatch, "sk-task-copies")
    return S3Storage(bucket, "runs", endpoint_url=endpoint, region="us-east-1")


def stored_tasks(storage: S3Storage, root_id: str) -> list[str]:
    """The keys of the stored copies of resolution ``root_id``'s tasks, listed by S3 itself."""
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=f"runs/tasks/{root_id}/")
    return [o["Key"] for o in listed.get("Contents", [])]


def wait_until(check: Any, timeout: float, what: str) -> Any:
    """``check()``'s first truthy value, polled on the events it waits for; fails naming ``what`` after ``timeout``."""
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not done.is_set():
            found = check()
            if found:
                return found
            done.wait(0.1)
    finally:
        deadline.cancel()
    raise AssertionError(f"timed out waiting for {what}")


def fan_in_held(cluster: Any, gate: threading.Event) -> list[TaskSpec]:
    """The tasks the fan-in's first worker fetched (its copy), appended as it does; it then waits for ``gate`` (or for
    the cluster to stop it), then runs. The later workers run at once."""
    fetched: list[TaskSpec] = []

    def fan_in_worker(ctx: SimContext) -> int:
        fetched.append(load_task(ctx.read(ctx.env[TASK_FILE_ENV])))  # the copy its driver stored
        return held(gate, timeout=600)(ctx)  # then, once let go, the worker fetches it again and runs
    cluster.behaviour = lambda pod, container: (
        Script(func=fan_in_worker) if container["name"] == "worker" and not fetched
        else behave()(pod, container))
    return fetched


def fan_in_driver(cluster: Any, storage: S3Storage) -> tuple[Any, DriverSpec]:
    """The fan-in ``wide`` over 0 ... WIDTH-1, its root stored: (its root Future, the spec of a Kubernetes driver of
    it on the cluster model)."""
    root = wp.fan_in(wp.WIDTH)
    s = serialization.serialize(root)
    storage.put(artifact_key(s.id), s.payload)
    spec = DriverSpec(root={"id": s.id, "format": s.format}, storage_url=storage.url, image=IMAGE, build_hash="h" * 64,
                      executor="kubernetes",
                      executor_settings={"namespace": NS, "host": cluster.proxy(), "owner": False, "env": {},
                                         "creates_per_second": 0, "event_check": 0.2},
                      resolution=ResolutionSettings(root_id=root.id, max_parallelism=8))
    return root, spec


def test_the_task_copy_of_a_driver_killed_mid_resolution_is_kept_for_its_worker_and_deleted_at_the_end(
        cluster, storage, tmp_path):
    """A driver is killed (SIGKILL) while the worker of a fan-in too large for a Secret runs: the copy of its task the
    dead driver stored (its key known to that process alone) is left. The next driver takes the resolution over,
    re-attaches to the running Job, and leaves the copy be while that worker needs it (the worker fetches it again
    after the takeover); once the resolution resolved, no copy is left in the bucket. Was: the copy left for good."""
    gate = threading.Event()
    fetched = fan_in_held(cluster, gate)
    root, spec = fan_in_driver(cluster, storage)
    db = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    driver = driver_processes(spec, tmp_path, db)

    def said(name: str) -> str:
        return (tmp_path / f"{name}.log").read_text()

    first = driver("first")
    second = None
    try:
        wait_until(lambda: fetched or first.poll() is not None, 300, "the fan-in's worker fetching its task")
        assert first.poll() is None, said("first")
        [copy] = stored_tasks(storage, root.id)
        first.kill()  # SIGKILL: the driver pod dies
        first.wait(60)
        second = driver("second")  # the Job's next pod: it takes the resolution over
        wait_until(lambda: "re-attached to existing Job" in said("second") or second.poll() is not None, 300,
                   "the second driver re-attaching to the fan-in's Job")
        assert second.poll() is None, said("second")
        assert stored_tasks(storage, root.id) == [copy]  # its worker still runs: kept
        gate.set()  # the worker fetches its copy again (it is there), runs, and the resolution goes on to its end
        code = second.wait(300)
    finally:
        gate.set()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert code == 0, said("second")[-3000:]
    store = sql_store(db)
    assert store.get_resolution(root.id).state == "resolved"
    assert store.get_artifact(store.get_run(root.id).output_id).summary == sum(range(wp.WIDTH))
    assert len(fetched) == 1 and fetched[0].run_id in copy  # one worker, which read the first driver's copy
    assert stored_tasks(storage, root.id) == [], said("second")[-3000:]  # the dead driver's copy too


FAST = Backoff(base=0.01, cap=0.05, attempts=6)


def executor(api: client.ApiClient, storage: S3Storage) -> KubernetesExecutor:
    return KubernetesExecutor(storage, storage.url, IMAGE, namespace=NS, api_client=api, env={}, backoff=FAST,
                              owner=False, creates_per_second=0, event_check=0.2)


def fan_in_task(storage: S3Storage, root_id: str) -> Task:
    """A run of the fan-in ``wide`` over 0 ... WIDTH-1, each input the stored output of a run of its own."""
    stored = [serialization.serialize(i) for i in range(wp.WIDTH)]
    values = {}
    for i, s in enumerate(stored):
        put_artifact(storage, s)
        values[f"x{i}"] = v = serialization.Value(s.id, s.format, "", load=lambda _v, i=i: i)
        v.origin = new_id()
    return Task(new_id(), root_id, wp.wide, values, 1)


def test_storage_out_of_reach_as_runs_end_holds_no_launch_and_their_copies_go_once_it_is_back(
        cluster, api, storage, monkeypatch, caplog):
    """S3 out of reach (a proxy before it dropping every connection, for a retry window of ten minutes) as a fan-in is
    stopped: its copy's delete waits on the copies' thread, the loop goes on (a run submitted next gets its Job, S3
    still out of reach); once S3 is back, the copy is deleted. Was: the delete held the loop for the retry window."""
    from outages import DroppingProxy

    proxy = DroppingProxy(int(urlsplit(storage.endpoint_url).port or 80))
    through = S3Storage(storage.bucket, "runs", endpoint_url=proxy.url, region="us-east-1")
    gate = threading.Event()
    cluster.behaviour = behave({"worker": Script(func=held(gate, timeout=600))})
    ex = executor(api, through)
    root = new_id()
    task = fan_in_task(storage, root)
    ex.submit(task)
    [copy] = wait_until(lambda: not ex.wait(0.05) and stored_tasks(storage, root), 180, "the fan-in's copy stored")
    cluster.wait(lambda: [p for p in cluster.list("pods", NS) if p["status"].get("phase") == "Running"])
    monkeypatch.setenv("SEMATIC_K8S_RETRY_WINDOW", "600")
    proxy.drop()
    later = new_id()
    s = serialization.serialize(7)
    storage.put(artifact_key(s.id), s.payload)

    def loop() -> None:  # what the driver's loop does next: the fan-in ends (its copy read by no one), a run starts
        ex.cancel([task.run_id])
        ex.submit(Task(later, root, wp.one, {"x": serialization.Value(s.id, s.format, "", load=lambda _id: 7)}, 1))
    going = threading.Thread(target=loop, daemon=True)
    try:
        going.start()
        cluster.wait(lambda: cluster.get("jobs.batch", NS, worker_job_name(later, 1)), timeout=60,
                     message="the later run's Job made while S3 is out of reach")
        assert stored_tasks(storage, root) == [copy]  # not deleted yet: S3 is out of reach
    finally:
        proxy.drop(False)
    going.join(60)
    wait_until(lambda: not ex.wait(0.05) and not stored_tasks(storage, root), 120, "the copy deleted once S3 is back")
    gate.set()
    ex.close()
    proxy.close()
    assert ex.stats.tasks_deleted == ex.stats.tasks_stored == 1


def test_a_copy_stored_again_under_a_key_whose_delete_waits_or_is_under_way_is_kept(storage, monkeypatch):
    """The same task stored again under the same key (presigned within the same second: a relaunch) as the copies'
    thread deletes it: a delete still waiting is dropped, and one under way (S3 answering its DELETE 503 SlowDown,
    retried) is waited for before the copy is stored again. Both copies are there at the end, the other ones gone.
    Without that, the later put found the key there (a no-op) and the delete took it: the worker's fetch failed."""
    from outages import ThrottlingProxy
    from sematic_k8s.executors.kubernetes_attempts import KubeStats
    from sematic_k8s.executors.kubernetes_copies import TaskCopies

    proxy = ThrottlingProxy(int(urlsplit(storage.endpoint_url).port or 80), lambda head: head.startswith(b"DELETE "),
                            10_000, status=503, code="SlowDown")
    through = S3Storage(storage.bucket, "runs", endpoint_url=proxy.url, region="us-east-1")
    monkeypatch.setenv("SEMATIC_K8S_RETRY_WINDOW", "600")
    root = new_id()
    under_way, waiting, other = (f"tasks/{root}/{new_id()}/1/{c * 64}.json" for c in "abc")
    for key in (under_way, waiting, other):
        storage.put(key, b"{}")
    copies = TaskCopies(through, KubeStats(), root)
    copies.drop([under_way, waiting, other])
    wait_until(lambda: proxy.throttled, 60, "the first delete under way (its DELETE answered 503, retried)")
    copies.claim(waiting)  # its delete waits behind: dropped, at once
    storage.put(waiting, b"{}")
    again = threading.Thread(target=lambda: (copies.claim(under_way), through.put(under_way, b"{}")), daemon=True)
    again.start()  # waits for the delete under way, then stores it again
    proxy.passing()
    again.join(120)
    wait_until(lambda: not storage.exists(other), 120, "the other copy deleted")
    copies.stop()
    assert not again.is_alive() and storage.exists(under_way) and storage.exists(waiting)
    assert copies.stats.tasks_deleted == 2  # the one under way, then stored again; the other one
    proxy.close()


def test_a_delete_retried_against_storage_out_of_reach_ends_with_its_owner_and_its_copy_is_left_for_the_end(
        storage, monkeypatch, caplog):
    """S3 out of reach (a proxy before it dropping every connection, for a retry window of ten minutes) as the copies'
    thread deletes a copy, retrying: the executor's detach (:meth:`TaskCopies.stop`) ends the thread then, nothing
    said past it; the copy stays in storage, and the resolution's end (a next driver's :meth:`TaskCopies.finish`, S3
    back) deletes it. Was: the thread retried on for the retry window after its owner was gone, logging (a daemon
    thread writing to stderr at interpreter shutdown aborts the process)."""
    from outages import DroppingProxy
    from sematic_k8s.executors.kubernetes_attempts import KubeStats
    from sematic_k8s.executors.kubernetes_copies import TaskCopies

    proxy = DroppingProxy(int(urlsplit(storage.endpoint_url).port or 80))
    through = S3Storage(storage.bucket, "runs", endpoint_url=proxy.url, region="us-east-1")
    monkeypatch.setenv("SEMATIC_K8S_RETRY_WINDOW", "600")
    caplog.set_level(logging.DEBUG, logger="sematic_k8s")
    root = new_id()
    copy, after = (f"tasks/{root}/{new_id()}/1/{c * 64}.json" for c in "ab")
    for key in (copy, after):
        storage.put(key, b"{}")
    copies = TaskCopies(through, KubeStats(), root)
    proxy.drop()
    try:
        copies.drop([copy, after])
        wait_until(lambda: any("retrying" in r.getMessage() for r in caplog.records), 120, "the delete retried")
        copies.stop()
        thread = copies._thread
        assert thread is not None and not thread.is_alive()
    finally:
        proxy.drop(False)
        proxy.close()
    assert stored_tasks(storage, root) == [f"runs/{k}" for k in sorted((copy, after))]  # left, not lost
    assert copies.failed == 1 and copies.stats.tasks_deleted == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "could not delete" in r.getMessage()]
    nxt = TaskCopies(storage, KubeStats(), root)
    nxt.finish()  # the resolution's end, by the next driver: its folder listed, every copy deleted
    assert stored_tasks(storage, root) == [] and nxt.stats.tasks_deleted == 2


DEAD_AFTER = "10"  # seconds of silence after which the killed driver's resolution is dead (its beats: every 0.5 s)


def test_the_copies_of_a_driver_killed_for_good_are_deleted_by_the_servers_sweep(cluster, storage, tmp_path,
                                                                                 monkeypatch):
    """A driver recording through the server is killed (SIGKILL) while the worker of a fan-in too large for a Secret
    runs, and no driver comes after it: the server's sweeper marks the resolution failed (its beats stopped) and
    deletes the copy the dead driver stored under tasks/<resolution>/ in the server's own storage. Was: the copy
    left for good (no driver recorded the end, which deletes it)."""
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", DEAD_AFTER)  # the server's, in this process
    fetched = fan_in_held(cluster, threading.Event())  # its worker runs on until the cluster stops it
    root, spec = fan_in_driver(cluster, storage)
    with serve(tmp_path, storage=storage) as served:
        env = {**os.environ, DRIVER_ENV: spec.to_json(), "SEMATIC_K8S_SERVER": served.url,
               "SEMATIC_K8S_API_KEY": str(served.key), "SEMATIC_K8S_HOME": str(tmp_path / "driver"),
               "SEMATIC_K8S_HEARTBEAT_INTERVAL": "0.5", "SEMATIC_K8S_HEARTBEAT_TIMEOUT": DEAD_AFTER,
               "PYTHONPATH": DRIVER_PYTHONPATH}
        env.pop("SEMATIC_K8S_DB_URL", None)
        with open(tmp_path / "driver.log", "w") as out:
            driver = subprocess.Popen([sys.executable, "-m", "sematic_k8s.driver"], env=env, stdout=out,
                                      stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            wait_until(lambda: fetched or driver.poll() is not None, 300, "the fan-in's worker fetching its task")
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            [copy] = stored_tasks(storage, root.id)
            assert served.store.get_resolution(root.id).state == "running"  # its driver alive until now
            driver.kill()  # SIGKILL: the driver pod dies, and its Job gives up
            driver.wait(60)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        wait_until(lambda: not stored_tasks(storage, root.id), 120, "the dead driver's copy deleted by the sweep")
        res = served.store.get_resolution(root.id)
        assert res.state == "failed" and res.error.startswith("the resolver stopped responding at "), res
        assert served.store.tasks_left() == []
    assert len(fetched) == 1 and fetched[0].run_id in copy


def test_copies_left_on_a_storage_out_of_reach_or_not_the_servers_are_logged_then_deleted_once_it_is_back(
        storage, tmp_path, monkeypatch, caplog):
    """Three cloud resolutions on the Kubernetes executor, each with a copy stored under its folder: one whose beats
    stop, on the server's storage, out of reach (a proxy before S3 dropping every connection); one whose beats stop,
    on a bucket the server may not write (neither its own nor on its allow-list); one still beating. The sweeper marks
    the two silent ones failed: the first one's copy is left while S3 is out of reach, said once, and deleted once it
    is back (its mark kept meanwhile, not lost); the second one's is never touched, said once; the live one's is kept.
    Was: every copy left for good, without a word."""
    from outages import DroppingProxy

    caplog.set_level(logging.INFO, logger="sematic_k8s_server")
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", "2")
    proxy = DroppingProxy(int(urlsplit(storage.endpoint_url).port or 80))
    through = S3Storage(storage.bucket, "runs", endpoint_url=proxy.url, region="us-east-1", retry_window=1)
    other_endpoint, other_bucket = fresh_bucket(monkeypatch, "sk-not-the-servers")
    elsewhere = S3Storage(other_bucket, "runs", endpoint_url=other_endpoint, region="us-east-1")
    out_of_reach, not_ours, live = new_id(), new_id(), new_id()
    on = {out_of_reach: through, not_ours: elsewhere, live: through}
    copies = {res_id: f"tasks/{res_id}/{new_id()}/1/{'a' * 64}.json" for res_id in on}
    for res_id, key in copies.items():
        (elsewhere if res_id == not_ours else storage).put(key, b"{}")

    def left(res_id: str) -> list[str]:
        where = elsewhere if res_id == not_ours else storage
        listed = where.client.list_objects_v2(Bucket=where.bucket, Prefix=f"runs/tasks/{res_id}/")
        return [o["Key"] for o in listed.get("Contents", [])]

    def said(res_id: str, words: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if res_id in r.getMessage() and words in r.getMessage()]

    proxy.drop()
    with serve(tmp_path, storage=through) as served:
        http = HttpStore(served.url, served.key)
        batch = Batch()
        for res_id, where in on.items():
            batch.add_resolution(ResolutionRecord(
                id=res_id, root_func_path="pipes:pipeline", state="running", created_at=utcnow(),
                heartbeat_at=utcnow(), settings={"kind": "cloud", "executor": "kubernetes", "storage_url": where.url}))
        http.write(batch)
        beating = threading.Event()

        def beat() -> None:  # the live resolution's driver
            while not beating.wait(0.3):
                b = Batch()
                b.resolution_updates[live] = {"heartbeat_at": utcnow()}
                http.write(b)
        beats = threading.Thread(target=beat, daemon=True)
        beats.start()
        try:
            wait_until(lambda: said(out_of_reach, "could not delete") and said(not_ours, "may not write"), 120,
                       "the sweeper failing to reach the storage of one, and refusing the other's")
            assert served.store.get_resolution(out_of_reach).state == "failed"
            assert served.store.get_resolution(not_ours).state == "failed"
            assert left(out_of_reach) and left(not_ours) and left(live)
            assert served.store.tasks_left() == [out_of_reach]  # kept, for a later sweep
            proxy.drop(False)
            wait_until(lambda: not left(out_of_reach), 120, "the copy deleted once S3 is back")
            wait_until(lambda: said(out_of_reach, "deleted 1 stored task"), 30, "the delete said")
            assert served.store.tasks_left() == []
            assert left(not_ours) and left(live)  # never touched: not the server's; still running
            assert served.store.get_resolution(live).state == "running"
        finally:
            beating.set()
            beats.join(30)
            http.close()
    assert len(said(out_of_reach, "could not delete")) == 1 and len(said(not_ours, "may not write")) == 1
    proxy.close()
