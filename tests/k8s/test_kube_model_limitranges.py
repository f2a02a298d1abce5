"""The cluster model's LimitRange (tests/support/kube_model/limitranges.py), through the official client: the object
(create, list, get, delete; its defaults and its bounds checked), the LimitRanger plugin's defaults on a new pod,
its refusals in the plugin's words, and a Job whose pods it refuses (FailedCreate, no pod, tried again)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")

from kubernetes import client  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from kube_model import Cluster, NodeSpec, Script  # noqa: E402

NS = "limited"
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "ab" * 32


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=lambda p, c: Script(run=0.05)) as c:
        c.namespace(NS)
        yield c
        assert not c.errors, c.errors


@pytest.fixture
def core(cluster: Cluster) -> Iterator[client.CoreV1Api]:
    a = cluster.client()
    yield client.CoreV1Api(a)
    a.close()


def status_of(e: ApiException) -> dict[str, Any]:
    return json.loads(e.body)


def pod(name: str, *containers: dict[str, Any], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    made = [{"name": c.get("name", f"c{i}"), "image": IMAGE,
             **({"resources": c["resources"]} if "resources" in c else {})} for i, c in enumerate(containers)]
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": made}
    if init:
        spec["initContainers"] = [{"name": c["name"], "image": IMAGE, "resources": c.get("resources") or {}}
                                  for c in init]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def limit_range(name: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": name}, "spec": {"limits": list(items)}}


def refusal(core: client.CoreV1Api, body: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(NS, body)
    return status_of(err.value)


def test_a_limit_range_is_created_listed_read_and_deleted_with_its_container_defaults(core):
    # SetDefaults_LimitRangeItem: default from max, defaultRequest from default, then from min
    made = core.create_namespaced_limit_range(NS, limit_range(
        "compute", {"type": "Container", "max": {"cpu": "2", "memory": "1Gi"}, "min": {"memory": "64Mi"},
                    "defaultRequest": {"cpu": "250m"}}))
    item = made.spec.limits[0]
    assert item.default == {"cpu": "2", "memory": "1Gi"}
    assert item.default_request == {"cpu": "250m", "memory": "1Gi"}
    assert [lr.metadata.name for lr in core.list_namespaced_limit_range(NS).items] == ["compute"]
    assert core.read_namespaced_limit_range("compute", NS).spec.limits[0].max == {"cpu": "2", "memory": "1Gi"}
    core.delete_namespaced_limit_range("compute", NS)
    assert core.list_namespaced_limit_range(NS).items == []
    core.create_namespaced_pod(NS, pod("free", {}))  # no LimitRange left: no defaults, no refusal
    assert not core.read_namespaced_pod("free", NS).spec.containers[0].resources.limits


def test_a_limit_range_whose_bounds_disagree_is_invalid(core):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_limit_range(NS, limit_range(
            "bad", {"type": "Container", "max": {"cpu": "1"}, "defaultRequest": {"cpu": "2"}},
            {"type": "Pod", "default": {"cpu": "1"}, "min": {"memory": "2Gi"}, "max": {"memory": "1Gi"}}))
    assert err.value.status == 422
    causes = [(c["field"], c["message"]) for c in status_of(err.value)["details"]["causes"]]
    assert causes == [
        ("spec.limits[0].defaultRequest[cpu]", 'Invalid value: "2": default request value 2 is greater than max '
                                               "value 1"),
        ("spec.limits[0].defaultRequest[cpu]", 'Invalid value: "2": default request value 2 is greater than default '
                                               "limit value 1"),  # the default the max gave
        ("spec.limits[1].default", "Forbidden: may not be specified when `type` is 'Pod'"),
        ("spec.limits[1].min[memory]", 'Invalid value: "2Gi": min value 2Gi is greater than max value 1Gi')]
    assert core.list_namespaced_limit_range(NS).items == []


def test_defaults_are_set_on_containers_that_name_none_and_noted(core):
    # https://kubernetes.io/docs/tasks/administer-cluster/manage-resources/memory-default-namespace/
    core.create_namespaced_limit_range(NS, limit_range(
        "defaults", {"type": "Container", "default": {"cpu": "1", "memory": "512Mi"},
                     "defaultRequest": {"cpu": "500m", "memory": "256Mi"}}))
    made = core.create_namespaced_pod(NS, pod(
        "p", {"name": "bare"}, {"name": "asks", "resources": {"requests": {"cpu": "100m"}}},
        {"name": "limited", "resources": {"limits": {"memory": "1Gi"}}}))
    bare, asks, limited = made.spec.containers
    assert (bare.resources.requests, bare.resources.limits) == ({"cpu": "500m", "memory": "256Mi"},
                                                               {"cpu": "1", "memory": "512Mi"})
    assert (asks.resources.requests, asks.resources.limits) == ({"cpu": "100m", "memory": "256Mi"},
                                                               {"cpu": "1", "memory": "512Mi"})
    # its limit was its request before the plugin ran (the API's own defaulting): the default request is not set
    assert (limited.resources.requests, limited.resources.limits) == ({"cpu": "500m", "memory": "1Gi"},
                                                                     {"cpu": "1", "memory": "1Gi"})
    assert made.metadata.annotations["kubernetes.io/limit-ranger"] == (
        "LimitRanger plugin set: cpu, memory request for container bare; cpu, memory limit for container bare; "
        "memory request for container asks; cpu, memory limit for container asks; cpu request for container limited; "
        "cpu limit for container limited")
    assert made.status.qos_class == "Burstable"


def test_a_request_over_the_default_limit_makes_the_pod_invalid(core):
    # the plugin does not check its defaults: the pod's own validation meets them (limit-range docs' example)
    core.create_namespaced_limit_range(NS, limit_range(
        "cpu", {"type": "Container", "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "500m"}}))
    status = refusal(core, pod("greedy", {"name": "w", "resources": {"requests": {"cpu": "700m"}}}))
    assert status["code"] == 422 and status["message"] == (
        'Pod "greedy" is invalid: spec.containers[0].resources.requests: Invalid value: "700m": must be less than '
        "or equal to cpu limit of 500m")


def test_pods_outside_the_bounds_are_refused_in_the_plugins_words(core):
    core.create_namespaced_limit_range(NS, limit_range(
        "bounds", {"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "64Mi"},
                   "default": {"memory": "128Mi"}, "maxLimitRequestRatio": {"memory": "2"}},
        {"type": "Pod", "max": {"cpu": "1500m"}}))
    status = refusal(core, pod("big", {"name": "w", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}}))
    assert status["code"] == 403 and status["reason"] == "Forbidden"
    assert status["message"] == ('pods "big" is forbidden: [maximum cpu usage per Container is 1, but limit is 2, '
                                 "maximum cpu usage per Pod is 1500m, but limit is 2]")
    status = refusal(core, pod("small", {"name": "w", "resources": {"requests": {"memory": "32Mi"}}}))
    assert status["message"] == ('pods "small" is forbidden: [minimum memory usage per Container is 64Mi, but request '
                                 "is 32Mi, memory max limit to request ratio per Container is 2, but provided ratio "
                                 "is 4.000000]")
    status = refusal(core, pod("two", {"name": "a", "resources": {"limits": {"cpu": "800m"}}},
                               {"name": "b", "resources": {"limits": {"cpu": "800m"}}}))
    assert status["message"] == 'pods "two" is forbidden: maximum cpu usage per Pod is 1500m, but limit is 1600m'
    status = refusal(core, pod("init", {"name": "a", "resources": {"limits": {"cpu": "500m"}}},
                               init=[{"name": "setup", "resources": {"limits": {"cpu": "2"}}}]))
    assert "maximum cpu usage per Container is 1, but limit is 2" in status["message"]
    made = core.create_namespaced_pod(NS, pod("fits", {"name": "w", "resources": {"requests": {"cpu": "500m"}}}))
    assert made.spec.containers[0].resources.limits == {"cpu": "1", "memory": "128Mi"}  # max's default
    assert [p.metadata.name for p in core.list_namespaced_pod(NS).items] == ["fits"]


def test_the_defaults_count_for_a_resource_quota(cluster, core):
    # a namespace with a compute quota takes pods that name no requests when a LimitRange gives them some
    core.create_namespaced_resource_quota(NS, {"metadata": {"name": "q"}, "spec": {"hard": {"requests.cpu": "1"}}})
    assert "must specify requests.cpu" in refusal(core, pod("before", {"name": "w"}))["message"]
    core.create_namespaced_limit_range(NS, limit_range("d", {"type": "Container", "defaultRequest": {"cpu": "600m"}}))
    core.create_namespaced_pod(NS, pod("first", {"name": "w"}))
    assert "exceeded quota: q, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1" in \
        refusal(core, pod("second", {"name": "w"}))["message"]


def test_a_job_whose_pods_it_refuses_reports_failed_create_and_has_no_pod(cluster, core):
    core.create_namespaced_limit_range(NS, limit_range("cap", {"type": "Container", "max": {"memory": "256Mi"}}))
    body = pod("x", {"name": "w", "resources": {"requests": {"memory": "512Mi"}, "limits": {"memory": "512Mi"}}})
    with cluster.client() as admin:
        client.BatchV1Api(admin).create_namespaced_job(NS, {"apiVersion": "batch/v1", "kind": "Job",
                                                            "metadata": {"name": "refused"},
                                                            "spec": {"backoffLimit": 0,
                                                                     "template": {"spec": body["spec"]}}})
    events = cluster.wait(lambda: len([e for e in cluster.events(NS, "refused") if e["reason"] == "FailedCreate"])
                          >= 2 and cluster.events(NS, "refused"))
    failed = [e for e in events if e["reason"] == "FailedCreate"]
    assert failed[0]["type"] == "Warning" and failed[0]["message"].startswith('Error creating: pods "refused-')
    assert failed[0]["message"].endswith("is forbidden: maximum memory usage per Container is 256Mi, but limit is "
                                         "512Mi")
    assert core.list_namespaced_pod(NS).items == []  # no pod, the controller tries again
