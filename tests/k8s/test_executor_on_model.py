"""The Kubernetes executor, driver Job and its follower on the cluster model (tests/support/kube_model): pods
that are never created or never start, waiting for capacity and quota, sidecars, timeouts counted from the
container's start, image-pull grace, kubelet rejections, evictions and restarted drivers, refused and
throttled API calls, paginated lists and watch resumption. Workers run the real worker code in-process on
simulated nodes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import yaml

kubernetes = pytest.importorskip("kubernetes")

from kubernetes import client  # noqa: E402

import sematic_k8s as sk  # noqa: E402
from kube_model import Cluster, NodeSpec, Script, SimContext, Timing  # noqa: E402
from model_workers import behave, held, worker  # noqa: E402
from racing import on_a_thread  # noqa: E402
from sematic_k8s import serialization  # noqa: E402
from sematic_k8s.errors import KubernetesForbidden, KubernetesUnauthorized, NodeRejected, ServerError  # noqa: E402
from sematic_k8s.executors.base import Outcome, Task  # noqa: E402
from sematic_k8s.executors.inline import InlineExecutor  # noqa: E402
from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor  # noqa: E402
from sematic_k8s.executors.kubernetes import KubernetesExecutor  # noqa: E402
from sematic_k8s.executors.remote import Ended, _died  # noqa: E402
from sematic_k8s.future import new_id  # noqa: E402
from sematic_k8s.k8s.client import Backoff  # noqa: E402
from sematic_k8s.k8s.pods import job_failure, pod_state  # noqa: E402
from sematic_k8s.launchers import kubernetes as kube_launcher  # noqa: E402
from sematic_k8s.launchers.kubernetes import DriverJob, launch_driver  # noqa: E402
from sematic_k8s.resolvers.loop import ResolutionLoop, transient  # noqa: E402
from sematic_k8s.specs import (  # noqa: E402
    WORKER_EXIT_INFRASTRUCTURE,
    WORKER_SAYS,
    DriverSpec,
    ResolutionSettings,
)
from sematic_k8s.storage.base import put_artifact  # noqa: E402
from sematic_k8s.storage.local import LocalStorage  # noqa: E402
from sematic_k8s.storage.urls import storage_url  # noqa: E402
from sematic_k8s.store import sql_store  # noqa: E402

NS = "runs"
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "cd" * 32
FAST = Backoff(base=0.01, cap=0.05, attempts=6)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@sk.func(inline=False, cpu="100m", memory="64Mi")
def square(x: int) -> int:
    return x * x


@sk.func
def total(xs: list[int]) -> int:
    return sum(xs)


@sk.func
def squares(n: int) -> int:
    return total([square(i) for i in range(n)])


@sk.func
def square_twice(x: int) -> int:
    return square(square(x))


@sk.func(inline=False, cpu="1")
def heavy() -> int:
    return 1


@sk.func(inline=False, timeout=1)
def quick() -> int:
    return 3


@sk.func(inline=False, timeout=3)
def prompt() -> int:
    return 4


def slow_worker(ctx: SimContext) -> int:
    time.sleep(0.5)
    return worker(ctx)


@pytest.fixture
def storage(tmp_path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


def executor(api: client.ApiClient, storage: LocalStorage, **kw: Any) -> KubernetesExecutor:
    kw.setdefault("owner", False)
    kw.setdefault("creates_per_second", 0)
    kw.setdefault("event_check", 0.2)
    return KubernetesExecutor(storage, storage_url(storage), IMAGE, namespace=kw.pop("namespace", NS),
                              api_client=api, env={}, backoff=FAST, **kw)


def submit(ex: KubernetesExecutor, func: Any, root_id: str, inputs: dict[str, Any] | None = None,
           run_id: str | None = None, resumed: bool = False) -> str:
    run_id = run_id or new_id()
    values = {}
    for name, value in (inputs or {}).items():
        s = serialization.serialize(value)
        put_artifact(ex.storage, s)
        values[name] = serialization.Value(s.id, s.format, "", load=lambda _id, v=value: v)
    ex.submit(Task(run_id, root_id, func, values, 1, resumed=resumed))
    return run_id


def wait_for(ex: KubernetesExecutor, n: int, timeout: float = 30.0, seen: list[dict[str, str]] | None = None
             ) -> dict[str, Outcome]:
    got: dict[str, Outcome] = {}
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        for o in ex.wait(0.1):
            got[o.run_id] = o
        if seen is not None and ex.waiting:
            seen.append(dict(ex.waiting))
    assert len(got) == n, f"only {len(got)} of {n} ended: {list(got)}"
    return got


def jobs(cluster: Cluster) -> list[str]:
    return sorted(j["metadata"]["name"] for j in cluster.list("jobs.batch", NS))


# -- pods that are never created or never start (1) ---------------------------------------------------------


def test_a_job_whose_pod_is_never_created_fails_its_run_with_the_events_message(cluster, api, storage):
    ex = executor(api, storage, service_account="ghost", create_grace=0.5)
    run_id = submit(ex, square, new_id(), {"x": 3})
    outcome = wait_for(ex, 1)[run_id]
    ex.close()
    info = outcome.error_info
    assert info is not None and info["type"] == "FailedCreate", info
    assert info["message"].startswith("Kubernetes could not create the worker's pod: Kubernetes could not create "
                                      f"the pod (Job sk-{run_id}-1): Error creating: pods \"sk-{run_id}-1-")
    assert f'error looking up service account {NS}/ghost: serviceaccount "ghost" not found' in info["message"]
    assert "(still so after 0.5s)" in info["message"]
    assert jobs(cluster) == []  # deleted: its controller would go on trying
    assert ex.stats.event_reads == 0 and cluster.calls(verb="watch", resource="events")  # watched, not polled


def test_without_permission_to_watch_events_they_are_read_per_quiet_job(cluster, api, storage):
    rules = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
             {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
             {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}]
    cluster.apply([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "lister"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "lister"}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "lister"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lister"},
         "subjects": [{"kind": "ServiceAccount", "name": "lister", "namespace": NS}]}], namespace=NS)
    lister = cluster.client(f"{NS}/lister")
    ex = executor(lister, storage, service_account="ghost", create_grace=0.5, forbidden_window=0.3)
    run_id = submit(ex, square, new_id(), {"x": 3})
    info = wait_for(ex, 1)[run_id].error_info
    ex.close()
    lister.close()
    assert info is not None and info["type"] == "FailedCreate" and 'serviceaccount "ghost" not found' in info["message"]
    assert ex.stats.event_reads >= 1 and not ex.events_watched


def test_a_pod_that_never_gets_a_sandbox_fails_its_run_after_the_grace(cluster, api, storage):
    cluster.update_node("node-1", sandbox_error="rpc error: code = Unknown desc = failed to setup network for sandbox")
    ex = executor(api, storage, create_grace=0.5)
    run_id = submit(ex, square, new_id(), {"x": 3})
    info = wait_for(ex, 1)[run_id].error_info
    ex.close()
    assert info is not None and info["type"] == "FailedCreatePodSandBox", info
    assert "the worker's pod could not start on its node" in info["message"]
    assert "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network" in info["message"]


def test_a_pod_that_starts_after_a_sandbox_hiccup_is_not_failed(cluster, api, storage):
    cluster.update_node("node-1", sandbox_error="rpc error: code = Unknown desc = network not ready")
    ex = executor(api, storage, create_grace=30)
    run_id = submit(ex, square, new_id(), {"x": 4})
    cluster.wait(lambda: any(e["reason"] == "FailedCreatePodSandBox" for e in cluster.events(NS)))
    cluster.wait(lambda: ex.wait(0.05) or ex.attempts.get(run_id) is None or ex.attempts[run_id].stuck)
    cluster.update_node("node-1", sandbox_error=None)
    outcome = wait_for(ex, 1)[run_id]
    ex.close()
    assert outcome.error_info is None and outcome.output is not None


def test_a_quota_the_pod_fits_in_is_waited_out(cluster, api, storage):
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(NS, {"metadata": {"name": "pods"}, "spec": {"hard": {"pods": "1"}}})
    cluster.behaviour = behave({"worker": Script(func=slow_worker)})
    ex = executor(api, storage, create_grace=0.3)
    root = new_id()
    run_ids = [submit(ex, square, root, {"x": 1}), submit(ex, square, root, {"x": 2})]
    seen: list[dict[str, str]] = []
    got = wait_for(ex, 2, seen=seen)
    ex.close()
    assert all(got[r].error_info is None and got[r].output is not None for r in run_ids)  # none failed for it
    assert any("waiting for quota: Error creating" in why and "exceeded quota: pods" in why
               for w in seen for why in w.values())


def test_a_long_quota_wait_is_told_in_the_refusals_words_not_the_event_aggregators():
    # client-go's EventCorrelator records the 10th distinct FailedCreate message about a Job (each names its
    # generated pod) as "(combined from similar events): Error creating: ...": the wait still reads as the refusal
    gate = threading.Event()
    timing = Timing(create_retry=0.02, create_retry_cap=0.02)
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=behave({"worker": Script(func=held(gate))}),
                 timing=timing) as cluster:
        cluster.namespace(NS)
        api = cluster.client()
        client.CoreV1Api(api).create_namespaced_resource_quota(NS, {"metadata": {"name": "pods"},
                                                                    "spec": {"hard": {"pods": "1"}}})
        ex = executor(api, LocalStorage(os.path.join(cluster.workdir, "s")), create_grace=0.3)
        root = new_id()
        run_ids = [submit(ex, square, root, {"x": 1}), submit(ex, square, root, {"x": 2})]
        cluster.wait(lambda: any(e["message"].startswith("(combined from similar events): ")
                                 for e in cluster.events(NS) if e["reason"] == "FailedCreate"), message="combined")
        seen: list[dict[str, str]] = []

        def watched() -> bool:  # the executor's waits for a while once the combined Event is there (none ends)
            assert not ex.wait(0.05)
            seen.append(dict(ex.waiting))
            return len(seen) > 20
        cluster.wait(watched, message="the executor's waits")
        gate.set()
        got = wait_for(ex, 2, seen=seen)
        ex.close()
        api.close()
        assert all(got[r].error_info is None and got[r].output is not None for r in run_ids)
        whys = [why for w in seen for why in w.values() if "quota" in why]
        assert whys and all(why.startswith("waiting for quota: Error creating: pods ") for why in whys), whys


def test_a_bigger_request_than_the_quota_allows_fails_after_the_grace(cluster, api, storage):
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(NS, {"metadata": {"name": "cpu"}, "spec": {"hard": {"requests.cpu": "500m"}}})
    ex = executor(api, storage, create_grace=0.3)
    run_id = submit(ex, heavy, new_id())
    info = wait_for(ex, 1)[run_id].error_info
    ex.close()
    assert info is not None and info["type"] == "FailedCreate" and "exceeded quota: cpu" in info["message"]


# -- pod endings in plain words ------------------------------------------------------------------------------


ENDINGS: dict[str, tuple[Script | None, tuple[str, ...], str, str | None]] = {
    # the worker's Script (None: the image is invalid or missing), error types, words in the message, in the logs
    "oom": (Script(run=0.05, oom=True, logs="loading 10 GB into a list\n"), ("OOMKilled",),
            "ran out of memory (OOMKilled)", "loading 10 GB"),
    "crash": (Script(run=0.05, exit_code=139, logs="".join(f"line {i}\n" for i in range(100)) + "Segfault\n"),
              ("WorkerDied",), "exited with code 139 without a result", "Segfault"),
    # os._exit(0) in its func: no outcome, exit code 0, so its last lines are read then (a successful pod's are not)
    "quiet_exit": (Script(run=0.05, logs="leaving without a word\n"), ("WorkerDied",),
                   "exited with code 0 without a result", "leaving without a word"),
    # the same, a byte not UTF-8 in its last lines (raw bytes on its fd): read from the pod's log, as U+FFFD (was: the
    # official client's strict decode failed, taken for the pod gone: no lines)
    "quiet_exit_not_utf8": (Script(run=0.05, logs="reading shard 7\nbad byte \udcff in shard 7\n"), ("WorkerDied",),
                            "exited with code 0 without a result", "reading shard 7\nbad byte \ufffd in shard 7"),
    "bad_image": (None, ("InvalidImageName",), "image name is invalid", None),
    "image_pull": (None, ("ErrImagePull", "ImagePullBackOff"), "image_pull_secrets): ", None),
    # a deadline someone else set (an operator's patch of the Job, a policy webhook's on pods): the worker takes
    # its whole grace period to stop, so that the Job's pod is still there to read when the executor sees it fail
    "deadline_job": (Script(forever=True, ignore_sigterm=True, logs="epoch 1\nepoch 2\n"), ("DeadlineExceeded",),
                     "exceeded its timeout: Job was active longer than specified deadline", "epoch 2"),
    "deadline_pod": (Script(forever=True), ("DeadlineExceeded",),
                     "exceeded its timeout: Pod was active on the node longer than the specified deadline", None),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_pod_endings_are_reported_in_plain_words(cluster, api, storage, ending):
    script, kinds, words, logs = ENDINGS[ending]
    if script is not None:
        cluster.behaviour = behave({"worker": script})
    if ending == "image_pull":
        cluster.sim_images.missing.add(IMAGE)
    if ending == "deadline_pod":
        cluster.mutate_pods(lambda pod, namespace: pod["spec"].__setitem__("activeDeadlineSeconds", 1))
    ex = executor(api, storage, log_tail=5, pull_grace=0.3)
    if ending == "bad_image":
        ex.image = "127.0.0.1:5000/Not A Name"
    run_id = submit(ex, square, new_id(), {"x": 1})
    if ending == "deadline_job":
        cluster.wait(lambda: any(p["status"].get("phase") == "Running" for p in cluster.list("pods", NS)))
        client.BatchV1Api(api).patch_namespaced_job(f"sk-{run_id}-1", NS, {"spec": {"activeDeadlineSeconds": 1}})
    outcome = wait_for(ex, 1)[run_id]
    ex.close()
    info = outcome.error_info
    assert info is not None and info["type"] in kinds, info
    assert words in info["message"], info["message"]
    if logs:
        assert logs in info["traceback"]
    if ending == "crash":
        assert "line 95" not in info["traceback"] and "line 96" in info["traceback"]  # tail_lines=5
    assert outcome.details["job"] == f"sk-{run_id}-1" and outcome.details["namespace"] == NS
    assert outcome.details.get("reason") == (None if info["type"] == "WorkerDied" else info["type"])
    assert "Exception" not in info["mro"]  # the func's or its settings' fault: not retried as infrastructure
    deletes = cluster.calls(verb="delete", resource="jobs")
    assert bool(deletes) == (ending in ("image_pull", "bad_image", "deadline_job")), deletes  # stuck or still going
    assert all(c.query.get("propagationPolicy") == "Background" for c in deletes)
    assert len(cluster.calls(verb="create", resource="jobs")) == 1


DYING = """
import os
import time

