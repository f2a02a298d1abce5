"""A Kubernetes API that never answers (a partition, a load balancer that stopped forwarding: a connection cut without
a reset), caused for real: the cluster model behind ``ThrottlingProxy`` holding the calls it picks silent, never passed
on (``status=0``), over real HTTP, with a short deadline ($SEMATIC_K8S_KUBE_TIMEOUT). Every call the product makes
has a deadline (``k8s.client.make_api_client``), and one that times out is retried as a cut connection is, then fails
in plain words. Was: no deadline, the call waiting for TCP keepalive (hours). A driver process (``python -m
sematic_k8s.driver``) whose loop meets such a call it cannot go without exits 75, its resolution left running for the
driver its Job starts next."""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import wide_pipeline as wp
from kubernetes import client

import sematic_k8s as sk
from kube_model import Cluster, NodeSpec, Script
from model_workers import behave, driver_job_of, driver_processes, ended, held
from outages import HoldingProxy, ThrottlingProxy
from racing import on_a_thread
from sematic_k8s import serialization
from sematic_k8s.executors.base import Task
from sematic_k8s.executors.kubernetes import KubernetesExecutor
from sematic_k8s.future import new_id
from sematic_k8s.k8s.client import Backoff, make_api_client
from sematic_k8s.k8s.manifests import driver_job_name, token_secret_name
from sematic_k8s.settings import KUBE_TIMEOUT_ENV
from sematic_k8s.specs import DriverSpec, ResolutionSettings
from sematic_k8s.storage.base import artifact_key, put_artifact
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_url
from sematic_k8s.store import sql_store
from sematic_k8s_server.config import RerunConfig, ServerConfig
from serving import Served, claim_of, record_resolution, serve, wait_for

NS = "sk-runs"
IMAGE = "127.0.0.1:5000/pipelines/team@sha256:" + "cd" * 32
STORAGE = "s3://sk-unanswered/artifacts"
JOB_CREATE = f"POST /apis/batch/v1/namespaces/{NS}/jobs".encode()
POD_LIST = f"GET /api/v1/namespaces/{NS}/pods?".encode()


@sk.func(inline=False, cpu="100m", memory="64Mi")
def square(x: int) -> int:
    return x * x


@contextmanager
def silent_creates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deadline: str,
                   queue: int) -> Iterator[tuple[Cluster, ThrottlingProxy, Served, httpx.Client, str]]:
    """A server re-running on the cluster model (one launch at a time, ``queue`` more waiting) through a proxy silent
    on the driver Job's create (until it passes), each call's deadline ``deadline`` s, and a cloud resolution recorded
    to re-run: (the cluster, the proxy, the server, a client of it, the resolution's id)."""
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=lambda pod, c: Script(forever=True),
                 namespaces=[NS]) as cluster:
        proxy = ThrottlingProxy(int(cluster.proxy().rpartition(":")[2]), lambda head: head.startswith(JOB_CREATE),
                                1000, status=0)
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", proxy.url)
        monkeypatch.setenv(KUBE_TIMEOUT_ENV, deadline)
        config = RerunConfig(launcher="kubernetes", image_repositories=("127.0.0.1:5000/pipelines",),
                             storage_url=STORAGE, executor_settings={"namespace": NS}, concurrency=1, queue=queue)
        with let_go(proxy), serve(tmp_path, config=ServerConfig(reruns=config)) as s, s.client() as c:
            yield cluster, proxy, s, c, record_resolution(s.url, s.key, kind="cloud", image=IMAGE, storage_url=STORAGE)


