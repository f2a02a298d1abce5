"""Runs, workers and drivers in a namespace with a LimitRange (the cluster model's LimitRanger plugin): its defaults
let runs resolve and show on their pods; a func or a driver asking more than it allows fails at once, in the
cluster's words and saying what to do, not after a grace nor retried."""

from __future__ import annotations

from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")

from kubernetes import client  # noqa: E402
from test_executor_on_model import (  # noqa: E402
    NS,
    Counts,
    driver_spec,
    executor,
    jobs,
    square,
    submit,
    wait_for,
)

import sematic_k8s as sk  # noqa: E402
from sematic_k8s.errors import ResolutionFailed  # noqa: E402
from sematic_k8s.executors.inline import InlineExecutor  # noqa: E402
from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor  # noqa: E402
from sematic_k8s.future import new_id  # noqa: E402
from sematic_k8s.launchers.kubernetes import DriverJob, launch_driver  # noqa: E402
from sematic_k8s.progress import display  # noqa: E402
from sematic_k8s.resolvers.cloud import CloudResolver  # noqa: E402
from sematic_k8s.resolvers.loop import ResolutionLoop  # noqa: E402
from sematic_k8s.specs import ResolutionSettings  # noqa: E402
from sematic_k8s.storage.local import LocalStorage  # noqa: E402
from sematic_k8s.storage.urls import storage_url  # noqa: E402
from sematic_k8s.store import sql_store  # noqa: E402

HOUR = 3600.0  # a grace no test waits out: an end must come without it


@pytest.fixture
def storage(tmp_path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


@sk.func(inline=False)
def plain(x: int) -> int:
    return x + 1


@sk.func(inline=False, memory="2Gi")
def hungry(x: int) -> int:
    return x


@sk.func(inline=False, cpu="2")
def busy() -> int:
    return 2


@sk.func
def add(a: int, b: int) -> int:
    return a + b


@sk.func
def mixed(n: int) -> int:
    return add(square(n), plain(n))


@sk.func
def greedy(n: int) -> int:
    return add(hungry(n), n)


def limit_range(api: client.ApiClient, *items: dict[str, Any], name: str = "limits") -> None:
    client.CoreV1Api(api).create_namespaced_limit_range(NS, {"metadata": {"name": name},
                                                             "spec": {"limits": list(items)}})


def loop_of(api: client.ApiClient, storage: Any, store: Any, root_id: str, **kw: Any) -> ResolutionLoop:
    return ResolutionLoop(store, storage, InlineOrRemoteExecutor(InlineExecutor(1), executor(api, storage, **kw)),
                          ResolutionSettings(root_id=root_id), kind="cloud")


def test_a_limit_ranges_defaults_let_runs_resolve_and_show_on_their_pods(cluster, api, storage, tmp_path):
    limit_range(api, {"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
                      "defaultRequest": {"cpu": "50m", "memory": "128Mi"}})
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    root = mixed(3)
    assert loop_of(api, storage, store, root.id).run(root) == 9 + 4
    assert store.get_resolution(root.id).state == "resolved"
    pods = {p["metadata"]["labels"]["sematic-k8s/func"]: p for p in cluster.list("pods", NS)}
    assert set(pods) == {"square", "plain"}, set(pods)
    worker = {p: next(c for c in pods[p]["spec"]["containers"] if c["name"] == "worker")["resources"] for p in pods}
    # plain asked nothing: both defaults; square asked cpu 100m and memory 64Mi (its limit too): the cpu limit only
    assert worker["plain"] == {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "500m",
                                                                                       "memory": "256Mi"}}
    assert worker["square"] == {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m",
                                                                                        "memory": "64Mi"}}
    assert "cpu limit for container worker" in pods["square"]["metadata"]["annotations"]["kubernetes.io/limit-ranger"]


def test_a_func_asking_more_memory_than_the_limit_range_allows_fails_at_once_in_the_clusters_words(
        cluster, api, storage, tmp_path):
    limit_range(api, {"type": "Container", "max": {"cpu": "1", "memory": "1Gi"}})
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    root = greedy(1)
    with pytest.raises(ResolutionFailed) as err:  # create_grace an hour: not waited out
        loop_of(api, storage, store, root.id, create_grace=HOUR).run(root)
    said = str(err.value)
    assert said.startswith(f"resolution {root.id} failed: hungry (run ") and "raised FailedCreate: Kubernetes could " \
        "not create the worker's pod: Kubernetes could not create the pod (Job sk-" in said, said
    assert "is forbidden: maximum memory usage per Container is 1Gi, but limit is 2Gi; ask within the namespace's " \
           f"LimitRange (the func's cpu= and memory=; `kubectl describe limitrange -n {NS}`) or have it changed" \
           in said, said
    assert "still so after" not in said and said.count("maximum memory usage") == 1, said
    [run] = [r for r in store.runs_of_root(root.id) if r.func_name == "hungry"]
    assert run.state == "failed" and run.error["type"] == "FailedCreate" and "but limit is 2Gi" in run.error["message"]
    assert store.get_resolution(root.id).state == "failed"
    assert jobs(cluster) == []  # deleted: its controller would go on trying
    assert cluster.list("pods", NS) == []