import sematic_k8s as sk


def _hold(flag: str) -> None:
    with open(flag + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(flag + ".tmp", flag)  # the test kills this process (kill -9) once it is there
    time.sleep(600)


class Held:
    \"\"\"A value whose pickling waits to be killed: the worker stored its logs already.\"\"\"

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __reduce__(self):
        print("pickling the value")
        _hold(self.flag)
        return (int, (0,))


@sk.func(inline=False)
def dies(flag: str, when: str) -> object:
    print("working on shard 7")
    print("shard 7 done")
    if when == "in its func":
        _hold(flag)
    return Held(flag)
"""


@pytest.mark.parametrize("when", ["after its logs", "in its func"])
def test_a_worker_killed_after_storing_its_logs_has_them_once_in_its_runs_log(cluster, api, storage, tmp_path,
                                                                              monkeypatch, when):
    """A real worker process (``python -m sematic_k8s.worker`` in the pod's container, storage settings: no
    presigned URLs), kill -9'd while it pickles its value, after it appended its logs to storage, or while its
    func runs, before it did. Its run fails with the container's last lines in its error; its log holds the func's
    lines once: the worker's own, or the container's last lines standing in for them (was: the worker's lines,
    then the container's last lines, repeating them)."""
    import signal
    import uuid

    from projects import forget
    from sematic_k8s.func import load_func
    from sematic_k8s.storage.base import log_key

    module = f"kmodel_dies_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(DYING)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = os.pathsep.join([str(tmp_path), ROOT, os.environ.get("PYTHONPATH", "")])
    cluster.behaviour = behave({"worker": Script(process=True, extra_env={"PYTHONPATH": path,
                                                                          "PYTHONUNBUFFERED": "1"})})
    flag = tmp_path / "pid"
    try:
        func = load_func(f"{module}:dies", str(tmp_path / f"{module}.py"))
        ex = executor(api, storage)
        run_id = submit(ex, func, new_id(), {"flag": str(flag), "when": when})
        pid = int(cluster.wait(lambda: flag.exists() and flag.read_text(), timeout=60, message="the worker to hold"))
        if when == "after its logs":
            assert storage.get(log_key(run_id)) == b"working on shard 7\nshard 7 done\n"  # the worker's own
        else:
            assert not storage.exists(log_key(run_id))
        os.kill(pid, signal.SIGKILL)
        info = wait_for(ex, 1, timeout=60)[run_id].error_info
        ex.close()
    finally:
        forget(module)
    assert info is not None and info["type"] == "WorkerDied" and "exited with code 137" in info["message"], info
    assert "working on shard 7\nshard 7 done\n" in info["traceback"]  # the container's last lines, in its error
    assert ("pickling the value" in info["traceback"]) == (when == "after its logs")
    assert storage.get(log_key(run_id)).decode() == "working on shard 7\nshard 7 done\n"


BURSTING = """
import fcntl
import os

import sematic_k8s as sk


@sk.func(inline=False)
def bursts_then_dies(words: str, code: int) -> int:
    fcntl.fcntl(1, 1031, 1 << 20)  # F_SETPIPE_SZ: a pipe of a megabyte
    os.write(1, b"".join(b"line %06d\\n" % i for i in range(50_000)))
    os.set_blocking(1, False)
    n = 50_000
    while True:  # 341 lines, 4092 bytes: written whole or not at all (PIPE_BUF), until the pipe is full
        try:
            os.write(1, b"".join(b"line %06d\\n" % i for i in range(n, n + 341)))
        except BlockingIOError:
            break
        n += 341
    os.set_blocking(1, True)  # (the same pipe as fd 2's once stderr is on stdout's)
    os.write(2, words.encode())
    os._exit(code)
"""

LAST_WORDS = {  # what a worker says on stderr as it dies, its exit code, the error recorded
    "a traceback": ("Traceback (most recent call last):\n  File \"shard.py\", line 7, in <module>\n"
                    "RuntimeError: shard 7 is corrupt\n", 3, "WorkerDied"),
    "its infrastructure line": (f"{WORKER_SAYS}DiskFull: /data has 0 bytes left\n", WORKER_EXIT_INFRASTRUCTURE,
                                "DiskFull"),
}


@pytest.mark.parametrize("said", sorted(LAST_WORDS))
def test_a_dying_worker_pods_last_lines_are_its_last_words_in_the_order_it_wrote_them(cluster, api, storage,
                                                                                     tmp_path, monkeypatch, said):
    """A real worker process in a pod (the model's kubelet logs its two streams as containerd does: a copier each,
    one file): a burst of lines on stdout that fills its pipe, then its last words on stderr (a traceback; the
    worker's own line before exit 75), then its end without a result. Its run's error's last lines (the pod log's
    tail) are stdout's last lines then those words, as written, and the worker's line names what it met (DiskFull).
    Was: the worker's stderr a pipe of its own, logged while stdout's copier still had its pipe's megabyte to log:
    the last 40 lines were stdout's alone, the exit-75 line not found (StorageUnreachable recorded)."""
    import uuid

    from projects import forget
    from sematic_k8s.func import load_func

    words, code, kind = LAST_WORDS[said]
    module = f"kmodel_bursts_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(BURSTING)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = os.pathsep.join([str(tmp_path), ROOT, os.environ.get("PYTHONPATH", "")])
    cluster.behaviour = behave({"worker": Script(process=True, extra_env={"PYTHONPATH": path})})
    try:
        func = load_func(f"{module}:bursts_then_dies", str(tmp_path / f"{module}.py"))
        ex = executor(api, storage)
        run_id = submit(ex, func, new_id(), {"words": words, "code": code})
        info = wait_for(ex, 1, timeout=120)[run_id].error_info
        ex.close()
    finally:
        forget(module)
    assert info is not None and info["type"] == kind, info
    if kind == "WorkerDied":
        assert "exited with code 3" in info["message"], info
    else:
        assert info["message"] == "/data has 0 bytes left", info
    last = info["traceback"].splitlines()[-40:]
    said_lines = words.splitlines()
    assert last[-len(said_lines):] == said_lines, last
    stdout = last[:-len(said_lines)]
    n = int(stdout[0].split()[-1])
    assert stdout == [f"line {i:06d}" for i in range(n, n + len(stdout))], last  # stdout's last, consecutive


EVICTIONS = {  # how a pod loses its node, and what the run's error then says
    "node pressure": "The node was low on resource: memory",  # the kubelet's: the pod stays, Failed
    "eviction API": "Eviction API: evicting",  # a drain's (or a preemption's): DisruptionTarget, then deleted
}


@pytest.mark.parametrize("how", sorted(EVICTIONS))
def test_an_evicted_worker_runs_again_without_costing_an_attempt_and_fails_past_the_relaunches(cluster, api,
                                                                                               storage, how):
    cluster.behaviour = behave({"worker": Script(forever=True)})
    ex = executor(api, storage, eviction_relaunches=1)
    run_id = submit(ex, square, new_id(), {"x": 1})
    for n in range(2):
        pod = cluster.wait(lambda n=n: not ex.wait(0.02) and [
            p["metadata"]["name"] for p in cluster.list("pods", NS) if p["status"].get("phase") == "Running"
            and p["metadata"]["labels"].get("sematic-k8s/relaunch") == str(n)])[0]
        if how == "node pressure":
            cluster.evict(NS, pod)
        else:
            client.CoreV1Api(api).create_namespaced_pod_eviction(pod, NS, {"metadata": {"name": pod,
                                                                                         "namespace": NS}})
    outcome = wait_for(ex, 1)[run_id]
    ex.close()
    info = outcome.error_info
    assert info is not None and info["type"] == "Evicted", info
    assert f"the worker's pod was evicted from its node: {EVICTIONS[how]}" in info["message"], info["message"]
    assert "Exception" in info["mro"]  # a lost worker: retried by the loop like any infrastructure failure
    assert outcome.details["reason"] == "Evicted" and outcome.details["job"] == f"sk-{run_id}-1-r1"
    assert ex.stats.relaunches == 1 and len(cluster.calls(verb="create", resource="jobs")) == 2
    deletes = cluster.calls(verb="delete", resource="jobs")  # the first attempt's Job, before its relaunch
    assert [c.name for c in deletes][:1] == [f"sk-{run_id}-1"], [c.name for c in deletes]
    assert all(c.query.get("propagationPolicy") == "Background" for c in deletes)


def test_an_evicted_worker_that_runs_again_succeeds_on_the_same_attempt(cluster, api, storage):
    gate = held_workers(cluster)
    ex = executor(api, storage)
    run_id = submit(ex, square, new_id(), {"x": 7})
    pod = cluster.wait(lambda: [p["metadata"]["name"] for p in cluster.list("pods", NS)
                                if p["status"].get("phase") == "Running"])[0]
    cluster.evict(NS, pod)
    cluster.wait(lambda: not ex.wait(0.05) and f"sk-{run_id}-1-r1" in jobs(cluster), message="the relaunch")
    gate.set()
    outcome = wait_for(ex, 1)[run_id]
    ex.close()
    assert outcome.error_info is None and outcome.output is not None and outcome.attempt == 1
    assert outcome.details["relaunches"] == 1 and outcome.details["job"] == f"sk-{run_id}-1-r1"
    assert jobs(cluster) == [f"sk-{run_id}-1-r1"]  # the evicted one was deleted


def test_an_evicted_worker_whose_pod_stops_slowly_runs_again_not_failed_by_its_jobs_backoff_limit(cluster, api,
                                                                                                   storage):
    """A Job counts a pod being deleted as failed at once (the Job controller's isPodFailed: "Count deleted Pods
    as failures to account for orphan Pods that never have a chance to reach the Failed phase"), so a worker Job
    (backoffLimit 0) says FailureTarget BackoffLimitExceeded the moment its pod is evicted through the API, while
    the pod ends only once its containers stopped: here a classic sidecar (istio-proxy) drains for the whole
    grace period of 8 s. The run is launched again, not failed as BackoffLimitExceeded."""
    cluster.namespace("mesh", {"istio-injection": "enabled"})
    cluster.inject_sidecar({"name": "istio-proxy", "image": IMAGE})
    gate = threading.Event()
    cluster.behaviour = behave({"istio-proxy": Script(forever=True, ignore_sigterm=True),
                                "worker": Script(func=held(gate))})
    ex = executor(api, storage, namespace="mesh")
    run_id = submit(ex, square, new_id(), {"x": 3})
    pod = cluster.wait(lambda: not ex.wait(0.02) and [p["metadata"]["name"] for p in cluster.list("pods", "mesh")
                                                       if p["status"].get("phase") == "Running"])[0]
    client.CoreV1Api(api).create_namespaced_pod_eviction(pod, "mesh", {
        "metadata": {"name": pod, "namespace": "mesh"}, "deleteOptions": {"gracePeriodSeconds": 8}})
    ended: list[Outcome] = []
    cluster.wait(lambda: ended.extend(ex.wait(0.05)) or ended or f"sk-{run_id}-1-r1" in [
        j["metadata"]["name"] for j in cluster.list("jobs.batch", "mesh")], timeout=30, message="the relaunch")
    assert not ended, [o.error_info for o in ended]
    gate.set()
    outcome = wait_for(ex, 1)[run_id]
    ex.close()
    assert outcome.error_info is None and outcome.output is not None, outcome.error_info
    assert outcome.details["relaunches"] == 1 and outcome.details["job"] == f"sk-{run_id}-1-r1"


def test_a_worker_pod_deleted_by_hand_ends_its_run_saying_so(cluster, api, storage):
    """``kubectl delete pod`` on a running worker (no DisruptionTarget: not an eviction): the kubelet stops it
    (SIGTERM, exit 143) and reports the pod Failed while it is being deleted. The run fails as PodDeleted, "the
    worker's pod was deleted before it finished", with its last log lines (was: "the worker exited with code 143
    without a result", as if the func had died by itself)."""
    cluster.behaviour = behave({"worker": Script(forever=True, logs="epoch 1 of 10\nepoch 2 of 10\n")})
    ex = executor(api, storage)
    run_id = submit(ex, square, new_id(), {"x": 3})
    pod = cluster.wait(lambda: not ex.wait(0.02) and [p["metadata"]["name"] for p in cluster.list("pods", NS)
                                                       if p["status"].get("phase") == "Running"])[0]
    client.CoreV1Api(api).delete_namespaced_pod(pod, NS)
    info = wait_for(ex, 1)[run_id].error_info
    ex.close()
    assert info is not None and info["type"] == "PodDeleted", info
    assert info["message"] == "the worker's pod was deleted before it finished", info["message"]  # said once
    assert "epoch 2 of 10" in info["traceback"]


def test_a_worker_pod_force_deleted_before_it_was_reported_failed_says_so_once(cluster, api, storage):
    """``kubectl delete pod --grace-period=0 --force``: the pod is gone at once (a DELETED watch event) while its
    last status still says Running, before any kubelet reported it Failed. The run fails as PodDeleted with the
    words said once (was: "the worker's pod was deleted before it finished: the worker's pod was deleted before it
    finished", the words passed as the message too)."""
    cluster.behaviour = behave({"worker": Script(forever=True, logs="epoch 1 of 10\n")})
    ex = executor(api, storage)
    run_id = submit(ex, square, new_id(), {"x": 3})
    pod = cluster.wait(lambda: not ex.wait(0.02) and [p["metadata"]["name"] for p in cluster.list("pods", NS)
                                                       if p["status"].get("phase") == "Running"])[0]
    client.CoreV1Api(api).delete_namespaced_pod(pod, NS, grace_period_seconds=0)
    info = wait_for(ex, 1)[run_id].error_info
    ex.close()
    assert info is not None and info["type"] == "PodDeleted", info
    assert info["message"] == "the worker's pod was deleted before it finished", info["message"]


def test_a_worker_on_a_lost_node_runs_again_elsewhere_though_its_pod_stays_terminating(cluster, api, storage):
    """A node cut off: its pods are deleted by the taint eviction controller (DisruptionTarget) but no kubelet
    confirms, so they stay Terminating, and their Jobs say FailureTarget BackoffLimitExceeded. The run is
    launched again on another node, not failed as BackoffLimitExceeded."""
    cluster.add_node(NodeSpec("node-2", runtime="sim", unschedulable=True))
    gate = held_workers(cluster)
    ex = executor(api, storage)
    run_id = submit(ex, square, new_id(), {"x": 4})
    pod = cluster.wait(lambda: not ex.wait(0.02) and [p["metadata"]["name"] for p in cluster.list("pods", NS)
                                                       if p["status"].get("phase") == "Running"])[0]
    cluster.update_node("node-2", unschedulable=False)
    cluster.lose_node("node-1", evict_after=0.2)
    ended: list[Outcome] = []
    cluster.wait(lambda: ended.extend(ex.wait(0.05)) or ended or f"sk-{run_id}-1-r1" in jobs(cluster),
                 timeout=30, message="the relaunch")
    assert not ended, [o.error_info for o in ended]
    gate.set()
    outcome = wait_for(ex, 1)[run_id]
    ex.close()
    assert outcome.error_info is None and outcome.output is not None, outcome.error_info
    assert outcome.details["relaunches"] == 1 and outcome.details["node"] == "node-2"
    assert cluster.get("pods", NS, pod)["metadata"].get("deletionTimestamp")  # the first one: still Terminating


def chart_driver_client(cluster: Any, *, may_delete_pods: bool = True) -> client.ApiClient:
    """A client as the chart's driver ServiceAccount, bound to the driver Role the chart renders (and nothing else);
    ``may_delete_pods=False``: that Role without delete on pods."""
    helm = pytest.importorskip("helm_python")
    with helm.Chart.load(os.path.join(ROOT, "helm", "sematic-k8s")) as chart:
        files = chart.render({"image": {"repository": "127.0.0.1:5000/sematic-k8s-server"}}, name="sk",
                             namespace=NS, is_install=True, is_upgrade=False)
    docs = [d for path, text in files.items() if path.endswith("runs.yaml") for d in yaml.safe_load_all(text) if d]
    [role] = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "sk-sematic-k8s-driver"]
    [binding] = [d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "sk-sematic-k8s-driver"]
    account = binding["subjects"][0]["name"]
    if not may_delete_pods:
        for rule in role["rules"]:
            if rule["resources"] == ["pods"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != "delete"]
    cluster.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}, role, binding],
                  namespace=NS)
    return cluster.client(f"{NS}/{account}")