def test_a_rerun_whose_kubernetes_api_never_answers_fails_in_plain_words_and_frees_its_queue_slot(tmp_path,
                                                                                                   monkeypatch):
    """The driver Job's create is never answered: tried 3 times for the deadline (2 s) each, then the claim is
    recorded failed in plain words and the launch's queue slot (the only one) freed: a second rerun, once the API
    answers again, starts its driver. Was: the launch waited for ever, its slot held (the second rerun a 429)."""
    with silent_creates(tmp_path, monkeypatch, "2", queue=0) as (cluster, proxy, s, c, root):
        r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
        assert r.status_code == 202, r.text  # answered within ANSWER_WINDOW, the create still unanswered
        first = r.json()["resolution_id"]
        res = wait_for(lambda: (got := claim_of(c, first))["state"] != "created" and got, 60,
                       what="the claim of the rerun whose API never answered recorded failed")
        assert res["state"] == "failed", res
        assert res["error"].startswith(
            "could not start the rerun's driver with the kubernetes launcher: KubernetesUnanswered: the "
            f"Kubernetes API at {proxy.url} did not answer within 2 s (3 tries): create_namespaced_job "
            "(ReadTimeoutError); a network partition, or a load balancer or proxy that stopped forwarding"), res
        assert proxy.held == 3, proxy.held  # the create tried 3 times, each unanswered
        assert driver_job_of(cluster, NS, first) is None
        proxy.passing()
        r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
        assert r.status_code == 202, r.text  # the slot was freed (was: 429, busy)
        second = r.json()["resolution_id"]
        wait_for(lambda: driver_job_of(cluster, NS, second) is not None, 60,
                 what="the second rerun's driver Job")


def test_a_rerun_whose_launch_does_not_begin_within_its_bound_fails_in_plain_words_and_frees_its_queue_slot(
        tmp_path, monkeypatch):
    """One launch slot, one queued: the first rerun's launch holds the slot (its Job's create never answered, 3 tries
    of 6 s); a second rerun waits in the queue past ``LAUNCH_BOUND`` (3 s here): its request is a 502 in plain words,
    its claim recorded failed in them, and its queued launch dropped, its slot freed: a third rerun is queued (a 502
    past the bound again, not a 429), and neither ever launches (only the first's creates reach the API). Was: the
    queued request had no bound of its own, held until the first launch ended (18 s here; some 15 min at the
    default deadline), then launched."""
    from sematic_k8s_server import reruns

    monkeypatch.setattr(reruns, "LAUNCH_BOUND", 3.0)
    words = ("could not start the rerun's driver with the kubernetes launcher: TimeoutError: the launch did not "
             "begin within 3 s (it waited for a launch slot behind other reruns, or its launcher hung): try again "
             "later")
    with silent_creates(tmp_path, monkeypatch, "6", queue=1) as (cluster, proxy, s, c, root):
        r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
        assert r.status_code == 202, r.text  # answered within ANSWER_WINDOW, its create held
        first = r.json()["resolution_id"]
        for _ in range(2):  # the second, then the third in the slot the second's dropped launch freed
            r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
            assert r.status_code == 502 and r.json()["detail"] == words, r.text
        dropped = [(r.state, r.error) for r in s.store.list_resolutions() if r.id not in (root, first)]
        assert dropped == [("failed", words)] * 2, dropped
        res = wait_for(lambda: (got := claim_of(c, first))["state"] != "created" and got, 60,
                       what="the first rerun's claim recorded failed (its create unanswered)")
        assert "KubernetesUnanswered" in res["error"], res
        assert proxy.held == 3, proxy.held  # the first launch's creates alone: the queued ones never ran