def test_a_func_asking_more_cpu_than_the_limit_ranges_default_limit_fails_at_once_saying_what_to_do(
        cluster, api, storage):
    # the executor sets no cpu limit by default: the LimitRange's max becomes the pod's limit, below its request
    limit_range(api, {"type": "Container", "max": {"cpu": "1"}})
    ex = executor(api, storage, create_grace=HOUR)
    run_id = submit(ex, busy, new_id())
    info = wait_for(ex, 1)[run_id].error_info
    ex.close()
    assert info is not None and info["type"] == "FailedCreate", info
    assert 'is invalid: spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to cpu ' \
           "limit of 1; the namespace's LimitRange gives a pod that sets no cpu limit a default one below its cpu " \
           "request: ask at most that (the func's cpu= and memory=; `kubectl describe limitrange -n runs`), or give " \
           "the executor cpu_limits=True (its cpu limit is then its request), or have the LimitRange's default " \
           "raised" in info["message"], info["message"]
    assert jobs(cluster) == []
    ex = executor(api, storage, create_grace=HOUR, cpu_limits=True)  # as it says: the max's own words then
    run_id = submit(ex, busy, new_id())
    info = wait_for(ex, 1)[run_id].error_info
    ex.close()
    assert info is not None and "maximum cpu usage per Container is 1, but limit is 2; ask within" in info["message"]


def test_a_refusal_that_may_pass_still_waits_its_grace(cluster, api, storage):
    # a missing ServiceAccount is no LimitRange's: the run is not failed before create_grace
    limit_range(api, {"type": "Container", "max": {"memory": "1Gi"}})
    ex = executor(api, storage, service_account="ghost", create_grace=0.5)
    run_id = submit(ex, square, new_id(), {"x": 2})
    info = wait_for(ex, 1)[run_id].error_info
    ex.close()
    assert info is not None and "(still so after 0.5s)" in info["message"] and "LimitRange" not in info["message"]


def test_a_driver_job_whose_pod_a_limit_range_refuses_ends_its_resolution_at_once(cluster, api, storage, tmp_path):
    limit_range(api, {"type": "Container", "max": {"memory": "256Mi"}})  # the driver's pod asks 512Mi
    root = new_id()
    spec = driver_spec(root)
    launch_driver(spec, root, {}, namespace=NS, api_client=api)
    follower = DriverJob(spec, api_client=cluster.client(), start_grace=HOUR)
    resolver = CloudResolver(server="http://127.0.0.1:9", storage=storage_url(storage), registry="127.0.0.1:5000/x",
                             executor="kubernetes", poll_interval=0.05)
    with pytest.raises(ResolutionFailed) as err:
        resolver._follow(Counts(sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")), storage, root,
                         display(lambda line: None), follower)
    follower.close()
    said = str(err.value)
    assert f"the driver Job sk-driver-{root} cannot start its driver: Kubernetes could not create its pod: Error " \
           f'creating: pods "sk-driver-{root}-' in said, said
    assert "is forbidden: maximum memory usage per Container is 256Mi, but limit is 512Mi; ask within the " \
           "namespace's LimitRange (the driver's pod asks cpu 250m and memory 512Mi unless launch_driver's " \
           f"driver_settings say cpu=, memory=; `kubectl describe limitrange -n {NS}`) or have it changed" in said, said
    cluster.wait(lambda: cluster.get("jobs.batch", NS, f"sk-driver-{root}") is None)  # it would go on trying
    limit_range(api, {"type": "Container", "max": {"memory": "1Gi"}}, name="roomier")  # not refused by this one
    again = new_id()
    launch_driver(driver_spec(again), again, {}, namespace=NS, api_client=api, driver_settings={"memory": "128Mi"})
    cluster.wait(lambda: [p for p in cluster.list("pods", NS)
                          if p["metadata"]["labels"].get("sematic-k8s/run-id") == again])  # asked within: made