def test_a_job_deleted_without_its_pod_fails_its_run_and_the_driver_deletes_the_pod_left_running(cluster, api,
                                                                                                   storage):
    """Someone deletes a worker's Job without propagationPolicy (kubectl delete --cascade=orphan, the batch/v1
    default): its pod runs on, unowned. The run fails as JobDeleted and the driver (with the chart's Role) deletes
    that pod; the resolution's other worker runs on."""
    gate = threading.Event()
    orphaned, other = new_id(), new_id()
    cluster.behaviour = lambda pod, c: behave({"worker": Script(func=held(gate))})(pod, c) if (
        pod["metadata"]["labels"]["sematic-k8s/run-id"] == other) else Script(forever=True)
    driver = chart_driver_client(cluster)
    ex = executor(driver, storage)
    root = new_id()
    for run_id in (orphaned, other):
        submit(ex, square, root, {"x": 2}, run_id=run_id)
    core = client.CoreV1Api(api)

    def running(run_id: str) -> list[str]:
        pods = core.list_namespaced_pod(NS, label_selector=f"sematic-k8s/run-id={run_id}").items
        return [p.metadata.name for p in pods if p.status.phase == "Running"]
    cluster.wait(lambda: not ex.wait(0.02) and running(orphaned) and running(other), message="both pods running")
    _, _, headers = client.BatchV1Api(api).delete_namespaced_job_with_http_info(f"sk-{orphaned}-1", NS)
    assert "child pods are preserved by default" in headers.get("Warning", "")
    outcome = wait_for(ex, 1)[orphaned]
    info = outcome.error_info
    assert info is not None and info["type"] == "JobDeleted", info
    cluster.wait(lambda: not core.list_namespaced_pod(NS, label_selector=f"sematic-k8s/run-id={orphaned}").items,
                 message="the orphaned worker pod deleted")
    assert ex.stats.pod_deletes == 1 and running(other)
    gate.set()
    assert wait_for(ex, 1)[other].error_info is None
    ex.close()
    driver.close()


def test_a_job_deleted_before_the_driver_saw_its_pod_has_that_pod_deleted_too(cluster, api, storage):
    """A worker's Job deleted with propagationPolicy Orphan while the driver's pod watch is held up (its watch
    requests answered 503), so the driver never saw the pod the Job controller made: the run fails as JobDeleted
    and the driver (with the chart's Role) finds that pod by the labels the Job controller set on it
    (batch.kubernetes.io/controller-uid, the Job's uid) and deletes it. Was: no pod name known, the pod ran on."""
    cluster.behaviour = lambda pod, c: Script(forever=True)
    driver = chart_driver_client(cluster)
    ex = executor(driver, storage)
    fault = cluster.fail(503, verb="watch", resource="pods", times=None)
    run_id = submit(ex, square, new_id(), {"x": 2})
    [pod] = cluster.wait(lambda: [p for p in cluster.list("pods", NS) if p["status"].get("phase") == "Running"],
                         message="the worker pod running")
    job = cluster.get("jobs.batch", NS, f"sk-{run_id}-1")
    assert pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] == job["metadata"]["uid"]
    client.BatchV1Api(api).delete_namespaced_job(f"sk-{run_id}-1", NS, propagation_policy="Orphan")
    outcome = wait_for(ex, 1)[run_id]
    info = outcome.error_info
    assert info is not None and info["type"] == "JobDeleted", info
    assert "pod" not in outcome.details and fault.hits > 0  # the driver never saw the pod
    cluster.wait(lambda: cluster.get("pods", NS, pod["metadata"]["name"]) is None,
                 message="the worker pod left running deleted")
    assert ex.stats.pod_deletes == 1
    cluster.clear_faults()
    ex.close()
    driver.close()


# -- capacity (6) --------------------------------------------------------------------------------------------


def test_a_fan_out_larger_than_the_cluster_waits_for_capacity_and_completes(cluster, api, storage):
    cluster.update_node("node-1", pods=2)
    cluster.behaviour = behave({"worker": Script(func=slow_worker)})
    ex = executor(api, storage)
    root = new_id()
    run_ids = [submit(ex, square, root, {"x": i}) for i in range(8)]
    seen: list[dict[str, str]] = []
    got = wait_for(ex, 8, timeout=60, seen=seen)
    ex.close()
    assert all(got[r].error_info is None and got[r].output is not None for r in run_ids)
    assert ex.stats.waits.get("waiting for capacity", 0) >= 1  # reported, never failed
    assert any(why.startswith("waiting for capacity: 0/1 nodes are available: 1 Too many pods")
               for w in seen for why in w.values())


# -- sidecars (9) --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("native", [False, True])
def test_an_oom_killed_worker_beside_a_sidecar_is_oom_killed_and_its_pod_does_not_linger(cluster, api, storage,
                                                                                          native):
    cluster.namespace("mesh", {"istio-injection": "enabled"})
    cluster.inject_sidecar({"name": "istio-proxy", "image": IMAGE}, native=native)
    cluster.behaviour = behave({"istio-proxy": Script(forever=True), "worker": Script(run=0.05, oom=True,
                                                                                       logs="allocating\n")})
    ex = executor(api, storage, namespace="mesh")
    run_id = submit(ex, square, new_id(), {"x": 2})
    info = wait_for(ex, 1)[run_id].error_info
    ex.close()
    assert info is not None and info["type"] == "OOMKilled", info
    assert "allocating" in info["traceback"]
    cluster.wait(lambda: not cluster.list("jobs.batch", "mesh") or all(
        p["status"].get("phase") in ("Succeeded", "Failed") for p in cluster.list("pods", "mesh")))


def test_a_classic_sidecar_does_not_keep_a_finished_run_going(cluster, api, storage):
    cluster.namespace("mesh", {"istio-injection": "enabled"})
    cluster.inject_sidecar({"name": "istio-proxy", "image": IMAGE})
    ex = executor(api, storage, namespace="mesh")
    run_id = submit(ex, square, new_id(), {"x": 5})
    outcome = wait_for(ex, 1)[run_id]
    ex.close()
    assert outcome.error_info is None and outcome.output is not None
    assert cluster.list("jobs.batch", "mesh") == [] or ex.stats.deletes == 1  # its Job deleted: the proxy stops


# -- timeouts (10) -------------------------------------------------------------------------------------------


def test_the_timeout_counts_from_the_worker_containers_start_not_the_image_pull(cluster, api, storage):
    cluster.sim_images.pull_seconds = 4  # longer than prompt's timeout of 3 s
    ex = executor(api, storage)
    run_id = submit(ex, prompt, new_id())
    outcome = wait_for(ex, 1)[run_id]
    ex.close()
    assert outcome.error_info is None and outcome.output is not None
    job = cluster.history("jobs.batch", NS, f"sk-{run_id}-1")[0]
    assert "activeDeadlineSeconds" not in job["spec"] and "activeDeadlineSeconds" not in job["spec"]["template"][
        "spec"]