def test_a_rerun_whose_driver_job_create_lands_but_its_answer_is_lost_goes_on_with_that_job(tmp_path, monkeypatch):
    """The driver Job's create reaches the API server late, its answer lost (``HoldingProxy``: the request held, then
    sent on its own connection), the launch's call unanswered: tried again, it is the API server's 409. The Job there
    is taken as the one made now: one Job, owning the rerun's token Secret (its TTL deletes both), the claim's note
    cleared. Was: "already exists: not launched again", the token Secret owned by nothing (left for good)."""
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=lambda pod, c: Script(forever=True),
                 namespaces=[NS]) as cluster:
        proxy = HoldingProxy(int(cluster.proxy().rpartition(":")[2]), lambda req: req.startswith(JOB_CREATE),
                             until_release=True)
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", proxy.url)
        monkeypatch.setenv(KUBE_TIMEOUT_ENV, "3")
        released: list[int] = []

        def release() -> None:  # the held create lands while the launch still waits for its answer
            wait_for(lambda: proxy.held is not None, 60, what="the driver Job's create held")
            released.append(proxy.release()[0])
        releasing = threading.Thread(target=release, daemon=True)
        releasing.start()
        config = RerunConfig(launcher="kubernetes", image_repositories=("127.0.0.1:5000/pipelines",),
                             storage_url=STORAGE, executor_settings={"namespace": NS})
        try:
            with serve(tmp_path, config=ServerConfig(reruns=config)) as s, s.client() as c:
                root = record_resolution(s.url, s.key, kind="cloud", image=IMAGE, storage_url=STORAGE)
                r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
                assert r.status_code == 202, r.text
                new_id = r.json()["resolution_id"]
                releasing.join(60)
                assert released == [201], released
                wait_for(lambda: "waiting" not in claim_of(c, new_id)["settings"], 60, what="the claim's note cleared")
                res = claim_of(c, new_id)
                assert res["state"] == "created" and not res.get("error"), res
                job = driver_job_of(cluster, NS, new_id)
                assert job is not None and [(r.verb, r.status) for r in cluster.calls(verb="create", resource="jobs")
                                            ] == [("create", 201), ("create", 409)]
                api = cluster.client()
                try:
                    secret = client.CoreV1Api(api).read_namespaced_secret(token_secret_name(new_id), NS)
                finally:
                    api.close()
                owners = [(o.kind, o.name, o.uid) for o in secret.metadata.owner_references or []]
                assert owners == [("Job", driver_job_name(new_id), job.metadata.uid)], owners
        finally:
            proxy.close()


# -- a driver's executor ---------------------------------------------------------------------------------------------