def test_a_worker_past_its_timeout_is_stopped_with_its_last_lines(cluster, api, storage):
    cluster.behaviour = behave({"worker": Script(forever=True, logs="epoch 1\nepoch 2\n")})
    ex = executor(api, storage)
    run_id = submit(ex, quick, new_id())
    outcome = wait_for(ex, 1)[run_id]
    ex.close()
    info = outcome.error_info
    assert info is not None and info["type"] == "DeadlineExceeded" and "timed out after 1 s" in info["message"]
    assert "epoch 2" in info["traceback"]
    # where it ran, as for any other ending (was only {"timed_out_after": 1}: its Job and pod unnamed)
    assert outcome.details["job"] == f"sk-{run_id}-1" and outcome.details["pod"].startswith(f"sk-{run_id}-1-")
    assert outcome.details["executor"] == "kubernetes" and outcome.details["timed_out_after"] == 1
    cluster.wait(lambda: jobs(cluster) == [])


# -- image pulls (13) ----------------------------------------------------------------------------------------


def test_the_pull_grace_is_not_restarted_by_err_image_pull_image_pull_backoff_flips():
    timing = Timing(image_pull_backoff=0.1, image_pull_backoff_cap=0.3, pull_error_shown=0.1)
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=behave(), timing=timing) as cluster:
        cluster.namespace(NS)
        cluster.sim_images.missing.add(IMAGE)
        api = cluster.client()
        ex = executor(api, LocalStorage(os.path.join(cluster.workdir, "s")), pull_grace=1.5)
        run_id = submit(ex, quick, new_id())
        info = wait_for(ex, 1, timeout=30)[run_id].error_info
        ex.close()
        assert info is not None and info["type"] in ("ErrImagePull", "ImagePullBackOff"), info
        assert "(still so after 1.5s)" in info["message"]
        assert info["message"].startswith("the worker's image could not be pulled (can the nodes reach its registry? "
                                          "A private one needs the executor's image_pull_secrets): "), info["message"]
        pod = [p for p in cluster.events(NS) if p["reason"] == "BackOff"]
        assert pod  # the kubelet flipped between the two while the grace ran
        api.close()


# -- kubelet rejections and evictions (14, 8) -----------------------------------------------------------------


def test_an_out_of_cpu_rejection_is_launched_again_like_an_eviction(cluster, api, storage):
    cluster.update_node("node-1", reserved={"cpu": "3500m"})  # usage the scheduler does not know of
    ex = executor(api, storage, eviction_relaunches=20)
    run_id = submit(ex, heavy, new_id())
    cluster.wait(lambda: any(p["status"].get("reason") == "OutOfcpu" for p in cluster.list("pods", NS)))
    cluster.update_node("node-1", reserved={})
    outcome = wait_for(ex, 1)[run_id]
    ex.close()
    assert outcome.error_info is None and outcome.output is not None
    assert outcome.details["relaunches"] >= 1 and outcome.details["job"].startswith(f"sk-{run_id}-1-r")


def test_a_pod_its_kubelet_refuses_for_a_no_execute_taint_is_launched_again_like_an_eviction(cluster, api, storage):
    # a node tainted NoExecute (drained, being repaired) as the scheduler bound the worker's pod to it: its kubelet
    # refuses the pod (phase Failed, reason TaintToleration), which never ran; was: the run failed for good
    cluster.update_node("node-1", late_taints=[{"key": "example.com/repair", "effect": "NoExecute"}])
    ex = executor(api, storage, eviction_relaunches=20)
    run_id = submit(ex, square, new_id(), {"x": 7})
    cluster.wait(lambda: any(p["status"].get("reason") == "TaintToleration" for p in cluster.list("pods", NS)))
    cluster.update_node("node-1", late_taints=[])
    outcome = wait_for(ex, 1)[run_id]
    ex.close()
    assert outcome.error_info is None and outcome.output is not None, outcome.error_info
    assert outcome.details["relaunches"] >= 1 and outcome.details["job"].startswith(f"sk-{run_id}-1-r")


def test_a_pod_its_kubelet_keeps_refusing_is_recorded_node_rejected_an_infrastructure_failure(cluster, api, storage):
    # the node's usage the scheduler does not know of stays: each relaunch is refused OutOfcpu, then the worker is
    # recorded dead as NodeRejected (an infrastructure failure: the loop tries the run again), not the func's failure
    cluster.update_node("node-1", reserved={"cpu": "3500m"})
    ex = executor(api, storage, eviction_relaunches=1)
    run_id = submit(ex, heavy, new_id())
    outcome = wait_for(ex, 1)[run_id]
    ex.close()
    assert outcome.error_info is not None and outcome.error_info["type"] == "NodeRejected", outcome.error_info
    assert "InfrastructureError" in outcome.error_info["mro"]
    assert outcome.error_info["message"].startswith(f"{NodeRejected.words}: "), outcome.error_info["message"]


@pytest.mark.parametrize("reason", ["OutOfcpu", "OutOfephemeral-storage", "OutOfexample.com/gpu", "NodeAffinity",
                                    "NodeSelectorMismatching", "NodePorts", "InvalidNodeInfo", "TaintToleration"])
def test_every_kubelet_refusal_launched_again_is_recorded_node_rejected_when_it_lasts(reason):
    # pkg/kubelet/lifecycle/predicate.go: "OutOf<resource>" (noderesources.Fits), the NodeAffinity, NodePorts and
    # TaintToleration predicates, "InvalidNodeInfo" (the kubelet could not read its Node). A pod so refused is launched
    # again (pod_state: retryable) and, once it no longer is, recorded NodeRejected (an infrastructure failure), from
    # the one list errors.NODE_REJECTIONS. Was: NodePorts, InvalidNodeInfo and OutOf<anything but cpu, memory, pods>
    # relaunched, then recorded as a plain WorkerDied (the func's failure: the run not tried again)
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "node-1"},
           "status": {"phase": "Failed", "reason": reason, "message": f"Pod was rejected: Predicate {reason} failed"}}
    state = pod_state(pod)
    assert state.terminal and state.retryable and state.reason == reason, state
    info = _died(Ended("r", state.exit_code, reason=state.reason, message=state.message))
    assert info["type"] == "NodeRejected" and "InfrastructureError" in info["mro"], info


def held_workers(cluster: Any) -> threading.Event:
    """Worker pods that run once the returned gate is set (killed before, they exit 137 without running)."""
    gate = threading.Event()
    cluster.behaviour = behave({"worker": Script(func=held(gate))})
    return gate


def test_a_restarted_driver_reattaches_to_the_relaunched_job_not_the_first(cluster, api, storage):
    gate = held_workers(cluster)
    root = new_id()
    first = executor(api, storage)
    run_id = submit(first, square, root, {"x": 6})
    pod = cluster.wait(lambda: [p["metadata"]["name"] for p in cluster.list("pods", NS)
                                if p["status"].get("phase") == "Running"])[0]
    cluster.evict(NS, pod)
    cluster.wait(lambda: not first.wait(0.05) and f"sk-{run_id}-1-r1" in jobs(cluster)
                 and f"sk-{run_id}-1" not in jobs(cluster), message=f"relaunched: {jobs(cluster)} {first.stats}")
    for w in first.watchers:  # the driver dies: nothing cleaned up, the relaunched Job runs on
        w.stop()
    second = executor(api, storage)
    submit(second, square, root, {"x": 6}, run_id=run_id, resumed=True)
    gate.set()
    outcome = wait_for(second, 1)[run_id]
    second.close()
    assert outcome.error_info is None and outcome.output is not None
    assert second.stats.creates == 0 and second.stats.reattached == 1
    assert outcome.details["job"] == f"sk-{run_id}-1-r1"
    created = [r for r in cluster.calls(verb="create", resource="jobs")]
    assert len(created) == 2  # the first attempt and its relaunch, never the first again


def test_a_restarted_drivers_job_list_expiring_between_pages_is_listed_again_whole(cluster, api, storage):
    gate = held_workers(cluster)
    root = new_id()
    first = executor(api, storage)
    run_ids = [submit(first, square, root, {"x": i}) for i in range(3)]
    cluster.wait(lambda: len(jobs(cluster)) == 3, message=f"jobs: {jobs(cluster)}")
    for w in first.watchers:  # the driver dies: its Jobs run on
        w.stop()
    second = executor(api, storage, page=2)
    list_page = second.kube.list_jobs

    def compacted_after_the_first_page(selector: str, limit: int, token: str | None) -> dict:
        page = list_page(selector, limit, token)
        if token is None and not compacted:  # between the pages: a change, then etcd compaction past the list's
            client.CoreV1Api(api).create_namespaced_config_map(NS, {"metadata": {"name": "later"}})  # snapshot
            compacted.append(cluster.compact())
        return page
    compacted: list[int] = []
    second.kube.list_jobs = compacted_after_the_first_page  # type: ignore[method-assign]
    for i, run_id in enumerate(run_ids):
        submit(second, square, root, {"x": i}, run_id=run_id, resumed=True)
    gate.set()
    got = wait_for(second, 3)
    second.close()
    assert all(got[r].error_info is None for r in run_ids), [got[r].error_info for r in run_ids]
    assert compacted and second.stats.creates == 0 and second.stats.reattached == 3
    expired = [r for r in cluster.calls(verb="list", resource="jobs") if "continue" in r.query and r.status == 410]
    assert expired, [(r.query, r.status) for r in cluster.calls(verb="list", resource="jobs")]


class Orphaned:
    """A worker whose driver died, and whose Job someone then deleted with propagationPolicy Orphan (kubectl delete
    --cascade=orphan): its pod ``name`` runs on, no Job controlling it, and fails (exit 1, no outcome) once
    ``old_gate`` is set; the pods made after it run the worker once ``new_gate`` is set."""

    def __init__(self, cluster: Cluster, api: client.ApiClient, storage: LocalStorage) -> None:
        self.old_gate, self.new_gate = threading.Event(), threading.Event()

        def fails_once_let_go(ctx: SimContext) -> int:  # 137 if stopped first
            while not self.old_gate.wait(0.05) and not ctx.stopped.is_set():
                pass
            return 137 if ctx.stopped.is_set() else 1
        cluster.behaviour = behave({"worker": Script(func=fails_once_let_go)})
        self.root = new_id()
        first = executor(api, storage)
        self.run_id = submit(first, square, self.root, {"x": 3})
        self.job_name = f"sk-{self.run_id}-1"
        [old] = cluster.wait(lambda: [p for p in cluster.list("pods", NS) if p["status"].get("phase") == "Running"],
                             message="the worker pod running")
        self.name, job_uid = old["metadata"]["name"], old["metadata"]["labels"]["batch.kubernetes.io/controller-uid"]
        cluster.behaviour = behave({"worker": Script(func=held(self.new_gate))})  # the pods made from now on
        for w in first.watchers:  # the driver dies: nothing cleaned up, its worker runs on
            w.stop()
        client.BatchV1Api(api).delete_namespaced_job(self.job_name, NS, propagation_policy="Orphan")
        core = client.CoreV1Api(api)
        orphan = cluster.wait(lambda: cluster.get("jobs.batch", NS, self.job_name) is None and (
            p := core.read_namespaced_pod(self.name, NS)).metadata.finalizers is None and p, message="the pod orphaned")
        # as on a real cluster: the garbage collector took the Job off its owners, the Job controller its finalizer
        assert orphan.metadata.owner_references is None and orphan.status.phase == "Running"
        assert orphan.metadata.labels["batch.kubernetes.io/controller-uid"] == job_uid
        assert orphan.metadata.labels["batch.kubernetes.io/job-name"] == self.job_name

    def restart(self, cluster: Cluster, driver: client.ApiClient, storage: LocalStorage) -> Outcome:
        """A restarted driver resumes the attempt: the old pod, if it still runs, fails once the new one runs, then
        the new one runs the worker. What the driver records."""
        second = executor(driver, storage)
        submit(second, square, self.root, {"x": 3}, run_id=self.run_id, resumed=True)
        [self.new] = cluster.wait(lambda: [p for p in cluster.list("pods", NS) if p["metadata"]["name"] != self.name
                                           and p["status"].get("phase") == "Running"], message="the new pod running")
        assert self.new["metadata"]["labels"]["batch.kubernetes.io/job-name"] == self.job_name  # the same name
        self.old_gate.set()
        cluster.wait(lambda: (p := cluster.get("pods", NS, self.name)) is None or p["status"].get("phase") == "Failed",
                     message="the old pod ended")
        self.new_gate.set()
        outcome = wait_for(second, 1)[self.run_id]
        second.close()
        driver.close()
        return outcome


def test_a_worker_job_deleted_without_its_pod_while_no_driver_ran_has_that_pod_deleted_before_it_is_made_again(
        cluster, api, storage):
    """The restarted driver (the chart's Role) deletes the pod no Job of its resolution made, by uid, before it makes
    the attempt's Job again under the same name, and records the new pod's outcome. Was: the old pod was taken for
    the new Job's (by its job-name label), ran beside the new one, and its failure was recorded as the attempt's."""
    orphaned = Orphaned(cluster, api, storage)
    outcome = orphaned.restart(cluster, chart_driver_client(cluster), storage)
    assert outcome.error_info is None and outcome.output is not None, outcome.error_info
    assert outcome.details["pod"] == orphaned.new["metadata"]["name"] and outcome.details["job"] == orphaned.job_name
    assert cluster.get("pods", NS, orphaned.name) is None
    [deleted] = [r for r in cluster.calls(verb="delete", resource="pods") if r.name == orphaned.name]
    [created] = [r for r in cluster.calls(verb="create", resource="jobs") if r.user == deleted.user]
    assert deleted.seq < created.seq and deleted.status == 200  # gone before the Job was made again


def test_a_pod_left_by_a_worker_job_deleted_while_no_driver_ran_is_never_taken_for_the_new_jobs(cluster, api,
                                                                                             storage, caplog):
    """The same, with a driver whose Role may not delete pods: the old pod runs on beside the new one (the refusal is
    logged, with what the Role lacks), and its failure is not recorded as the attempt's: pods are matched to an
    attempt by the uid of the Job that made them, not by its name."""
    orphaned = Orphaned(cluster, api, storage)
    driver = restricted(cluster, "nodelete", [  # the chart's driver Role but delete on pods
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
        {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": ["get", "list", "watch"]}])
    with caplog.at_level("WARNING", logger="sematic_k8s.k8s"):
        outcome = orphaned.restart(cluster, driver, storage)
    assert outcome.error_info is None and outcome.output is not None, outcome.error_info
    assert outcome.details["pod"] == orphaned.new["metadata"]["name"]
    assert cluster.get("pods", NS, orphaned.name)["status"]["phase"] == "Failed"  # ran on, beside the new one
    assert f"could not delete pod {orphaned.name}, left running: its Job was deleted without it" in caplog.text
    assert "give the driver's Role delete on pods" in caplog.text


@pytest.mark.parametrize("answer", ["its words", "a plain 409"])
def test_a_restarted_driver_waits_out_its_attempts_job_being_deleted_and_makes_it_again(cluster, api, storage,
                                                                                       answer):
    """A worker whose driver died, and whose Job someone then deletes while a finalizer holds it (another
    controller's; as a foreground deletion holds it while its pods take their grace period): the Job stays, being
    deleted, its pod gone. The restarted driver's start-up list leaves that Job out, so its create meets it: 409
    'object is being deleted: ...' (the generic registry's Store.Create). The driver holds the create until the Job
    is gone, then makes it again and records the new pod's outcome. Was: the 409 was taken for a Job there to
    re-attach to, and the attempt was recorded as that Job's deletion. 'a plain 409': its first create answered as if
    the Job were there to re-attach to (its deletion began between the 409 and the driver's read of it): the read
    finds it being deleted, the same."""
    gate = held_workers(cluster)
    root = new_id()
    first = executor(api, storage)
    run_id = submit(first, square, root, {"x": 4})
    job_name = f"sk-{run_id}-1"
    [old] = cluster.wait(lambda: [p["metadata"]["name"] for p in cluster.list("pods", NS)
                                  if p["status"].get("phase") == "Running"], message="the worker pod running")
    for w in first.watchers:  # the driver dies: nothing cleaned up, its worker runs on
        w.stop()
    batch = client.BatchV1Api(api)
    batch.patch_namespaced_job(job_name, NS, {"metadata": {"finalizers": ["example.com/hold"]}})
    batch.delete_namespaced_job(job_name, NS, propagation_policy="Foreground")
    cluster.wait(lambda: cluster.get("pods", NS, old) is None, message="the old pod gone, its Job held")
    if answer == "a plain 409":
        cluster.fail(409, verb="create", resource="jobs", reason="AlreadyExists",
                     message=f'jobs.batch "{job_name}" already exists')
    second = executor(api, storage)
    submit(second, square, root, {"x": 4}, run_id=run_id, resumed=True)  # its create made (and answered) in it
    creates = lambda: cluster.calls(verb="create", resource="jobs")  # noqa: E731
    conflict = cluster.wait(lambda: [r for r in creates() if r.status == 409], message="a create meeting it")[0]
    assert cluster.get("jobs.batch", NS, job_name)["metadata"]["deletionTimestamp"]
    batch.patch_namespaced_job(job_name, NS, {"metadata": {"finalizers": None}})
    gate.set()
    outcome = wait_for(second, 1)[run_id]
    second.close()
    assert outcome.error_info is None and outcome.output is not None, outcome.error_info
    assert outcome.details["job"] == job_name and outcome.details["pod"] != old
    assert second.stats.reattached == 0
    assert [r.status for r in creates() if r.seq > conflict.seq][-1] == 201, [(r.seq, r.status) for r in creates()]


def test_a_job_gone_between_its_creates_409_and_the_read_is_made_again(cluster, api, storage):
    """A create answered 409 (a first try that went through, its answer lost, then the Job deleted) whose Job is
    gone by the time the driver reads it to re-attach: the create is tried again, and the run resolves. Was: the
    read's 404 escaped the executor."""
    ex = executor(api, storage)
    cluster.fail(409, verb="create", resource="jobs", reason="AlreadyExists", message="jobs.batch \"x\" already exists")
    run_id = submit(ex, square, new_id(), {"x": 5})
    outcome = wait_for(ex, 1)[run_id]
    ex.close()
    assert outcome.error_info is None and outcome.output is not None, outcome.error_info
    assert [r.status for r in cluster.calls(verb="create", resource="jobs")] == [409, 201]
    assert [r.status for r in cluster.calls(verb="get", resource="jobs")] == [404]


# -- refused and throttled API calls (15) ----------------------------------------------------------------------


def test_sustained_429_on_create_requeues_instead_of_failing(cluster, api, storage):
    ex = executor(api, storage)  # first: its start (watches, a first list) must not use up the 429s' window
    cluster.fail(429, verb="create", resource="jobs", times=None, seconds=1.5, retry_after=1)
    root = new_id()
    run_ids = [submit(ex, square, root, {"x": i}) for i in range(3)]
    seen: list[dict[str, str]] = []
    got = wait_for(ex, 3, seen=seen)
    ex.close()
    assert all(got[r].error_info is None for r in run_ids), [got[r].error_info for r in run_ids]
    assert ex.stats.requeued >= 1 and any("waiting to create its Job" in why for w in seen for why in w.values())


def test_a_job_count_quota_on_create_requeues_until_jobs_go(cluster, api, storage):
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(NS, {"metadata": {"name": "jobs"},
                                              "spec": {"hard": {"count/jobs.batch": "1"}}})
    ex = executor(api, storage, ttl_seconds_after_finished=0)
    root = new_id()
    run_ids = [submit(ex, square, root, {"x": i}) for i in range(2)]
    got = wait_for(ex, 2, timeout=60)
    ex.close()
    assert all(got[r].error_info is None for r in run_ids), [got[r].error_info for r in run_ids]
    assert ex.stats.requeued >= 1


def test_a_driver_without_permission_to_watch_pods_fails_with_a_clear_message(cluster, api, storage):
    cluster.apply([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "half"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "half"},
         "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch",
                                                                             "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "half"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "half"},
         "subjects": [{"kind": "ServiceAccount", "name": "half", "namespace": NS}]}], namespace=NS)
    half = cluster.client(f"{NS}/half")
    ex = executor(half, storage, forbidden_window=0.5)
    submit(ex, square, new_id(), {"x": 1})
    with pytest.raises(KubernetesForbidden) as err:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ex.wait(0.1)
    ex.close()
    half.close()
    assert str(err.value).startswith(f"the Kubernetes API refuses to let this driver watch pods in namespace {NS} "
                                     "(403: pods is forbidden: User")
    assert "give its ServiceAccount a Role that allows list and watch on pods and jobs" in str(err.value)


def test_a_driver_that_may_not_read_jobs_fails_its_resolution_in_plain_words(cluster, api, storage, tmp_path):
    # a Role without "get" on jobs: the driver reads its own Job by name (no uid in its env) to own its workers'
    cluster.apply([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "noget"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "noget"},
         "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "list", "watch", "delete"]},
                   {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "noget"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "noget"},
         "subjects": [{"kind": "ServiceAccount", "name": "noget", "namespace": NS}]}], namespace=NS)
    noget = cluster.client(f"{NS}/noget")
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    root = squares(1)
    ex = executor(noget, storage, owner=None)
    loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), ex),
                          ResolutionSettings(root_id=root.id), kind="cloud")
    with pytest.raises(KubernetesForbidden) as err:
        loop.run(root)
    noget.close()
    recorded = store.get_resolution(root.id).error
    assert f"the Kubernetes API refuses to let this driver read Job sk-driver-{root.id} in namespace {NS} (403: " \
           in recorded and "give its ServiceAccount a Role that allows create, get, list" in recorded
    assert str(err.value) in recorded
    assert "HTTP response" not in recorded and "Reason:" not in recorded  # not the client's repr of the answer


def restricted(cluster: Cluster, name: str, rules: list[dict[str, Any]]) -> client.ApiClient:
    """A client acting as ServiceAccount ``name`` of NS, bound to a Role of ``rules`` there."""
    return cluster.client_with_role(NS, name, rules)


def test_a_driver_that_may_not_create_jobs_fails_its_resolution_naming_what_its_role_lacks(cluster, storage,
                                                                                         tmp_path):
    from click.testing import CliRunner

    from sematic_k8s.cli import cli

    nocreate = restricted(cluster, "nocreate", [  # everything the driver needs but create on jobs
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "delete"]},
        {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list", "watch"]}])
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    root = squares(1)
    loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), executor(nocreate, storage)),
                          ResolutionSettings(root_id=root.id), kind="cloud")
    with pytest.raises(KubernetesForbidden) as err:  # what a driver prints (and exits 1: not transient)
        loop.run(root)
    nocreate.close()
    said = str(err.value)
    assert said.startswith("the Kubernetes API refuses to let this driver create Job sk-") and (
        f'(403: jobs.batch is forbidden: User "system:serviceaccount:{NS}:nocreate" cannot create resource "jobs" '
        f'in API group "batch" in the namespace "{NS}"); it lacks create on jobs in API group "batch"; give its '
        "ServiceAccount a Role that allows create, get, list, watch and delete on jobs") in said, said
    assert "runs.rbac.create=true" in said and "runs.driverServiceAccount.name" in said
    assert "HTTP response" not in said and "Reason:" not in said  # not the client's repr of the answer
    recorded = store.get_resolution(root.id)
    assert recorded.state == "failed" and recorded.error.count(said) == 1, recorded.error
    assert recorded.error.endswith(f"(give the driver's ServiceAccount what it lacks, then continue the resolution: "
                                   f"rerun_from={root.id!r}, rerun_mode='continue' (or `sematic-k8s rerun {root.id} "
                                   "--mode continue`, or its dashboard page))"), recorded.error  # not "once back"
    assert not any(r.error for r in store.runs_of_root(root.id))  # no run is blamed: square was only canceled
    assert jobs(cluster) == []
    caller = _what_the_caller_gets(cluster, store, storage, root.id)
    assert str(caller.value).count(said) == 1 and str(caller.value).count("is forbidden") == 1, str(caller.value)
    shown = CliRunner().invoke(cli, ["--home", str(tmp_path), "resolutions", "list", "-o", "json"])
    assert shown.exit_code == 0 and shown.output.count("cannot create resource") == 1, shown.output


def test_a_job_create_refused_401_ends_the_resolution_as_the_drivers_credentials_not_the_run(cluster, api, storage,
                                                                                           tmp_path):
    cluster.fail(401, verb="create", resource="jobs", times=None, message="Unauthorized")
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    root = squares(1)
    loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), executor(api, storage)),
                          ResolutionSettings(root_id=root.id), kind="cloud")
    with pytest.raises(KubernetesUnauthorized) as err:
        loop.run(root)
    said = str(err.value)
    assert said.startswith("the Kubernetes API does not accept this driver's credentials to create Job sk-") and (
        f" in namespace {NS} (401: Unauthorized): its ServiceAccount token expired or was revoked; the driver "
        "restarts with a fresh one") in said, said
    assert transient(err.value)  # a driver exits 75: its Job starts a new pod, which is given a fresh token
    recorded = store.get_resolution(root.id)
    assert recorded.state == "failed" and recorded.error == (
        f"infrastructure failure, not the pipeline's: KubernetesUnauthorized: {said} (if the driver's ServiceAccount "
        f"was deleted, create it again, then continue the resolution: rerun_from={root.id!r}, rerun_mode='continue' "
        f"(or `sematic-k8s rerun {root.id} --mode continue`, or its dashboard page))"), recorded.error
    assert not any(r.error for r in store.runs_of_root(root.id))  # not JobCreateFailed: no run is blamed