@pytest.fixture
def slow_api(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A proxy before the cluster model (``ThrottlingProxy(..., picks, times, status=...)`` made by the test), and the
    deadline of each call 1 s."""
    monkeypatch.setenv(KUBE_TIMEOUT_ENV, "1")
    made: list[ThrottlingProxy] = []

    def proxy(picks: bytes, times: int, status: int) -> ThrottlingProxy:
        made.append(ThrottlingProxy(int(cluster.proxy().rpartition(":")[2]), lambda head: head.startswith(picks),
                                    times, status=status))
        return made[-1]
    yield proxy
    for p in made:
        p.passing()
        p.close()


def executor(api: client.ApiClient, storage: LocalStorage, owner: Any = False, **owned: Any) -> KubernetesExecutor:
    """The driver's executor on ``api`` (made by ``make_api_client``, as a driver's is); ``owner`` (a driver Job's
    name and uid) and ``owned`` (``owner_check``): the driver Job it reads as its own, none by default."""
    return KubernetesExecutor(storage, storage_url(storage), IMAGE, namespace=NS, api_client=api, env={}, owner=owner,
                              creates_per_second=0, event_check=0.2, backoff=Backoff(base=0.01, cap=0.05, attempts=6),
                              **owned)


def submit(ex: KubernetesExecutor, root_id: str, x: int) -> str:
    """``square(x)`` submitted to ``ex`` on a thread of its own (joined for 60 s: a call that waits for ever fails
    the test); its run id."""
    run_id = new_id()
    s = serialization.serialize(x)
    put_artifact(ex.storage, s)
    task = Task(run_id, root_id, square, {"x": serialization.Value(s.id, s.format, "", load=lambda _id: x)}, 1)
    thread, raised = on_a_thread(lambda: ex.submit(task))
    thread.join(60)
    assert not thread.is_alive(), "the submit waited for an answer that never comes"
    if raised:
        raise raised[0]
    return run_id


def test_a_worker_jobs_create_never_answered_is_tried_again_later_and_its_late_landing_makes_no_second_job(
        cluster, tmp_path, slow_api):
    """The worker Job's create unanswered 3 times (held, passed on only later): the attempt waits to create its Job
    (the executor's queue, as for a cut connection) and the next try makes it; the run resolves. The 3 held creates,
    landing late, are the API server's 409: one Job. Was: the submit waited for ever for the first create."""
    proxy = slow_api(JOB_CREATE, 3, -2)
    api = make_api_client(proxy.url)
    ex = executor(api, LocalStorage(tmp_path / "storage"))
    try:
        run_id = submit(ex, new_id(), 7)
        assert proxy.held == 3
        got = ended(ex, 1)
        assert got[run_id].error_info is None, got[run_id].error_info
        assert ex.stats.requeued >= 1
        proxy.passing()  # the held creates land now, their answers lost
        cluster.wait(lambda: len(cluster.calls(verb="create", resource="jobs")) == 4)
        assert len(cluster.list("jobs.batch", NS)) == 1
    finally:
        ex.close()
        api.close()


def test_a_pod_list_never_answered_is_said_in_plain_words_and_the_run_resolves_once_the_api_answers(
        cluster, tmp_path, slow_api, caplog):
    """The executor's first read of the resolution's pods (a restarted driver's look for pods left) unanswered 3 times
    (silent, never passed on): said once in plain words, and the executor goes on as when that read fails otherwise
    (its watches list the pods once the API answers); the run resolves. Was: the submit waited for ever."""
    caplog.set_level(logging.WARNING, logger="sematic_k8s.k8s")
    proxy = slow_api(POD_LIST, 3, 0)
    api = make_api_client(proxy.url)
    ex = executor(api, LocalStorage(tmp_path / "storage"))
    try:
        run_id = submit(ex, new_id(), 3)
        assert proxy.held == 3
        said = [m for m in caplog.messages if "did not answer" in m]
        assert said == [f"could not list the resolution's worker pods: the Kubernetes API at {proxy.url} did not "
                        "answer within 1 s (3 tries): list_namespaced_pod (ReadTimeoutError); a network partition, or "
                        "a load balancer or proxy that stopped forwarding: check the way from here to it "
                        "($SEMATIC_K8S_KUBE_TIMEOUT sets the deadline)"], said
        assert ended(ex, 1)[run_id].error_info is None
    finally:
        ex.close()
        api.close()


@pytest.mark.parametrize("bad", ["soon", "0", "-1", "inf", "nan"])
def test_a_deadline_that_is_not_a_number_of_seconds_is_refused_in_one_line_naming_it_when_the_client_is_made(
        monkeypatch, bad):
    """Refused by make_api_client, before any call. Was: read at each call, a bad value refused by the first one."""
    monkeypatch.setenv(KUBE_TIMEOUT_ENV, bad)
    with pytest.raises(ValueError) as refused:
        make_api_client("http://127.0.0.1:9")
    assert str(refused.value).startswith(f"${KUBE_TIMEOUT_ENV}={bad!r} ") and "e.g. 60" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_deadline_is_the_api_servers_own_by_default_and_connecting_takes_10_s_at_most(monkeypatch):
    monkeypatch.delenv(KUBE_TIMEOUT_ENV, raising=False)
    with make_api_client("http://127.0.0.1:9") as api:
        assert api.deadline == (10.0, 60.0)
    monkeypatch.setenv(KUBE_TIMEOUT_ENV, "2.5")
    with make_api_client("http://127.0.0.1:9") as api:
        assert api.deadline == (2.5, 2.5)


# -- a driver process ------------------------------------------------------------------------------------------------


def driver_of(cluster: Cluster, proxy: ThrottlingProxy, tmp_path: Path, deadline: str = "1",
              **settings: Any) -> tuple[Any, LocalStorage, str, Any]:
    """``twice(7)`` stored, and a way to run a Kubernetes driver of it (``python -m sematic_k8s.driver``, recording
    to SQLite, its API calls through ``proxy`` with a ``deadline`` of 1 s, its executor's ``settings`` added): (its
    root, storage, database URL, ``run(name)``: a driver process started, as a Popen, its output in
    ``<name>.log``)."""
    storage = LocalStorage(tmp_path / "storage")
    root = wp.twice(7)
    s = serialization.serialize(root)
    storage.put(artifact_key(s.id), s.payload)
    spec = DriverSpec(root={"id": s.id, "format": s.format}, storage_url=storage.url, image=IMAGE,
                      executor="kubernetes",
                      executor_settings={"namespace": NS, "host": proxy.url, "owner": False, "env": {},
                                         "creates_per_second": 0, "event_check": 0.2, **settings},
                      resolution=ResolutionSettings(root_id=root.id, max_parallelism=8))
    db = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    return root, storage, db, driver_processes(spec, tmp_path, db, {KUBE_TIMEOUT_ENV: deadline})


def unanswered_words(proxy: ThrottlingProxy, call: str) -> str:
    return (f"KubernetesUnanswered: the Kubernetes API at {proxy.url} did not answer within 1 s (3 tries): {call} "
            "(ReadTimeoutError); a network partition, or a load balancer or proxy that stopped forwarding: check the "
            "way from here to it ($SEMATIC_K8S_KUBE_TIMEOUT sets the deadline)")


def exited(p: subprocess.Popen, log: Path) -> tuple[int, str]:
    """``p``'s exit status (waited for 300 s at most) and what it said."""
    try:
        code = p.wait(300)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return code, log.read_text()


@contextmanager
def let_go(proxy: ThrottlingProxy, gate: threading.Event | None = None,
           first: subprocess.Popen | None = None) -> Iterator[None]:
    """A driver test's body, and whatever became of it: its held worker let go (``gate``), ``proxy`` passing calls on
    then closed, and its ``first`` driver killed if it still runs."""
    try:
        yield
    finally:
        if gate is not None:
            gate.set()
        proxy.passing()
        proxy.close()
        if first is not None and first.poll() is None:
            first.kill()
            first.wait()


def worker_running(cluster: Cluster, what: str = "the first step's worker") -> None:
    """Wait until a worker's pod runs (120 s at most)."""
    cluster.wait(lambda: [p for p in cluster.list("pods", NS) if p["status"].get("phase") == "Running"],
                 timeout=120, message=f"{what} running")


def test_a_driver_whose_kubernetes_api_never_answers_exits_75_leaving_its_resolution_to_the_next_driver(
        cluster, tmp_path):
    """A driver process (``python -m sematic_k8s.driver``, the Kubernetes executor) whose Kubernetes API is silent,
    every call held unanswered (a partition), with a 1 s deadline: the start-up list of the resolution's Jobs, which
    it cannot launch without (a restarted driver re-attaches to the Jobs it lists), is tried 3 times, then the driver
    leaves the resolution ``running``, its runs as recorded, says why in KubernetesUnanswered's words and exits 75
    (its Job starts it again). Started again once the API answers, the driver resolves it: each run recorded once, on
    its first attempt, one Job each."""
    proxy = ThrottlingProxy(int(cluster.proxy().rpartition(":")[2]), lambda head: True, 10**6, status=0)
    root, storage, db, driver = driver_of(cluster, proxy, tmp_path)
    with let_go(proxy):
        code, said = exited(driver("first"), tmp_path / "first.log")
        assert code == 75, said[-3000:]
        assert proxy.held == 6, proxy.held  # the pod list (logged, gone on without), then the Job list: 3 tries each
        words = unanswered_words(proxy, "list_namespaced_job")
        assert f"driver: an infrastructure failure ({words}); exiting 75 to be started again" in said, said[-3000:]
        assert f"resolution {root.id}: {words}; leaving it to a restarted driver" in said, said[-3000:]
        store = sql_store(db)
        res = store.get_resolution(root.id)
        assert res.state == "running" and not res.error, res  # the cluster, not the pipeline, is at fault
        assert sorted((r.func_name, r.state, r.attempts) for r in store.runs_of_root(root.id)) == [
            ("one", "created", 0), ("one", "running", 1), ("twice", "running", 1)]  # the next driver resumes the first
        assert not cluster.list("jobs.batch", NS)
        proxy.passing()
        code, said = exited(driver("second"), tmp_path / "second.log")
        assert code == 0, said[-3000:]
    assert store.get_resolution(root.id).state == "resolved"
    runs = store.runs_of_root(root.id)
    assert sorted((r.func_name, r.state, r.attempts) for r in runs) == [("one", "resolved", 1)] * 2 + [
        ("twice", "resolved", 1)], runs
    assert store.get_artifact(store.get_run(root.id).output_id).summary == 7
    assert len(cluster.list("jobs.batch", NS)) == 2  # one Job a run: the first driver made none


def test_a_restarted_driver_cut_off_from_the_kubernetes_api_exits_75_and_the_next_one_re_attaches_to_the_worker(
        cluster, tmp_path):
    """A driver is killed (SIGKILL) while its first step's worker runs; the Kubernetes API then goes silent (every
    call held unanswered). The restarted driver, resuming the running step, cannot list the resolution's Jobs (3
    tries of 1 s): it exits 75, the resolution still ``running``, the step as recorded, its worker's Job left alone.
    The next driver, the API answering again, re-attaches to that Job (never made again) and resolves the resolution,
    each run recorded once, on its first attempt."""
    gate = threading.Event()
    cluster.behaviour = behave({"worker": Script(func=held(gate, timeout=300))})
    silent = threading.Event()
    proxy = ThrottlingProxy(int(cluster.proxy().rpartition(":")[2]), lambda head: silent.is_set(), 10**6, status=0)
    root, storage, db, driver = driver_of(cluster, proxy, tmp_path)
    store = sql_store(db)
    first = driver("first")
    with let_go(proxy, gate, first):
        worker_running(cluster)
        first.kill()  # SIGKILL: the driver pod dies
        first.wait(60)
        silent.set()  # from now on, every call to the API is held, unanswered
        code, said = exited(driver("second"), tmp_path / "second.log")
        assert code == 75, said[-3000:]
        assert proxy.held == 6, proxy.held
        words = unanswered_words(proxy, "list_namespaced_job")
        assert f"driver: an infrastructure failure ({words}); exiting 75 to be started again" in said, said[-3000:]
        assert store.get_resolution(root.id).state == "running"
        assert sorted((r.func_name, r.state, r.attempts) for r in store.runs_of_root(root.id)) == [
            ("one", "created", 0), ("one", "running", 1), ("twice", "running", 1)]
        assert len(cluster.list("jobs.batch", NS)) == 1 and not cluster.calls(verb="delete", resource="jobs")
        proxy.passing()
        third = driver("third")
        cluster.wait(lambda: "re-attached to existing Job" in (tmp_path / "third.log").read_text() or
                     third.poll() is not None, timeout=120, message="the third driver re-attaching to the worker's Job")
        gate.set()
        code, said = exited(third, tmp_path / "third.log")
        assert code == 0, said[-3000:]
    assert store.get_resolution(root.id).state == "resolved"
    assert sorted((r.func_name, r.state, r.attempts) for r in store.runs_of_root(root.id)) == [
        ("one", "resolved", 1)] * 2 + [("twice", "resolved", 1)]
    assert store.get_artifact(store.get_run(root.id).output_id).summary == 7
    assert len(cluster.calls(verb="create", resource="jobs")) == 2  # the first step's Job made once, re-attached to


def test_a_cancel_whose_job_deletes_the_kubernetes_api_never_answers_ends_as_a_cancel(cluster, tmp_path):
    """A driver process cancels its resolution (requested in its database) while its first step's worker runs, and the
    Kubernetes API never answers a Job's delete (held, 3 tries of 1 s): the delete is logged, the Job left for its TTL
    or the driver Job's deletion, and the cancel ends as a cancel: the resolution ``canceled``, exit 1 (the
    podFailurePolicy fails the driver's Job). Was: KubernetesUnanswered escaped the delete, after the cancel was
    recorded: exit 75, a driver started again for nothing."""
    gate = threading.Event()
    cluster.behaviour = behave({"worker": Script(func=held(gate, timeout=300))})
    proxy = ThrottlingProxy(int(cluster.proxy().rpartition(":")[2]),
                            lambda head: head.startswith(f"DELETE /apis/batch/v1/namespaces/{NS}/jobs/".encode()),
                            10**6, status=0)
    root, storage, db, driver = driver_of(cluster, proxy, tmp_path)
    store = sql_store(db)
    first = driver("first")
    with let_go(proxy, gate, first):
        worker_running(cluster)
        store.request_cancel(root.id)
        code, said = exited(first, tmp_path / "first.log")
        assert code == 1, said[-3000:]
        assert proxy.held >= 3, proxy.held
        assert "could not delete Job" in said and "KubernetesUnanswered" in said, said[-3000:]
        assert "exiting 75" not in said, said[-3000:]
    assert store.get_resolution(root.id).state == "canceled"


def own_job_held(cluster: Cluster, name: str, silent: threading.Event) -> ThrottlingProxy:
    """A proxy before the cluster model holding every read of driver Job ``name`` unanswered while ``silent`` is set
    (the caller makes it pass and closes it)."""
    read = f"GET /apis/batch/v1/namespaces/{NS}/jobs/{name} ".encode()
    return ThrottlingProxy(int(cluster.proxy().rpartition(":")[2]),
                           lambda head: silent.is_set() and head.startswith(read), 10**6, status=0)


def driver_job(api: client.ApiClient, name: str) -> Any:
    """A driver Job ``name`` made on ``api`` (its pod the model's to run): what a driver reads as its own."""
    return client.BatchV1Api(api).create_namespaced_job(NS, {"metadata": {"name": name}, "spec": {
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "driver", "image": IMAGE}]}}}})


def owned_executor(cluster: Cluster, tmp_path: Path, name: str,
                   silent: threading.Event) -> tuple[ThrottlingProxy, client.ApiClient, KubernetesExecutor]:
    """An executor owned by driver Job ``name`` (made for it), reading it every 0.1 s, its API calls through
    :func:`own_job_held`'s proxy: the proxy, the API client (the caller closes both) and the executor."""
    proxy = own_job_held(cluster, name, silent)
    api = make_api_client(proxy.url)
    job = driver_job(api, name)
    return proxy, api, executor(api, LocalStorage(tmp_path / "storage"), (job.metadata.name, job.metadata.uid),
                                owner_check=0.1)


def test_a_driver_cut_off_from_its_own_job_says_so_once_when_it_lasts_and_once_when_it_is_read_again(
        cluster, tmp_path, monkeypatch, caplog):
    """The read of the driver's own Job (``owner_check``) never answered (every read held, 3 tries of 1 s) past
    OWNER_UNREAD: one warning line naming the Job, however many reads fail, and the driver goes on (its worker's run
    resolves); one line when it is read again. Was: each failed read at debug level only, nothing said."""
    from sematic_k8s.executors import kubernetes_owner

    monkeypatch.setenv(KUBE_TIMEOUT_ENV, "1")
    monkeypatch.setattr(kubernetes_owner, "OWNER_UNREAD", 0.5)
    caplog.set_level(logging.WARNING, logger="sematic_k8s.k8s")
    gate, silent = threading.Event(), threading.Event()
    cluster.behaviour = behave({"worker": Script(func=held(gate, timeout=300))})
    proxy, api, ex = owned_executor(cluster, tmp_path, "sk-driver-z", silent)

    def said(words: str) -> list[str]:
        return [m for m in caplog.messages if words in m]
    with let_go(proxy, gate):
        try:
            run_id = submit(ex, new_id(), 5)
            worker_running(cluster, "the worker")
            silent.set()
            cluster.wait(lambda: ex.wait(0.05) or (proxy.held >= 6 and said("could not be read")), timeout=120,
                         message="two reads of the driver's Job unanswered, said")
            silent.clear()
            cluster.wait(lambda: ex.wait(0.05) or said("is read again"), timeout=120, message="its Job read again")
            gate.set()
            assert ended(ex, 1)[run_id].error_info is None
        finally:
            ex.close()
            api.close()
    [unread] = said("could not be read")
    assert unread.startswith("the driver's Job sk-driver-z could not be read for ") and "KubernetesUnanswered" in unread
    assert len(said("is read again")) == 1