def test_a_driver_whose_token_is_revoked_leaves_its_resolution_to_a_driver_with_a_fresh_token(cluster, api, storage,
                                                                                           tmp_path):
    gate = held_workers(cluster)
    rules = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
             {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": ["get", "list", "watch"]}]
    old = restricted(cluster, "driver", rules)
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    root = square_twice(2)
    settings = ResolutionSettings(root_id=root.id)
    loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), executor(old, storage)), settings,
                          kind="cloud")
    loop.detach_on_outage = True  # as a driver's (sematic_k8s.resolvers.driven.drive)
    thread, raised = on_a_thread(lambda: loop.run(root))
    cluster.wait(lambda: [p for p in cluster.list("pods", NS) if p["status"].get("phase") == "Running"])
    client.CoreV1Api(api).delete_namespaced_service_account("driver", NS)  # its token is revoked with it
    cluster.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "driver"}}], namespace=NS)
    gate.set()  # the first square ends; the second one's Job is created with the revoked token
    thread.join(60)
    old.close()
    assert len(raised) == 1 and isinstance(raised[0], KubernetesUnauthorized), raised
    assert str(raised[0]).startswith("the Kubernetes API does not accept this driver's credentials to create Job "
                                     "sk-"), raised
    assert transient(raised[0])  # the driver exits 75
    assert store.get_resolution(root.id).state == "running"  # not recorded as failed: the restart resumes it

    fresh = cluster.client(f"{NS}/driver")  # the restarted driver's pod is given a new token
    again = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), executor(fresh, storage)),
                           settings, kind="cloud")
    assert again.run(root) == 16
    fresh.close()
    assert store.get_resolution(root.id).state == "resolved"


def test_a_webhook_denying_a_job_fails_its_run_not_the_driver(cluster, api, storage):
    denied = 'admission webhook "jobs.policy.example.com" denied the request: jobs must set a team label'
    cluster.fail(403, verb="create", resource="jobs", times=None, message=denied, reason="Forbidden")
    ex = executor(api, storage)
    run_id = submit(ex, square, new_id(), {"x": 2})
    info = wait_for(ex, 1)[run_id].error_info
    ex.close()
    assert info["type"] == "JobCreateFailed" and f"(403): {denied}" in info["message"], info


# -- lists and watches (18) ----------------------------------------------------------------------------------


def test_lists_are_paginated_cache_reads_and_watches_resume_without_relisting(cluster, api, storage):
    ex = executor(api, storage, page=2)
    root = new_id()
    run_ids = [submit(ex, square, root, {"x": i}) for i in range(5)]
    wait_for(ex, 5)
    pod_lists = [r for r in cluster.calls(verb="list", resource="pods")]
    assert pod_lists and all(r.query.get("limit") == "2" for r in pod_lists)
    assert not any(r.quorum_list for r in pod_lists if "continue" not in r.query)  # from the watch cache
    job_lists = cluster.calls(verb="list", resource="jobs")
    assert len(job_lists) == 1 and job_lists[0].query.get("limit") == "2"  # listed once, at start-up
    def lists() -> int:
        return len(cluster.calls(verb="list", resource="pods")) + len(cluster.calls(verb="list", resource="jobs"))
    before = lists()
    cluster.drop_watches()  # an API-server restart: the streams end
    more = [submit(ex, square, root, {"x": 10 + i}) for i in range(2)]
    wait_for(ex, 2)
    assert lists() == before  # resumed from the last resourceVersion
    cluster.watch_error(410)  # the resourceVersion expired (etcd compaction)
    last = submit(ex, square, root, {"x": 20})
    wait_for(ex, 1)
    ex.close()
    assert lists() > before  # 410: listed again (paged)
    assert len(set(run_ids + more + [last])) == 8


# -- the driver Job (7) and following it (1) ------------------------------------------------------------------


def driver_spec(root_id: str) -> DriverSpec:
    return DriverSpec(root={"id": "a" * 64, "format": "pickle"}, storage_url="s3://b/p", image=IMAGE,
                      executor="kubernetes", executor_settings={"namespace": NS},
                      resolution=ResolutionSettings(root_id=root_id, max_parallelism=8))


def driver_pods(cluster: Cluster, root_id: str) -> list[dict[str, Any]]:
    return [p for p in cluster.list("pods", NS) if p["metadata"]["labels"].get("sematic-k8s/run-id") == root_id]


def test_the_driver_job_ignores_evictions_retries_exit_75_and_stops_at_exit_1(cluster, api):
    codes = iter([None, 75, 1])  # evicted while running, then an outage, then the pipeline failed

    def driver(pod: dict[str, Any], container: dict[str, Any]) -> Script:
        code = next(codes)
        return Script(forever=True) if code is None else Script(run=0.05, exit_code=code)
    cluster.behaviour = driver
    root = new_id()
    name = launch_driver(driver_spec(root), root, {}, namespace=NS, api_client=api)
    pod = cluster.wait(lambda: [p for p in driver_pods(cluster, root) if p["status"].get("phase") == "Running"])[0]
    assert pod["status"]["qosClass"] == "Burstable"  # requests set: not the first to go under node pressure
    cluster.evict(NS, pod["metadata"]["name"])
    job = cluster.wait(lambda: (j := cluster.get("jobs.batch", NS, name)) and any(
        c["type"] == "Failed" for c in j["status"].get("conditions") or []) and j)
    assert [c["reason"] for c in job["status"]["conditions"] if c["type"] == "Failed"] == ["PodFailurePolicy"]
    assert job["status"]["failed"] == 2  # the 75 and the 1; the eviction was not counted
    assert len(driver_pods(cluster, root)) == 3


class Outage:
    """A store whose server goes away when ``down`` is set (every call raises ServerError, as the HTTP store does
    once its retry window is over)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.down = inner, False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise ServerError("the server is unreachable (test outage)")
            return attr(*args, **kwargs)
        return call


def test_a_driver_that_meets_an_outage_leaves_its_workers_and_a_restart_resumes(cluster, api, storage, tmp_path):
    gate = held_workers(cluster)
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    outage = Outage(store)
    root = squares(3)
    settings = ResolutionSettings(max_parallelism=8, root_id=root.id)
    first = executor(api, storage)
    loop = ResolutionLoop(outage, storage, InlineOrRemoteExecutor(InlineExecutor(1), first), settings, kind="cloud")
    loop.detach_on_outage = True  # as a driver's (sematic_k8s.resolvers.driven.drive)
    thread, raised = on_a_thread(lambda: loop.run(root))
    cluster.wait(lambda: len([p for p in cluster.list("pods", NS) if p["status"].get("phase") == "Running"]) == 3)
    cluster.wait(lambda: len([r for r in store.runs_of_root(root.id)
                              if r.func_name == "square" and r.state == "running"]) == 3)  # recorded as running
    outage.down = True
    gate.set()
    thread.join(60)
    assert len(raised) == 1 and isinstance(raised[0], ServerError), raised
    assert len(jobs(cluster)) == 3 and not cluster.calls(verb="delete", resource="jobs")  # its workers left alone
    assert store.get_resolution(root.id).state == "running"  # not recorded as failed: a restart resumes it

    second = executor(api, storage)  # the Job started the driver again
    again = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), second), settings, kind="cloud")
    assert again.run(root) == 0 + 1 + 4
    assert second.stats.creates == 0  # its workers had ended: their outcomes were read, nothing launched again
    assert store.get_resolution(root.id).state == "resolved"


def test_the_driver_exits_75_when_the_server_is_unreachable(tmp_path):
    spec = driver_spec(new_id())
    env = {**os.environ, "SEMATIC_K8S_DRIVER": spec.to_json(), "SEMATIC_K8S_SERVER": "http://127.0.0.1:9",
           "SEMATIC_K8S_RETRY_WINDOW": "1", "SEMATIC_K8S_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 75, done.stderr[-2000:]
    assert "infrastructure failure" in done.stderr and "exiting 75 to be started again" in done.stderr


def test_following_a_driver_whose_pod_is_never_created(cluster, api):
    root = new_id()
    spec = driver_spec(root)
    launch_driver(spec, root, {}, namespace=NS, api_client=api, service_account="ghost")
    follower = DriverJob(spec, api_client=cluster.client(), start_grace=0.5)
    end = cluster.wait(follower.ended, timeout=30)
    assert end.how.startswith(f"Job sk-driver-{root} could not start its driver for 0.5s: Kubernetes could not "
                              "create its pod: Error creating: pods")
    assert 'serviceaccount "ghost" not found' in end.how
    follower.cleanup()
    cluster.wait(lambda: cluster.get("jobs.batch", NS, f"sk-driver-{root}") is None)
    follower.close()


def test_following_a_driver_whose_image_cannot_be_pulled(cluster, api):
    cluster.sim_images.missing.add(IMAGE)
    root = new_id()
    spec = driver_spec(root)
    launch_driver(spec, root, {}, namespace=NS, api_client=api)
    follower = DriverJob(spec, api_client=cluster.client(), start_grace=0.5)
    end = cluster.wait(follower.ended, timeout=30)
    assert "could not start its driver" in end.how and ("ErrImagePull" in end.how or "ImagePullBackOff" in end.how)
    follower.close()


def test_following_a_driver_that_exits_1_reports_its_last_lines(cluster, api):
    cluster.behaviour = lambda pod, c: Script(run=0.05, exit_code=1, logs="resolution x failed: boom\n")
    root = new_id()
    spec = driver_spec(root)
    launch_driver(spec, root, {}, namespace=NS, api_client=api)
    follower = DriverJob(spec, api_client=cluster.client(), start_grace=0.5)
    end = cluster.wait(follower.ended, timeout=30)
    assert end.exit_code == 1 and "boom" in end.last_logs
    follower.close()


class Counts:
    """The sql store, with the one read the CloudResolver polls (the HTTP store's resolution_counts)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def resolution_counts(self, root_id: str) -> dict[str, Any] | None:
        res = self.inner.get_resolution(root_id)
        return None if res is None else {"state": res.state, "counts": {}}


def test_the_cloud_resolver_fails_promptly_when_its_driver_pod_is_never_created(cluster, api, storage, tmp_path):
    from sematic_k8s.errors import ResolutionFailed
    from sematic_k8s.progress import display
    from sematic_k8s.resolvers.cloud import CloudResolver

    root = new_id()
    spec = driver_spec(root)
    launch_driver(spec, root, {}, namespace=NS, api_client=api, service_account="ghost")
    resolver = CloudResolver(server="http://127.0.0.1:9", storage=storage_url(storage), registry="127.0.0.1:5000/x",
                             executor="kubernetes", poll_interval=0.05)
    follower = DriverJob(spec, api_client=cluster.client(), start_grace=0.5)
    with pytest.raises(ResolutionFailed) as err:
        resolver._follow(Counts(sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")), storage, root,
                         display(lambda line: None), follower)
    follower.close()
    assert f"the driver Job sk-driver-{root} could not start its driver for 0.5s: Kubernetes could not create its " \
           "pod" in str(err.value)
    assert 'serviceaccount "ghost" not found' in str(err.value)
    assert cluster.get("jobs.batch", NS, f"sk-driver-{root}") is None or cluster.wait(
        lambda: cluster.get("jobs.batch", NS, f"sk-driver-{root}") is None)  # deleted: it would go on trying


def test_a_driver_job_deleted_without_its_pod_ends_the_resolution_and_its_follower_deletes_the_pod_and_workers(
        cluster, api, storage, tmp_path):
    """Someone deletes the driver's Job with propagationPolicy Orphan (kubectl delete --cascade=orphan, a client
    sending none): its pod runs on, resolving unseen, and the worker Jobs it started lose their owner. The
    CloudResolver following the Job records the resolution failed saying so, deletes that pod (by uid) and the
    worker Jobs (their pods with them); the driver's loop (here on a thread), its next write refused, stops. Was:
    recorded as "the driver Job ... was deleted", with the driver pod and its workers left running."""
    from sematic_k8s.errors import ResolutionFailed
    from sematic_k8s.progress import display
    from sematic_k8s.resolvers.cloud import CloudResolver

    gate = threading.Event()  # never set: the worker runs until it is stopped
    cluster.behaviour = lambda pod, c: behave({"worker": Script(func=held(gate, timeout=120))})(pod, c) if (
        pod["metadata"]["labels"]["sematic-k8s/role"] == "worker") else Script(forever=True)
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    root = squares(1)
    spec = driver_spec(root.id)
    launch_driver(spec, root.id, {}, namespace=NS, api_client=api)
    [driver_pod] = cluster.wait(lambda: [p["metadata"]["name"] for p in driver_pods(cluster, root.id)
                                         if p["status"].get("phase") == "Running"], message="the driver pod running")
    job = cluster.get("jobs.batch", NS, f"sk-driver-{root.id}")
    # the follower is what this test is about: the driver's own read of its Job (owner_check, 10 s; tested below)
    # must not find it gone first on a busy machine, and record the end in its own words
    owned = executor(api, storage, owner=(job["metadata"]["name"], job["metadata"]["uid"]), owner_check=3600)
    loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), owned),
                          ResolutionSettings(root_id=root.id), kind="cloud")
    thread, stopped = on_a_thread(lambda: loop.run(root))  # as the driver pod runs it

    def workers() -> list[dict[str, Any]]:
        return [p for p in cluster.list("pods", NS) if p["metadata"]["labels"]["sematic-k8s/role"] == "worker"]
    cluster.wait(lambda: [p for p in workers() if p["status"].get("phase") == "Running"], message="a worker running")
    follower = DriverJob(spec, api_client=cluster.client())
    assert follower.ended() is None  # followed since it was launched
    client.BatchV1Api(api).delete_namespaced_job(f"sk-driver-{root.id}", NS, propagation_policy="Orphan")
    resolver = CloudResolver(server="http://127.0.0.1:9", storage=storage_url(storage), registry="127.0.0.1:5000/x",
                             executor="kubernetes", poll_interval=0.05)
    with pytest.raises(ResolutionFailed) as err:
        resolver._follow(Counts(store), storage, root.id, display(lambda line: None), follower)
    follower.close()
    words = (f"the driver Job sk-driver-{root.id} was deleted without its pod {driver_pod} (a delete that orphans "
             "pods: propagationPolicy Orphan, kubectl delete --cascade=orphan) before the resolution ended; the "
             "CloudResolver following it deletes that pod and the resolution's worker Jobs")
    assert words in str(err.value), str(err.value)
    res = store.get_resolution(root.id)
    assert res.state == "failed" and res.error == words, res.error
    assert {r.state for r in store.runs_of_root(root.id)} == {"canceled"}
    cluster.wait(lambda: cluster.get("pods", NS, driver_pod) is None, message="the driver pod deleted")
    cluster.wait(lambda: not workers() and not [j for j in cluster.list("jobs.batch", NS)
                                                if j["metadata"]["labels"]["sematic-k8s/role"] == "worker"],
                 message="the worker Jobs and their pods deleted")
    thread.join(60)
    assert not thread.is_alive() and stopped, "the driver's loop ran on"
    owned.close()