def workers_running(cluster: Cluster) -> list[str]:
    """The names of the worker pods running (a driver Job's own pod aside)."""
    return [p["metadata"]["name"] for p in cluster.list("pods", NS) if p["status"].get("phase") == "Running"
            and p["metadata"].get("labels", {}).get("sematic-k8s/role") == "worker"]


def test_a_driver_whose_own_job_reads_are_never_answered_still_records_its_workers_ends_and_resolves(cluster,
                                                                                                      tmp_path):
    """A driver process reading its own Job every 0.1 s (``owner_check``), each read held unanswered from the moment
    its first step's worker runs, with a deadline ($SEMATIC_K8S_KUBE_TIMEOUT, 600 s) far past the test's waits: the
    read holds a thread of its own, not the driver's loop, which records the worker's end, launches the next step and
    resolves the resolution; the driver exits 0 without waiting for the read. Was: the loop held by the read for its
    3 tries (30 minutes here), recording nothing meanwhile."""
    gate, silent = threading.Event(), threading.Event()
    cluster.behaviour = behave({"worker": Script(func=held(gate, timeout=300))})
    proxy = own_job_held(cluster, "sk-driver-w", silent)
    api = cluster.client()
    try:
        owner = driver_job(api, "sk-driver-w")
    finally:
        api.close()
    root, storage, db, driver = driver_of(cluster, proxy, tmp_path, "600", owner_check=0.1,
                                          owner=[owner.metadata.name, owner.metadata.uid])
    first = driver("first")
    store = sql_store(db)
    try:
        cluster.wait(lambda: workers_running(cluster), timeout=120, message="the first step's worker running")
        silent.set()  # from now on, every read of the driver's own Job is held, unanswered
        cluster.wait(lambda: proxy.held >= 1, timeout=60, message="a read of the driver's Job held")
        gate.set()  # the worker ends while that read is held
        cluster.wait(lambda: store.get_resolution(root.id).state != "running" or first.poll() is not None,
                     timeout=120, message="the resolution's end recorded while the driver's Job read is held")
        code, said = exited(first, tmp_path / "first.log")
        assert code == 0, said[-3000:]
        assert proxy.held == 1, proxy.held  # one read at a time: the held one, never a second beside it
    finally:
        gate.set()
        proxy.passing()
        proxy.close()
        if first.poll() is None:
            first.kill()
            first.wait()
    assert store.get_resolution(root.id).state == "resolved"
    assert sorted((r.func_name, r.state, r.attempts) for r in store.runs_of_root(root.id)) == [
        ("one", "resolved", 1)] * 2 + [("twice", "resolved", 1)]
    assert store.get_artifact(store.get_run(root.id).output_id).summary == 7