@pytest.mark.parametrize("may_delete_pods", [True, False])
def test_a_driver_whose_job_was_deleted_without_its_pod_stops_the_resolution_itself(cluster, api, storage, tmp_path,
                                                                                    monkeypatch, caplog,
                                                                                    may_delete_pods):
    """No CloudResolver follows the driver (a detached resolution, a rerun the server started) when its Job is
    deleted with propagationPolicy Orphan: the driver (its loop here on a thread, with the chart's driver Role, in the
    driver pod the Job made: $SEMATIC_K8S_POD_NAME), reading its own Job now and then, finds it gone, records the
    resolution failed in plain words, cancels its runs and deletes its workers' Jobs, stops with DriverJobDeleted (a
    driver exits 1: not restarted), and, last, deletes the pods of its Job, which nothing else would (no Job, no
    TTL): the Job's earlier one (it exited 75), then its own. Was: it resolved on, unowned, seen by nothing in the
    cluster; then, stopped, its pods stayed for ever. A Role without delete on pods: they stay, and the driver logs the
    kubectl command that deletes them."""
    from sematic_k8s.errors import DriverJobDeleted
    from sematic_k8s.settings import POD_NAME_ENV

    gate = threading.Event()  # never set: the worker runs until it is stopped
    drivers = iter([Script(run=0.05, exit_code=75), Script(forever=True)])  # an outage, then this driver
    cluster.behaviour = lambda pod, c: behave({"worker": Script(func=held(gate, timeout=120))})(pod, c) if (
        pod["metadata"]["labels"]["sematic-k8s/role"] == "worker") else next(drivers)
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    root = squares(1)
    launch_driver(driver_spec(root.id), root.id, {}, namespace=NS, api_client=api)
    job = cluster.wait(lambda: cluster.get("jobs.batch", NS, f"sk-driver-{root.id}"))

    def phases() -> dict[str, str]:
        return {p["status"].get("phase"): p["metadata"]["name"] for p in driver_pods(cluster, root.id)}
    pods = cluster.wait(lambda: (ps := phases()).keys() == {"Failed", "Running"} and ps,
                        message="the driver's second pod running")
    earlier, pod = pods["Failed"], pods["Running"]
    monkeypatch.setenv(POD_NAME_ENV, pod)  # the downward API's, in the driver pod
    driver = chart_driver_client(cluster, may_delete_pods=may_delete_pods)
    owned = executor(driver, storage, owner=(job["metadata"]["name"], job["metadata"]["uid"]), owner_check=0.2)
    loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), owned),
                          ResolutionSettings(root_id=root.id), kind="cloud")
    thread, stopped = on_a_thread(lambda: loop.run(root))  # as the driver pod runs it

    def worker_jobs() -> list[str]:
        return [j["metadata"]["name"] for j in cluster.list("jobs.batch", NS)
                if j["metadata"]["labels"]["sematic-k8s/role"] == "worker"]
    cluster.wait(lambda: [p for p in cluster.list("pods", NS) if p["metadata"]["labels"]["sematic-k8s/role"] ==
                          "worker" and p["status"].get("phase") == "Running"], message="a worker running")
    with caplog.at_level("WARNING", logger="sematic_k8s.k8s"):
        client.BatchV1Api(api).delete_namespaced_job(f"sk-driver-{root.id}", NS, propagation_policy="Orphan")
        thread.join(30)
    assert not thread.is_alive(), "the driver resolved on without its Job"
    assert len(stopped) == 1 and isinstance(stopped[0], DriverJobDeleted), stopped
    res = store.get_resolution(root.id)
    assert res.state == "failed" and res.error.startswith(
        "infrastructure failure, not the pipeline's: DriverJobDeleted: the driver's Job "
        f"sk-driver-{root.id} was deleted while the driver ran: this driver stops, and its workers' Jobs and its own "
        "pod are deleted (a delete that left its pod running, kubectl delete --cascade=orphan, ends it too) (to "
        f"finish it after all, continue the resolution: rerun_from='{root.id}'"), res.error
    assert {r.state for r in store.runs_of_root(root.id)} == {"canceled"}
    cluster.wait(lambda: not worker_jobs(), message="the worker Jobs deleted")
    if may_delete_pods:
        cluster.wait(lambda: not driver_pods(cluster, root.id), message="the driver's pods deleted")
        assert caplog.text.index(f"deleting pod {earlier}: this driver's Job sk-driver-{root.id} was deleted without "
                                 "it") < caplog.text.index(f"deleting pod {pod}: "), caplog.text  # its own last
    else:
        assert {p["metadata"]["name"] for p in driver_pods(cluster, root.id)} == {pod, earlier}
        assert f"could not delete pod {earlier}, left behind by this driver's Job sk-driver-{root.id} deleted " \
               "without it: 403 " in caplog.text, caplog.text
        command = f"kubectl delete pods -n {NS} -l sematic-k8s/resolution-id={root.id},sematic-k8s/role=driver"
        assert "(give the driver's Role delete on pods, as the chart's does); delete its pods with: " \
               f"{command}" in caplog.text, caplog.text
    owned.close()  # closed again (the driver process exits): nothing more
    driver.close()


def test_a_follower_that_may_not_delete_the_pod_left_by_its_driver_jobs_deletion_says_what_to_run(cluster, api,
                                                                                                   caplog):
    """The user's credentials may follow the driver Job (get it, list pods and Events) but not delete: the end is
    known all the same, and the follower logs the kubectl command that deletes what was left running."""
    cluster.behaviour = lambda pod, c: Script(forever=True)
    root = new_id()
    spec = driver_spec(root)
    launch_driver(spec, root, {}, namespace=NS, api_client=api)
    [pod] = cluster.wait(lambda: [p["metadata"]["name"] for p in driver_pods(cluster, root)
                                  if p["status"].get("phase") == "Running"], message="the driver pod running")
    rules = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
             {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"]},
             {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]
    cluster.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "follower"}},
                   {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "follower"},
                    "rules": rules},
                   {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": "follower"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "follower"},
                    "subjects": [{"kind": "ServiceAccount", "name": "follower", "namespace": NS}]}], namespace=NS)
    follower = DriverJob(spec, api_client=cluster.client(f"{NS}/follower"))
    assert follower.ended() is None
    client.BatchV1Api(api).delete_namespaced_job(f"sk-driver-{root}", NS, propagation_policy="Orphan")
    end = cluster.wait(follower.ended)
    assert end.how.startswith(f"Job sk-driver-{root} was deleted without its pod {pod} ") and end.leftovers
    with caplog.at_level("WARNING", logger="sematic_k8s.k8s"):
        follower.cleanup()
    follower.close()
    said = caplog.text
    assert f"could not delete driver pod {pod} (403" in said, said
    assert f"kubectl delete pods,jobs,secrets -n {NS} -l sematic-k8s/resolution-id={root} --cascade=background" in said
    assert cluster.get("pods", NS, pod)["status"]["phase"] == "Running"  # nothing deleted: it was not allowed


# A user's Role as many clusters hand-write it: the Job itself (which launching a driver needs), not its status
# subresource, which real RBAC treats as a resource of its own
USERS_ROLE = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "delete"]},
              {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"]},
              {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]


def _users_role(less: str = "") -> list[dict[str, Any]]:
    """USERS_ROLE without ``less`` (a resource)."""
    return [{**rule, "resources": [r for r in rule["resources"] if r != less]} for rule in USERS_ROLE
            if rule["resources"] != [less]]


def test_a_follower_whose_role_grants_jobs_but_not_their_status_sees_its_driver_end(cluster, api):
    """The CloudResolver's follower reads the driver's Job itself (``get`` on jobs, which its user needs to launch it),
    not through the ``jobs/status`` subresource. Was: every read refused 403, taken for a busy API server and logged
    at debug level: the driver's end never seen (``ended()`` None for ever)."""
    cluster.behaviour = lambda pod, c: Script(run=0.05, exit_code=3, logs="driver: out of luck\n")
    root = new_id()
    spec = driver_spec(root)
    launch_driver(spec, root, {}, namespace=NS, api_client=api, driver_settings={"backoff_limit": 0})
    user = cluster.client_with_role(NS, "follower", USERS_ROLE)
    follower = DriverJob(spec, api_client=user)
    cluster.wait(lambda: job_failure(cluster.get("jobs.batch", NS, f"sk-driver-{root}")), message="the Job failed")
    end = follower.ended()
    assert end is not None and end.how.startswith(f"Job sk-driver-{root} failed (BackoffLimitExceeded"), end
    assert end.exit_code == 3 and "out of luck" in end.last_logs
    assert not [r for r in cluster.calls(user=cluster.user_of(f"{NS}/follower")) if r.status == 403]
    follower.close()
    user.close()


def test_a_follower_refused_the_driver_job_says_so_once_and_asks_again_only_slowly(cluster, api, caplog):
    """Credentials that may not read the driver's Job (403): one line naming the verb, resource and namespace and
    what to grant, then no more reads of it for REASK_REFUSED seconds (the resolution's record is followed on). Was:
    refused at every poll, logged at debug level, the driver's end never known and nothing said."""
    cluster.behaviour = lambda pod, c: Script(forever=True)
    root = new_id()
    spec = driver_spec(root)
    launch_driver(spec, root, {}, namespace=NS, api_client=api)
    user = cluster.client_with_role(NS, "follower", _users_role("jobs"))
    follower = DriverJob(spec, api_client=user)
    with caplog.at_level("DEBUG", logger="sematic_k8s.k8s"):
        assert [follower.ended() for _ in range(3)] == [None, None, None]
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1 and "\n" not in said[0], said
    assert said[0].startswith(f"following driver Job sk-driver-{root}: the Kubernetes API refuses get on jobs "
                              f'(API group "batch") in namespace {NS} (403: '), said
    assert f'grant your kube credentials get on jobs in API group "batch" in namespace {NS}' in said[0], said
    reads = [r for r in cluster.calls(user=cluster.user_of(f"{NS}/follower")) if r.resource == "jobs"]
    assert len(reads) == 1 and reads[0].status == 403, reads
    follower.close()
    user.close()


def test_a_follower_refused_the_pod_list_says_so_once_and_still_finds_a_pod_never_created(cluster, api, caplog):
    """Credentials that may read the driver's Job and its Events but not list pods: said once, and a driver pod that
    is never created is still found by the Job's own Events (FailedCreate). Was: each check refused, logged at debug
    level, the driver waiting unseen for ever."""
    root = new_id()
    spec = driver_spec(root)
    launch_driver(spec, root, {}, namespace=NS, api_client=api, service_account="ghost")
    user = cluster.client_with_role(NS, "follower", _users_role("pods"))
    follower = DriverJob(spec, api_client=user, start_grace=0)
    with caplog.at_level("DEBUG", logger="sematic_k8s.k8s"):
        end = cluster.wait(follower.ended, timeout=30)
    assert end.how.startswith(f"Job sk-driver-{root} could not start its driver for 0s: Kubernetes could not create "
                              "its pod"), end
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1 and f"refuses list on pods (API group \"\") in namespace {NS} (403: " in said[0], said
    assert 'grant your kube credentials list on pods in API group "" in namespace' in said[0], said
    follower.close()
    user.close()


def test_a_follower_refused_the_events_says_so_once(cluster, api, caplog):
    """Credentials that may not list Events: why the driver's pod is never created cannot be read; said once, with
    what to grant, and not asked again. Was: asked at every check, refused, logged at debug level."""
    root = new_id()
    spec = driver_spec(root)
    launch_driver(spec, root, {}, namespace=NS, api_client=api, service_account="ghost")
    user = cluster.client_with_role(NS, "follower", _users_role("events"))
    follower = DriverJob(spec, api_client=user, start_grace=0)
    with caplog.at_level("DEBUG", logger="sematic_k8s.k8s"):
        for _ in range(3):
            follower.checked = float("-inf")  # a check at each call
            assert follower.ended() is None
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1 and f"refuses list on events (API group \"\") in namespace {NS} (403: " in said[0], said
    reads = [r for r in cluster.calls(user=cluster.user_of(f"{NS}/follower")) if r.resource == "events"]
    assert len(reads) == 1 and reads[0].status == 403, reads
    follower.close()
    user.close()


def test_a_follower_whose_credentials_are_not_accepted_says_so_once_and_asks_again_only_slowly(cluster, api,
                                                                                                caplog):
    """Kube credentials the API server does not accept (401: an expired token): one line saying so, then nothing more
    asked of it for REASK_REFUSED seconds. Was: refused at every poll, logged at debug level, nothing said."""
    cluster.behaviour = lambda pod, c: Script(forever=True)
    root = new_id()
    spec = driver_spec(root)
    launch_driver(spec, root, {}, namespace=NS, api_client=api)
    user = cluster.client(token="kmodel-expired")
    follower = DriverJob(spec, api_client=user, start_grace=0)
    with caplog.at_level("DEBUG", logger="sematic_k8s.k8s"):
        for _ in range(3):
            follower.checked = float("-inf")  # a check at each call, were the Job read
            assert follower.ended() is None
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1 and said[0].startswith(f"following driver Job sk-driver-{root}: the Kubernetes API refuses "
                                                 f'get on jobs (API group "batch") in namespace {NS} (401: '), said
    assert said[0].endswith("your kube credentials are not accepted; renew them (an expired token, a revoked "
                            "certificate)"), said
    assert len([r for r in cluster.requests if r.status == 401]) == 1
    follower.close()
    user.close()


def test_a_follower_refused_the_driver_job_uses_a_role_granted_after_the_refusal(cluster, api, caplog,
                                                                                 monkeypatch):
    """The refusal tells the user to grant ``get`` on jobs; once they do, the follower's next ask (every
    REASK_REFUSED seconds, lowered here to every poll) is answered: the driver's end is seen, the refusal said once
    and the read working again said once. Was: refused once, never asked again, the end never seen."""
    monkeypatch.setattr(kube_launcher, "REASK_REFUSED", 0.0)
    cluster.behaviour = lambda pod, c: Script(run=0.05, exit_code=0, logs="all done\n")
    root = new_id()
    spec = driver_spec(root)
    launch_driver(spec, root, {}, namespace=NS, api_client=api)
    user = cluster.client_with_role(NS, "follower", _users_role("jobs"))
    follower = DriverJob(spec, api_client=user)
    with caplog.at_level("DEBUG", logger="sematic_k8s.k8s"):
        assert [follower.ended(), follower.ended()] == [None, None]
        cluster.apply([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                        "metadata": {"name": "follower-jobs"},
                        "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]}]},
                       {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": {"name": "follower-jobs"},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "follower-jobs"},
                        "subjects": [{"kind": "ServiceAccount", "name": "follower", "namespace": NS}]}], namespace=NS)
        end = cluster.wait(follower.ended, message="the driver's end seen")
    assert end.how == f"Job sk-driver-{root} completed" and end.exit_code == 0 and "all done" in end.last_logs, end
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 2, said
    assert f'refuses get on jobs (API group "batch") in namespace {NS} (403: ' in said[0], said
    assert said[1] == f"following driver Job sk-driver-{root}: the Kubernetes API answers get on jobs in namespace " \
                      f"{NS} again (refused before)", said
    reads = [r.status for r in cluster.calls(user=cluster.user_of(f"{NS}/follower")) if r.resource == "jobs"]
    assert reads[:2] == [403, 403] and reads[-1] == 200, reads
    follower.close()
    user.close()


def test_a_follower_whose_credentials_are_renewed_after_a_401_follows_on(cluster, api, caplog, monkeypatch):
    """A 401 that passes (a token the client renews at expiry, as an exec plugin's or an in-cluster one is; an
    authentication webhook briefly down): said once, asked again slowly, and once accepted the driver's end is seen.
    Was: after one 401 nothing more asked for the rest of the resolution."""
    monkeypatch.setattr(kube_launcher, "REASK_REFUSED", 0.0)
    cluster.behaviour = lambda pod, c: Script(run=0.05, exit_code=0, logs="all done\n")
    root = new_id()
    spec = driver_spec(root)
    launch_driver(spec, root, {}, namespace=NS, api_client=api)
    user = cluster.client(token="kmodel-expired")
    follower = DriverJob(spec, api_client=user)
    with caplog.at_level("DEBUG", logger="sematic_k8s.k8s"):
        assert [follower.ended(), follower.ended()] == [None, None]
        user.configuration.api_key["authorization"] = cluster.token()  # what the client's refresh hook does
        end = cluster.wait(follower.ended, message="the driver's end seen")
    assert end.how == f"Job sk-driver-{root} completed" and "all done" in end.last_logs, end
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 2 and "(401: " in said[0], said
    assert said[1] == f"following driver Job sk-driver-{root}: the Kubernetes API accepts your kube credentials " \
                      "again (refused before)", said
    assert len([r for r in cluster.requests if r.status == 401]) == 2
    follower.close()
    user.close()


@pytest.mark.parametrize(("status", "resource"), [(503, "jobs"), (429, "jobs"), (400, "pods/log")])
def test_a_follower_asks_again_after_an_answer_that_may_pass(cluster, api, caplog, status, resource):
    """A 429 or 5xx to the read of the driver's Job, a 400 to its log's (the answer for a container not started yet):
    asked again at the next poll, nothing said above debug level."""
    cluster.behaviour = lambda pod, c: Script(run=0.05, exit_code=0, logs="all done\n")
    root = new_id()
    spec = driver_spec(root)
    launch_driver(spec, root, {}, namespace=NS, api_client=api)
    cluster.wait(lambda: [c for c in (cluster.get("jobs.batch", NS, f"sk-driver-{root}").get("status") or {}).get(
        "conditions") or [] if c["type"] == "Complete"], message="the driver Job complete")
    words = {429: ("TooManyRequests", "busy"),  # no Retry-After: urllib3 itself asks again after one that has it
             400: ("BadRequest", 'container "driver" in pod "x" is waiting to start: ContainerCreating')}
    reason, message = words.get(status, (None, None))
    cluster.fail(status, verb="get", resource=resource, times=1, reason=reason, message=message)
    follower = DriverJob(spec, api_client=cluster.client())
    with caplog.at_level("DEBUG", logger="sematic_k8s.k8s"):
        ends = [follower.ended(), follower.ended()]
    assert (ends[0] is None) == (resource == "jobs"), ends
    assert ends[1] is not None and ends[1].how == f"Job sk-driver-{root} completed" and ends[1].exit_code == 0
    assert "all done" in ends[1].last_logs, ends
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG], caplog.text
    follower.close()


def test_a_dead_worker_reaches_the_cloud_caller_and_the_cli_once_with_its_last_lines(cluster, api, storage, tmp_path):
    from click.testing import CliRunner

    from sematic_k8s.cli import cli
    from sematic_k8s.errors import ResolutionFailed

    cluster.behaviour = behave({"worker": Script(run=0.05, exit_code=3, logs="loading shard 7\nFatal: bad shard\n")})
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    root = squares(1)
    loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), executor(api, storage)),
                          ResolutionSettings(root_id=root.id), kind="cloud")
    with pytest.raises(ResolutionFailed) as driver_side:  # what a driver prints
        loop.run(root)
    err = _what_the_caller_gets(cluster, store, storage, root.id)
    words = "the worker exited with code 3 without a result"
    for text in (str(err.value), str(driver_side.value)):
        assert text.startswith(f"resolution {root.id} failed: square (run {err.value.run_id}) raised WorkerDied: "
                               f"{words}\n\nlast log lines:\nloading shard 7\nFatal: bad shard"), text
        assert text.count(words) == 1 and text.count("Fatal: bad shard") == 1, text  # each said once
    assert err.value.error == store.get_run(err.value.run_id).error  # whole, not a listing's excerpt of it
    shown = CliRunner().invoke(cli, ["--home", str(tmp_path), "runs", "show", err.value.run_id])
    assert f"WorkerDied: {words}" in shown.output and "Fatal: bad shard" in shown.output
    assert shown.output.count(words) == 1, shown.output


def test_a_run_waiting_for_capacity_says_so_in_its_record_until_it_starts(cluster, api, storage, tmp_path):
    from click.testing import CliRunner

    from sematic_k8s.cli import cli

    cluster.update_node("node-1", pods=0)  # no room: the worker's pod is Unschedulable
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    root = squares(1)
    loop = ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), executor(api, storage)),
                          ResolutionSettings(root_id=root.id), kind="cloud")
    values: list[Any] = []
    thread = threading.Thread(target=lambda: values.append(loop.run(root)), daemon=True)
    thread.start()
    [run] = cluster.wait(lambda: [r for r in store.runs_of_root(root.id)
                                  if r.func_name == "square" and (r.notes or {}).get("waiting")], timeout=30)
    assert run.state == "running" and run.notes["waiting"].startswith(
        "waiting for capacity: 0/1 nodes are available: 1 Too many pods"), run.notes
    shown = CliRunner().invoke(cli, ["--home", str(tmp_path), "runs", "show", run.id])
    assert "waiting for capacity: 0/1 nodes are available" in shown.output, shown.output
    cluster.update_node("node-1", pods=10)  # room again: it starts and resolves
    thread.join(60)
    assert values == [0]  # 0 * 0
    done = store.get_run(run.id)
    assert done.state == "resolved" and "waiting" not in done.notes and done.notes["executor"]["job"]


class InThread:
    """The driver, when it is the loop on a thread of the test: it ends when its resolution does."""

    def ended(self) -> None:
        return None


def test_the_cloud_resolvers_progress_says_what_a_run_waits_for(cluster, api, tmp_path):
    """Recorded through a real server (as a driver does), followed as the CloudResolver follows it: its progress
    lines say a run has not started and why, while it waits."""
    from sematic_k8s.progress import display
    from sematic_k8s.resolvers.cloud import CloudResolver
    from sematic_k8s.store.http import HttpStore
    from serving import serve

    cluster.update_node("node-1", pods=0)
    root = squares(1)
    lines: list[str] = []
    (tmp_path / "server").mkdir()
    with serve(tmp_path / "server") as server:
        storage = LocalStorage(tmp_path / "server" / "storage")
        loop = ResolutionLoop(HttpStore(server.url, server.key), storage,
                              InlineOrRemoteExecutor(InlineExecutor(1), executor(api, storage)),
                              ResolutionSettings(root_id=root.id), kind="cloud")
        thread = threading.Thread(target=loop.run, args=(root,), daemon=True)
        thread.start()
        resolver = CloudResolver(server=server.url, storage=storage_url(storage), registry="127.0.0.1:5000/x",
                                 executor="kubernetes", poll_interval=0.05)
        values: list[Any] = []
        following = threading.Thread(target=lambda: values.append(resolver._follow(
            HttpStore(server.url, server.key), storage, root.id, display(lines.append), InThread())), daemon=True)
        following.start()
        cluster.wait(lambda: any("not started" in line for line in lines), timeout=30)
        cluster.update_node("node-1", pods=10)
        following.join(60)
        thread.join(60)
    assert values == [0], lines
    said = [line for line in lines if "not started" in line]
    assert said[0].startswith(f"resolution {root.id}: 1 run not started: waiting for capacity: 0/1 nodes are "
                              "available: 1 Too many pods."), said
    assert len(said) == 1  # said once, not at every poll


def _what_the_caller_gets(cluster: Any, store: Any, storage: Any, root_id: str) -> Any:
    """The failure a CloudResolver's caller gets for the resolution, followed with its driver Job on the model."""
    from sematic_k8s.errors import ResolutionFailed
    from sematic_k8s.progress import display
    from sematic_k8s.resolvers.cloud import CloudResolver

    resolver = CloudResolver(server="http://127.0.0.1:9", storage=storage_url(storage), registry="127.0.0.1:5000/x",
                             executor="kubernetes")
    follower = DriverJob(driver_spec(root_id), api_client=cluster.client())
    try:
        with pytest.raises(ResolutionFailed) as caught:  # what the caller of resolve() gets
            resolver._follow(Counts(store), storage, root_id, display(lambda line: None), follower)
    finally:
        follower.close()
    return caught