def test_a_read_of_the_drivers_own_job_held_at_close_is_neither_said_nor_tried_again(cluster, tmp_path,
                                                                                      monkeypatch, caplog):
    """The executor closes while a read of the driver's own Job is held unanswered (a 3 s deadline): once that try's
    deadline passes, the read's thread ends without a word (no "retrying" warning after its executor began closing)
    and without trying again (no second read held). Was: the read made on the loop, tried 3 times; on a thread
    api_call did not know stopped, it warned "retrying" after the close."""
    monkeypatch.setenv(KUBE_TIMEOUT_ENV, "3")
    caplog.set_level(logging.DEBUG, logger="sematic_k8s")
    gate, silent = threading.Event(), threading.Event()
    cluster.behaviour = behave({"worker": Script(func=held(gate, timeout=300))})
    proxy, api, ex = owned_executor(cluster, tmp_path, "sk-driver-v", silent)

    def reading() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "sk-owner-read"]
    closing = 0
    try:
        submit(ex, new_id(), 4)
        cluster.wait(lambda: workers_running(cluster), timeout=120, message="the worker running")
        silent.set()
        cluster.wait(lambda: ex.wait(0.05) or proxy.held >= 1, timeout=60, message="a read of the driver's Job held")
    finally:
        gate.set()
        closing = len(caplog.records)
        ex.close()
    try:
        cluster.wait(lambda: not reading(), timeout=60, message="the read's thread ended")
        after = [r.getMessage() for r in caplog.records[closing:] if r.threadName == "sk-owner-read"]
        assert after == [], after
        assert proxy.held == 1, proxy.held
    finally:
        proxy.passing()
        api.close()
        proxy.close()
