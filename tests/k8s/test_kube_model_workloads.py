"""The cluster model's Job controller, scheduler and (simulated) kubelet (tests/support/kube_model), driven through the
official client: Job conditions and counters, backoffLimit, podFailurePolicy, deadlines, TTL, finite node
capacity, kubelet admission, image pulls, container configuration, volumes, sidecars, evictions, logs."""

from __future__ import annotations

import http.client
import http.server
import json
import re
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")

from kubernetes import client  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from kube_model import Cluster, NodeSpec, Script, SimContext  # noqa: E402
from projects import forget  # noqa: E402
from sematic_k8s.storage.urls import storage_from_url  # noqa: E402

NS = "work"
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "ab" * 32
SUFFIX = re.compile(r"^[bcdfghjklmnpqrstvwxz2456789]{5}$")


def by_name(name: str, scripts: dict[str, Script], default: Script | None = None) -> Any:
    """A behaviour: the Script of the first key ``<pod name prefix>[:<container>]`` that matches."""
    def behave(pod: dict[str, Any], container: dict[str, Any]) -> Script:
        for key, script in scripts.items():
            prefix, _, wanted = key.partition(":")
            if pod["metadata"]["name"].startswith(prefix) and wanted in ("", container["name"]):
                return script
        return default or Script(run=0.05)
    return behave


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster([NodeSpec("node-1", runtime="sim")]) as c:
        c.namespace(NS)
        yield c
        assert not c.errors, c.errors


def job(name: str, *, containers: list[dict[str, Any]] | None = None, pod: dict[str, Any] | None = None,
        **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, **spec, "template": {"metadata": {"labels": {"app": name}}, "spec": {
                "restartPolicy": "Never", "containers": containers or [{"name": "main", "image": IMAGE}],
                **(pod or {})}}}}


def conditions(j: Any) -> list[tuple[str, str | None]]:
    return [(c.type, c.reason) for c in j.status.conditions or []]


def job_done(api: client.ApiClient, name: str) -> Any:
    j = client.BatchV1Api(api).read_namespaced_job(name, NS)
    return j if any(t in ("Complete", "Failed") for t, _ in conditions(j)) else None


def pods_of(api: client.ApiClient, name: str) -> list[Any]:
    return client.CoreV1Api(api).list_namespaced_pod(NS, label_selector=f"batch.kubernetes.io/job-name={name}").items


def waiting_reasons(cluster: Cluster, pod: str, container: str = "main") -> list[str]:
    out = []
    for version in cluster.history("pods", NS, pod):
        for cs in ((version.get("status") or {}).get("containerStatuses") or []):
            reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
            if cs["name"] == container and reason and (not out or out[-1] != reason):
                out.append(reason)
    return out


# -- the Job controller --------------------------------------------------------------------------------------


def test_a_job_creates_an_owned_pod_and_completes(cluster, api):
    # https://kubernetes.io/docs/concepts/workloads/controllers/job/#job-termination-and-cleanup
    batch = client.BatchV1Api(api)
    made = batch.create_namespaced_job(NS, job("ok"))
    done = cluster.wait(lambda: job_done(api, "ok"))
    assert conditions(done) == [("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "CompletionsReached")]
    assert done.status.succeeded == 1 and not done.status.failed and not done.status.active
    assert done.status.start_time <= done.status.completion_time
    [pod] = pods_of(api, "ok")
    prefix, tail = pod.metadata.name.rsplit("-", 1)
    assert prefix == "ok" and SUFFIX.match(tail)
    [ref] = pod.metadata.owner_references
    assert (ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == (
        "Job", "ok", made.metadata.uid, True, True)
    assert pod.metadata.labels["controller-uid"] == made.metadata.uid and pod.metadata.labels["app"] == "ok"
    assert not pod.metadata.finalizers  # batch.kubernetes.io/job-tracking, removed once counted
    assert "batch.kubernetes.io/job-tracking" in cluster.history("pods", NS, pod.metadata.name)[0]["metadata"][
        "finalizers"]
    reasons = [(e["reason"], e["message"]) for e in cluster.events(NS, "ok")]
    assert reasons == [("SuccessfulCreate", f"Created pod: {pod.metadata.name}"), ("Completed", "Job completed")]


def test_failed_pods_count_against_backoff_limit(cluster, api):
    cluster.behaviour = by_name("bad", {"bad": Script(run=0.02, exit_code=2)})
    client.BatchV1Api(api).create_namespaced_job(NS, job("bad", backoffLimit=2))
    done = cluster.wait(lambda: job_done(api, "bad"))
    assert conditions(done) == [("FailureTarget", "BackoffLimitExceeded"), ("Failed", "BackoffLimitExceeded")]
    assert done.status.conditions[1].message == "Job has reached the specified backoff limit"
    assert done.status.failed == 3 and len(pods_of(api, "bad")) == 3
    assert cluster.events(NS, "bad")[-1]["reason"] == "BackoffLimitExceeded"
    assert cluster.events(NS, "bad")[-1]["type"] == "Warning"


def test_pod_failure_policy_fail_job_on_an_exit_code(cluster, api):
    # https://kubernetes.io/docs/tasks/job/pod-failure-policy/
    cluster.behaviour = by_name("pfp", {"pfp": Script(run=0.02, exit_code=1)})
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In",
                                                               "values": [1]}}]}
    client.BatchV1Api(api).create_namespaced_job(NS, job("pfp", backoffLimit=3, podFailurePolicy=policy))
    done = cluster.wait(lambda: job_done(api, "pfp"))
    [pod] = pods_of(api, "pfp")
    assert conditions(done) == [("FailureTarget", "PodFailurePolicy"), ("Failed", "PodFailurePolicy")]
    assert done.status.conditions[1].message == (
        f"Container main for pod {NS}/{pod.metadata.name} failed with exit code 1 matching FailJob rule at index 0")


def test_an_eviction_counts_against_backoff_limit_unless_a_rule_ignores_it(cluster, api):
    # https://kubernetes.io/docs/tasks/job/pod-failure-policy/#using-pod-failure-policy-to-ignore-pod-disruptions
    batch = client.BatchV1Api(api)
    cluster.behaviour = by_name("", {}, Script(forever=True))
    batch.create_namespaced_job(NS, job("counted"))
    pod = cluster.wait(lambda: [p for p in pods_of(api, "counted") if p.status.phase == "Running"])[0]
    cluster.evict(NS, pod.metadata.name)
    evicted = client.CoreV1Api(api).read_namespaced_pod(pod.metadata.name, NS)
    assert (evicted.status.phase, evicted.status.reason) == ("Failed", "Evicted")
    assert evicted.status.message.startswith("The node was low on resource: memory.")
    [disruption] = [c for c in evicted.status.conditions if c.type == "DisruptionTarget"]
    assert (disruption.status, disruption.reason) == ("True", "TerminationByKubelet")
    assert evicted.status.container_statuses[0].state.terminated.exit_code == 137
    reasons = [e["reason"] for e in cluster.events(NS, pod.metadata.name)]
    assert reasons[-2:] == ["Evicted", "Killing"] and reasons[0] == "Scheduled"
    done = cluster.wait(lambda: job_done(api, "counted"))
    assert conditions(done)[-1] == ("Failed", "BackoffLimitExceeded")

    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    batch.create_namespaced_job(NS, job("ignored", podFailurePolicy=policy))
    pod = cluster.wait(lambda: [p for p in pods_of(api, "ignored") if p.status.phase == "Running"])[0]
    cluster.evict(NS, pod.metadata.name)
    cluster.wait(lambda: len([p for p in pods_of(api, "ignored") if p.status.phase == "Running"]) == 1
                 and len(pods_of(api, "ignored")) == 2)
    j = batch.read_namespaced_job("ignored", NS)
    assert not j.status.failed and j.status.active == 1 and not j.status.conditions


def test_active_deadline_counts_from_the_jobs_start_time(cluster, api):
    cluster.behaviour = by_name("", {}, Script(forever=True))
    client.BatchV1Api(api).create_namespaced_job(NS, job("late", activeDeadlineSeconds=1))
    done = cluster.wait(lambda: job_done(api, "late"))
    assert conditions(done) == [("FailureTarget", "DeadlineExceeded"), ("Failed", "DeadlineExceeded")]
    assert done.status.conditions[1].message == "Job was active longer than specified deadline"
    cluster.wait(lambda: not pods_of(api, "late"))  # deleted by the controller: killed, then gone
    events = cluster.events(NS, "late")
    assert [e["reason"] for e in events] == ["SuccessfulCreate", "SuccessfulDelete", "DeadlineExceeded"]
    pod = events[0]["message"].removeprefix("Created pod: ")
    assert cluster.history("pods", NS, pod)[-1]["status"]["phase"] == "Failed"


def test_a_failing_job_counts_its_unfinished_pods_failed_at_once_and_frees_their_finalizers(cluster, api):
    # pkg/controller/job/job_controller.go, trackJobStatusAndRemoveFinalizers: once the Job is failing
    # (FailureTarget), every pod not yet finished is counted failed and its tracking finalizer removed
    # (canRemoveFinalizer), even where only Failed pods count (podFailurePolicy: podReplacementPolicy Failed); the
    # Failed condition waits for them to terminate. Its pod ignores SIGTERM: Terminating for its grace period
    cluster.behaviour = by_name("", {}, Script(forever=True, ignore_sigterm=True))
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(NS, job("slow-stop", activeDeadlineSeconds=1, podFailurePolicy=policy,
                                        pod={"terminationGracePeriodSeconds": 60}))
    j = cluster.wait(lambda: (j := batch.read_namespaced_job("slow-stop", NS)).status.terminating and j)
    assert j.spec.pod_replacement_policy == "Failed"
    assert conditions(j) == [("FailureTarget", "DeadlineExceeded")]
    j = cluster.wait(lambda: (j := batch.read_namespaced_job("slow-stop", NS)).status.failed and j, timeout=10,
                     message="the terminating pod counted failed")
    assert (j.status.failed, j.status.terminating, j.status.active) == (1, 1, None)
    [pod] = pods_of(api, "slow-stop")
    assert pod.metadata.deletion_timestamp and pod.status.phase == "Running"
    assert "batch.kubernetes.io/job-tracking" not in (pod.metadata.finalizers or [])
    assert conditions(batch.read_namespaced_job("slow-stop", NS)) == [("FailureTarget", "DeadlineExceeded")]


def test_a_pods_active_deadline_includes_the_image_pull(cluster, api):
    # https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#lifecycle (activeDeadlineSeconds
    # is relative to StartTime, which the kubelet sets before pulling images)
    cluster.sim_images.pull_seconds = 1.2
    cluster.behaviour = by_name("", {}, Script(run=0.3))
    client.BatchV1Api(api).create_namespaced_job(NS, job("pull", pod={"activeDeadlineSeconds": 1}))
    pod = cluster.wait(lambda: [p for p in pods_of(api, "pull") if p.status.phase == "Failed"])[0]
    assert (pod.status.reason, pod.status.message) == (
        "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
    assert waiting_reasons(cluster, pod.metadata.name) == ["ContainerCreating"]  # it never even started


def test_ttl_after_finished_deletes_the_job_and_its_pods(cluster, api):
    # https://kubernetes.io/docs/concepts/workloads/controllers/ttlafterfinished/
    client.BatchV1Api(api).create_namespaced_job(NS, job("short", ttlSecondsAfterFinished=1))
    cluster.wait(lambda: job_done(api, "short"))
    pod = pods_of(api, "short")[0].metadata.name
    cluster.wait(lambda: cluster.get("jobs.batch", NS, "short") is None and cluster.get("pods", NS, pod) is None)


# -- the scheduler -------------------------------------------------------------------------------------------


def test_pods_wait_unschedulable_until_capacity_frees(cluster, api):
    # https://kubernetes.io/docs/concepts/scheduling-eviction/kube-scheduler/
    cluster.update_node("node-1", pods=2)
    cluster.behaviour = by_name("", {}, Script(run=1.0))
    batch = client.BatchV1Api(api)
    for i in range(4):
        batch.create_namespaced_job(NS, job(f"cap-{i}"))
    pending = cluster.wait(lambda: [p for p in client.CoreV1Api(api).list_namespaced_pod(NS).items
                                    if any(c.reason == "Unschedulable" for c in p.status.conditions or [])])
    cond = next(c for c in pending[0].status.conditions if c.type == "PodScheduled")
    assert (cond.status, cond.message) == ("False", "0/1 nodes are available: 1 Too many pods. preemption: 0/1 nodes "
                                                    "are available: 1 No preemption victims found for incoming pod.")
    events = [e for e in cluster.events(NS, pending[0].metadata.name) if e["reason"] == "FailedScheduling"]
    assert events[0]["type"] == "Warning" and events[0]["reportingComponent"] == "default-scheduler"
    for i in range(4):
        assert conditions(cluster.wait(lambda i=i: job_done(api, f"cap-{i}")))[-1] == ("Complete", "CompletionsReached")


def test_unschedulable_reasons_and_a_node_scale_up(cluster, api):
    core = client.CoreV1Api(api)
    cluster.update_node("node-1", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    cluster.add_node(NodeSpec("node-2", runtime="sim", cpu="1", labels={"pool": "small"}))
    big = {"name": "main", "image": IMAGE, "resources": {"requests": {"cpu": "2"}}}
    core.create_namespaced_pod(NS, {"metadata": {"name": "big"}, "spec": {"restartPolicy": "Never",
                                                                          "containers": [big]}})
    msg = cluster.wait(lambda: next((c.message for c in core.read_namespaced_pod("big", NS).status.conditions or []
                                     if c.reason == "Unschedulable"), None))
    assert msg == ("0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: gpu}. "
                   "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption "
                   "is not helpful for scheduling.")
    cluster.add_node(NodeSpec("node-3", runtime="sim", cpu="4"))  # what an autoscaler does
    cluster.wait(lambda: core.read_namespaced_pod("big", NS).spec.node_name == "node-3")
    core.create_namespaced_pod(NS, {"metadata": {"name": "picky"}, "spec": {
        "nodeSelector": {"pool": "gpu"}, "containers": [{"name": "main", "image": IMAGE}]}})
    msg = cluster.wait(lambda: next((c.message for c in core.read_namespaced_pod("picky", NS).status.conditions or []
                                     if c.reason == "Unschedulable"), None))
    assert "2 node(s) didn't match Pod's node affinity/selector" in msg


def test_the_autoscaler_adds_a_node_for_pods_that_would_fit_one(cluster, api):
    core = client.CoreV1Api(api)
    cluster.autoscale(NodeSpec("gpu", runtime="sim", extra={"nvidia.com/gpu": "1"}, labels={"pool": "gpu"}),
                      max_nodes=1)
    gpu = {"name": "main", "image": IMAGE, "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    core.create_namespaced_pod(NS, {"metadata": {"name": "train"}, "spec": {"restartPolicy": "Never",
                                                                            "containers": [gpu]}})
    cluster.wait(lambda: core.read_namespaced_pod("train", NS).spec.node_name == "gpu-1")
    # listed by resourceVersion, FailedScheduling may come after TriggeredScaleUp: its series is written at a repeat
    reasons = [e["reason"] for e in cluster.events(NS, "train")]
    assert {"FailedScheduling", "TriggeredScaleUp", "Scheduled"} <= set(reasons), reasons


# -- the kubelet ---------------------------------------------------------------------------------------------


def test_kubelet_admission_rejects_pods_that_do_not_fit_the_node(cluster, api):
    # https://kubernetes.io/docs/concepts/scheduling-eviction/node-pressure-eviction/ and the kubelet's admission
    core = client.CoreV1Api(api)
    cluster.update_node("node-1", reserved={"cpu": "3500m"})  # usage the scheduler does not know of
    spec = {"restartPolicy": "Never", "containers": [{"name": "main", "image": IMAGE,
                                                      "resources": {"requests": {"cpu": "1"}}}]}
    core.create_namespaced_pod(NS, {"metadata": {"name": "squeezed"}, "spec": spec})
    pod = cluster.wait(lambda: (p := core.read_namespaced_pod("squeezed", NS)).status.phase == "Failed" and p)
    assert (pod.status.reason, pod.status.message) == (
        "OutOfcpu", "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000, used: 3500, "
                    "capacity: 4000")
    assert not pod.status.container_statuses
    core.create_namespaced_pod(NS, {"metadata": {"name": "misplaced"}, "spec": {
        "nodeName": "node-1", "nodeSelector": {"pool": "gpu"}, "containers": [{"name": "main", "image": IMAGE}]}})
    pod = cluster.wait(lambda: (p := core.read_namespaced_pod("misplaced", NS)).status.phase == "Failed" and p)
    assert (pod.status.reason, pod.status.message) == ("NodeAffinity", "Pod was rejected: Predicate NodeAffinity "
                                                                       "failed: node(s) didn't match Pod's node "
                                                                       "affinity/selector")


def test_kubelet_admission_rejects_a_pod_that_does_not_tolerate_a_no_execute_taint_of_its_node(cluster, api):
    # pkg/kubelet/lifecycle/predicate.go, generalFilter: after the scheduler's checks, the kubelet refuses a pod that
    # does not tolerate a NoExecute taint of its node (one put there as the scheduler bound the pod, its cache not
    # updated yet; or a pod that names its node itself): phase Failed, reason TaintToleration, a Warning Event
    core = client.CoreV1Api(api)
    draining = {"key": "example.com/draining", "value": "true", "effect": "NoExecute"}
    cluster.update_node("node-1", late_taints=[draining])  # the scheduler still binds pods to node-1
    core.create_namespaced_pod(NS, {"metadata": {"name": "raced"}, "spec": {
        "restartPolicy": "Never", "containers": [{"name": "main", "image": IMAGE}]}})
    pod = cluster.wait(lambda: (p := core.read_namespaced_pod("raced", NS)).status.phase == "Failed" and p)
    rejected = "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"
    assert (pod.spec.node_name, pod.status.reason, pod.status.message) == (
        "node-1", "TaintToleration", f"Pod was rejected: {rejected}")
    assert not pod.status.container_statuses and not pod.status.start_time
    assert [(e["type"], e["message"]) for e in cluster.events(NS) if e["reason"] == "TaintToleration"] == [
        ("Warning", rejected)]
    core.create_namespaced_pod(NS, {"metadata": {"name": "tolerant"}, "spec": {
        "restartPolicy": "Never", "tolerations": [{"key": "example.com/draining", "operator": "Exists"}],
        "containers": [{"name": "main", "image": IMAGE}]}})
    cluster.wait(lambda: core.read_namespaced_pod("tolerant", NS).status.phase == "Succeeded")
    cluster.update_node("node-1", late_taints=[], taints=[draining])  # seen by all: named by the pod itself
    core.create_namespaced_pod(NS, {"metadata": {"name": "pinned"}, "spec": {
        "nodeName": "node-1", "restartPolicy": "Never", "containers": [{"name": "main", "image": IMAGE}]}})
    pod = cluster.wait(lambda: (p := core.read_namespaced_pod("pinned", NS)).status.phase == "Failed" and p)
    assert (pod.status.reason, pod.status.message) == ("TaintToleration", f"Pod was rejected: {rejected}")
    cluster.update_node("node-1", taints=[{**draining, "effect": "NoSchedule"}])  # the kubelet checks NoExecute only
    core.create_namespaced_pod(NS, {"metadata": {"name": "pinned-too"}, "spec": {
        "nodeName": "node-1", "restartPolicy": "Never", "containers": [{"name": "main", "image": IMAGE}]}})
    cluster.wait(lambda: core.read_namespaced_pod("pinned-too", NS).status.phase == "Succeeded")


def test_memory_in_fractions_of_a_byte_is_only_a_warning_and_the_runtime_refuses_the_container(cluster, api):
    # https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/ ("512m" of memory is 0.512
    # bytes): the API server takes it with a warning (pkg/api/pod/warnings.go); no runtime starts a container in
    # a byte (Docker: at least 6MB), so the kubelet reports CreateContainerError and tries again
    core = client.CoreV1Api(api)
    spec = {"restartPolicy": "Never", "containers": [{"name": "main", "image": IMAGE,
                                                      "resources": {"limits": {"memory": "512m"}}}]}
    _, code, headers = core.create_namespaced_pod_with_http_info(NS, {"metadata": {"name": "tiny"}, "spec": spec})
    assert code == 201 and "spec.containers[0].resources.limits[memory]: fractional byte value" in headers["Warning"]
    assert '\\"512m\\" is invalid, must be an integer"' in headers["Warning"]  # quotes escaped in the header
    cluster.wait(lambda: "CreateContainerError" in waiting_reasons(cluster, "tiny"))
    cs = core.read_namespaced_pod("tiny", NS).status.container_statuses[0]
    assert cs.state.waiting.message == "Error response from daemon: Minimum memory limit allowed is 6MB"


def test_a_missing_image_alternates_err_image_pull_and_image_pull_backoff(cluster, api):
    # https://kubernetes.io/docs/concepts/containers/images/#imagepullbackoff
    cluster.sim_images.missing.add(IMAGE)
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, {"metadata": {"name": "nopull"}, "spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": IMAGE}]}})
    cluster.wait(lambda: waiting_reasons(cluster, "nopull")[:5] == [
        "ContainerCreating", "ErrImagePull", "ImagePullBackOff", "ErrImagePull", "ImagePullBackOff"])
    cs = core.read_namespaced_pod("nopull", NS).status.container_statuses[0]
    assert cs.state.waiting.reason in ("ErrImagePull", "ImagePullBackOff") and cs.image_id == ""
    messages = [e["message"] for e in cluster.events(NS, "nopull")]
    assert f'Pulling image "{IMAGE}"' in messages and f'Back-off pulling image "{IMAGE}"' in messages
    assert any(m.startswith(f'Failed to pull image "{IMAGE}": rpc error: code = NotFound') for m in messages)
    cluster.sim_images.missing.clear()
    cluster.wait(lambda: core.read_namespaced_pod("nopull", NS).status.phase == "Succeeded")


def test_container_config_errors_and_missing_volumes_wait_for_what_is_missing(cluster, api):
    # https://kubernetes.io/docs/concepts/configuration/secret/#using-secrets-as-environment-variables
    core = client.CoreV1Api(api)
    env = [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}}}]
    core.create_namespaced_pod(NS, {"metadata": {"name": "envy"}, "spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": IMAGE, "env": env}]}})
    cs = cluster.wait(lambda: (p := core.read_namespaced_pod("envy", NS)).status.container_statuses and p.status
                      .container_statuses[0].state.waiting and p.status.container_statuses[0].state.waiting.reason ==
                      "CreateContainerConfigError" and p.status.container_statuses[0])
    assert cs.state.waiting.message == 'secret "s3" not found'
    core.create_namespaced_secret(NS, {"metadata": {"name": "s3"}, "stringData": {"OTHER": "x"}})
    cluster.wait(lambda: core.read_namespaced_pod("envy", NS).status.container_statuses[0].state.waiting
                 .message == f"couldn't find key AWS_SECRET_ACCESS_KEY in Secret {NS}/s3")
    core.patch_namespaced_secret("s3", NS, {"stringData": {"AWS_SECRET_ACCESS_KEY": "k"}})
    cluster.wait(lambda: core.read_namespaced_pod("envy", NS).status.phase == "Succeeded")
    # https://kubernetes.io/docs/concepts/storage/volumes/#secret
    core.create_namespaced_pod(NS, {"metadata": {"name": "mounty"}, "spec": {
        "restartPolicy": "Never", "volumes": [{"name": "creds", "secret": {"secretName": "later"}}],
        "containers": [{"name": "main", "image": IMAGE, "volumeMounts": [{"name": "creds", "mountPath": "/c"}]}]}})
    event = cluster.wait(lambda: [e for e in cluster.events(NS, "mounty") if e["reason"] == "FailedMount"])[0]
    assert event["message"] == 'MountVolume.SetUp failed for volume "creds" : secret "later" not found'
    assert core.read_namespaced_pod("mounty", NS).status.container_statuses[0].state.waiting.reason == \
        "ContainerCreating"
    core.create_namespaced_secret(NS, {"metadata": {"name": "later"}, "stringData": {"a": "b"}})
    cluster.wait(lambda: core.read_namespaced_pod("mounty", NS).status.phase == "Succeeded")


def test_a_broken_sandbox_keeps_pods_creating(cluster, api):
    core = client.CoreV1Api(api)
    cluster.update_node("node-1", sandbox_error="rpc error: code = Unknown desc = failed to setup network")
    core.create_namespaced_pod(NS, {"metadata": {"name": "sandy"}, "spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": IMAGE}]}})
    event = cluster.wait(lambda: [e for e in cluster.events(NS, "sandy") if e["reason"] == "FailedCreatePodSandBox"])
    assert event[0]["message"] == "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup " \
                                  "network"
    assert core.read_namespaced_pod("sandy", NS).status.phase == "Pending"
    cluster.update_node("node-1", sandbox_error=None)
    cluster.wait(lambda: core.read_namespaced_pod("sandy", NS).status.phase == "Succeeded")


def test_sidecars_and_container_statuses_sorted_by_name(cluster, api):
    # https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/
    core = client.CoreV1Api(api)
    cluster.behaviour = by_name("", {"native:proxy": Script(forever=True), "classic:istio-proxy": Script(forever=True),
                                     "classic:worker": Script(run=0.05, exit_code=137, oom=True)})
    core.create_namespaced_pod(NS, {"metadata": {"name": "native"}, "spec": {
        "restartPolicy": "Never", "initContainers": [{"name": "proxy", "image": IMAGE, "restartPolicy": "Always"}],
        "containers": [{"name": "worker", "image": IMAGE}]}})
    pod = cluster.wait(lambda: (p := core.read_namespaced_pod("native", NS)).status.phase == "Succeeded" and p)
    [sidecar] = pod.status.init_container_statuses
    assert sidecar.name == "proxy" and sidecar.state.terminated.exit_code == 143  # stopped after the worker ended
    core.create_namespaced_pod(NS, {"metadata": {"name": "classic"}, "spec": {
        "restartPolicy": "Never", "containers": [{"name": "worker", "image": IMAGE},
                                                 {"name": "istio-proxy", "image": IMAGE}]}})
    pod = cluster.wait(lambda: (p := core.read_namespaced_pod("classic", NS)).status.container_statuses
                       and p.status.container_statuses[1].state.terminated and p)
    first, second = pod.status.container_statuses
    assert (first.name, second.name) == ("istio-proxy", "worker")  # sorted by name, not spec order
    assert first.state.running and (second.state.terminated.reason, second.state.terminated.exit_code) == (
        "OOMKilled", 137)
    assert pod.status.phase == "Running"  # a classic sidecar never exits: the pod never ends


def test_run_as_non_root_with_an_image_that_runs_as_root(cluster, api):
    # https://kubernetes.io/docs/tasks/configure-pod-container/security-context/
    core = client.CoreV1Api(api)
    sc = {"runAsNonRoot": True}
    core.create_namespaced_pod(NS, {"metadata": {"name": "rooty"}, "spec": {"restartPolicy": "Never",
                                    "securityContext": sc, "containers": [{"name": "main", "image": IMAGE}]}})
    cs = cluster.wait(lambda: (p := core.read_namespaced_pod("rooty", NS)).status.container_statuses and (
        p.status.container_statuses[0].state.waiting or None) and p.status.container_statuses[0].state.waiting.reason
                      == "CreateContainerConfigError" and p.status.container_statuses[0])
    uid = core.read_namespaced_pod("rooty", NS).metadata.uid
    assert cs.state.waiting.message == (f'container has runAsNonRoot and image will run as root (pod: '
                                        f'"rooty_{NS}({uid})", container: main)')
    other = "127.0.0.1:5000/nonroot:1"
    cluster.sim_images.users[other] = "1000"
    core.create_namespaced_pod(NS, {"metadata": {"name": "fine"}, "spec": {"restartPolicy": "Never",
                                    "securityContext": sc, "containers": [{"name": "main", "image": other}]}})
    cluster.wait(lambda: core.read_namespaced_pod("fine", NS).status.phase == "Succeeded")


def test_an_image_for_another_architecture_exits_1(cluster, api):
    cluster.add_node(NodeSpec("arm", runtime="sim", arch="arm64"))
    cluster.sim_images.arch[IMAGE] = "amd64"
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, {"metadata": {"name": "arm"}, "spec": {"restartPolicy": "Never", "nodeSelector": {
        "kubernetes.io/arch": "arm64"}, "containers": [{"name": "main", "image": IMAGE, "command": ["python"]}]}})
    pod = cluster.wait(lambda: (p := core.read_namespaced_pod("arm", NS)).status.phase == "Failed" and p)
    assert pod.status.container_statuses[0].state.terminated.exit_code == 1
    assert core.read_namespaced_pod_log("arm", NS) == "exec python: exec format error\n"


def test_logs_tail_container_choice_previous_and_termination_message(cluster, api):
    # https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#read-log-of-the-specified-pod
    core = client.CoreV1Api(api)
    text = "".join(f"line {i}\n" for i in range(100))
    cluster.behaviour = by_name("", {"two:a": Script(run=0.05, logs=text, exit_code=3)})
    core.create_namespaced_pod(NS, {"metadata": {"name": "two"}, "spec": {"restartPolicy": "Never", "containers": [
        {"name": "a", "image": IMAGE, "terminationMessagePolicy": "FallbackToLogsOnError"},
        {"name": "b", "image": IMAGE}]}})
    pod = cluster.wait(lambda: (p := core.read_namespaced_pod("two", NS)).status.phase == "Failed" and p)
    assert core.read_namespaced_pod_log("two", NS, container="a", tail_lines=2) == "line 98\nline 99\n"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("two", NS)
    assert err.value.status == 400 and json.loads(err.value.body)["message"] == (
        "a container name must be specified for pod two, choose one of: [a b]")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("two", NS, container="a", previous=True)
    assert json.loads(err.value.body)["message"] == 'previous terminated container "a" in pod "two" not found'
    message = pod.status.container_statuses[0].state.terminated.message
    assert message.endswith("line 99\n") and message.startswith("line 20\n")  # the last 80 lines
    cluster.sim_images.missing.add("127.0.0.1:5000/none:1")
    core.create_namespaced_pod(NS, {"metadata": {"name": "nolog"}, "spec": {"containers": [
        {"name": "main", "image": "127.0.0.1:5000/none:1"}]}})
    cluster.wait(lambda: core.read_namespaced_pod("nolog", NS).status.container_statuses)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("nolog", NS)
    assert re.fullmatch(r'container "main" in pod "nolog" is waiting to start: '
                        r'(ContainerCreating|ErrImagePull|ImagePullBackOff)', json.loads(err.value.body)["message"])


def test_crash_loop_and_previous_logs_with_restart_on_failure(cluster, api):
    core = client.CoreV1Api(api)
    cluster.behaviour = by_name("", {}, Script(run=0.02, logs="oops\n", exit_code=1))
    core.create_namespaced_pod(NS, {"metadata": {"name": "loop"}, "spec": {"restartPolicy": "OnFailure",
                                                                           "containers": [{"name": "main",
                                                                                           "image": IMAGE}]}})
    cs = cluster.wait(lambda: (p := core.read_namespaced_pod("loop", NS)).status.container_statuses and
                      p.status.container_statuses[0].restart_count >= 2 and p.status.container_statuses[0])
    assert cs.last_state.terminated.exit_code == 1
    assert "CrashLoopBackOff" in waiting_reasons(cluster, "loop")
    assert core.read_namespaced_pod_log("loop", NS, previous=True) == "oops\n"


def test_simulated_containers_can_run_the_real_command_or_a_function(cluster, api):
    core = client.CoreV1Api(api)

    def func(ctx: SimContext) -> int:
        ctx.log(f"in-process {ctx.env['GREETING']} {ctx.pod['metadata']['name']}")
        return 4
    cluster.behaviour = by_name("", {"proc": Script(process=True), "func": Script(func=func)})
    env = [{"name": "GREETING", "value": "hello"}, {"name": "POD", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.name"}}}]
    code = "import os, sys; print(os.environ['GREETING'], os.environ['POD'], sys.version_info[0]); sys.exit(5)"
    core.create_namespaced_pod(NS, {"metadata": {"name": "proc"}, "spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": IMAGE, "command": ["python", "-c", code], "env": env}]}})
    core.create_namespaced_pod(NS, {"metadata": {"name": "func"}, "spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": IMAGE, "env": env}]}})
    for name, exit_code, log in [("proc", 5, f"hello proc {sys.version_info[0]}\n"),
                                 ("func", 4, "in-process hello func\n")]:
        pod = cluster.wait(lambda name=name: (p := core.read_namespaced_pod(name, NS)).status.phase == "Failed" and p)
        assert pod.status.container_statuses[0].state.terminated.exit_code == exit_code
        assert core.read_namespaced_pod_log(name, NS) == log


def process_pods_run(cluster: Cluster, api: client.ApiClient, code: dict[str, str]) -> client.CoreV1Api:
    """Pods named as ``code``'s keys, each a container run as a process (``python -c`` its value), once all
    succeeded; the client that made them."""
    core = client.CoreV1Api(api)
    cluster.behaviour = by_name("", dict.fromkeys(code, Script(process=True)))
    for name in code:
        core.create_namespaced_pod(NS, {"metadata": {"name": name}, "spec": {"restartPolicy": "Never", "containers": [
            {"name": "main", "image": IMAGE, "command": ["python", "-c", code[name]]}]}})
    for name in code:
        cluster.wait(lambda name=name: core.read_namespaced_pod(name, NS).status.phase == "Succeeded")
    return core


def test_a_process_containers_log_is_read_as_the_kubelet_reads_containerds(cluster, api):
    """A container run as a process is logged as containerd logs it (a copier a stream, one file of records: a line
    past 16 KiB cut into parts, a ``\\r\\n`` ending dropped, an unended last line kept as a part) and read as the
    kubelet reads that: ``tailLines`` counts records, a part has no newline, ``timestamps`` are RFC3339 with 9
    digits, stderr is in the log too."""
    core = process_pods_run(cluster, api, {
        "out": "import os; os.write(1, b'a\\r\\nb\\n' + b'y' * 40000 + b'\\nunended')",
        "err": "import sys; sys.stderr.write('oops\\n')"})
    assert core.read_namespaced_pod_log("out", NS) == "a\nb\n" + "y" * 40000 + "\nunended"
    assert core.read_namespaced_pod_log("out", NS, tail_lines=1) == "unended"
    assert core.read_namespaced_pod_log("out", NS, tail_lines=2) == "y" * (40000 - 2 * 16384) + "\nunended"
    stamped = core.read_namespaced_pod_log("out", NS, tail_lines=4, timestamps=True)
    record = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (b\n|y{16384}|y{7232}\n|unended)"
    assert re.fullmatch(f"({record}){{4}}", stamped), stamped
    assert core.read_namespaced_pod_log("out", NS, since_seconds=3600, limit_bytes=3) == "a\nb"
    assert core.read_namespaced_pod_log("err", NS) == "oops\n"


def _status(err: Any) -> dict[str, Any]:
    return json.loads(err.value.body)


def _log_with_since_time(api: client.ApiClient, name: str, since_time: str, **query: Any) -> str:
    """``sinceTime`` through the official client's own call (its ``read_namespaced_pod_log`` has no parameter for
    it: the OpenAPI document leaves it out)."""
    params = [("sinceTime", since_time)] + [(k, v) for k, v in query.items()]
    request = api.param_serialize("GET", "/api/v1/namespaces/{namespace}/pods/{name}/log",
                                  path_params={"namespace": NS, "name": name}, query_params=params,
                                  header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"])
    answer = api.call_api(*request)
    answer.read()
    return api.response_deserialize(answer, {"200": "str"}).data


def test_log_options_the_api_server_refuses_are_422_before_the_pod_is_read(cluster, api):
    """``ValidatePodLogOptions`` (pkg/apis/core/validation) as kube-apiserver's ``LogREST.Get`` runs it, before the
    pod is read: ``tailLines`` < 0, ``limitBytes`` < 1, ``sinceSeconds`` < 1 and both ``sinceSeconds`` and
    ``sinceTime`` are a 422 ``PodLogOptions "<pod>" is invalid`` (was: accepted; -2 lines gave all but the first 2)."""
    core = client.CoreV1Api(api)
    cluster.behaviour = by_name("", {}, Script(run=0.01, logs="".join(f"line {i}\n" for i in range(5))))
    core.create_namespaced_pod(NS, {"metadata": {"name": "p"}, "spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": IMAGE}]}})
    cluster.wait(lambda: core.read_namespaced_pod("p", NS).status.phase == "Succeeded")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("p", NS, tail_lines=-2)
    assert err.value.status == 422 and _status(err) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Invalid", "code": 422,
        "message": 'PodLogOptions "p" is invalid: tailLines: Invalid value: -2: must be greater than or equal to 0',
        "details": {"name": "p", "kind": "PodLogOptions", "causes": [
            {"reason": "FieldValueInvalid", "message": "Invalid value: -2: must be greater than or equal to 0",
             "field": "tailLines"}]}}
    for query, words in [({"limit_bytes": 0}, "limitBytes: Invalid value: 0: must be greater than 0"),
                         ({"since_seconds": 0}, "sinceSeconds: Invalid value: 0: must be greater than 0"),
                         ({"tail_lines": -1, "limit_bytes": -5},
                          "[tailLines: Invalid value: -1: must be greater than or equal to 0, "
                          "limitBytes: Invalid value: -5: must be greater than 0]")]:
        with pytest.raises(ApiException) as err:
            core.read_namespaced_pod_log("p", NS, **query)
        assert (err.value.status, _status(err)["message"]) == (422, f'PodLogOptions "p" is invalid: {words}'), query
    with pytest.raises(ApiException) as err:
        _log_with_since_time(api, "p", "2020-01-01T00:00:00Z", sinceSeconds="10")
    assert err.value.status == 422 and _status(err)["message"] == (
        'PodLogOptions "p" is invalid: : Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified')
    assert _status(err)["details"]["causes"] == [{"reason": "FieldValueForbidden", "message": (
        "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified")}]
    with pytest.raises(ApiException) as err:  # validated before the pod is looked for
        core.read_namespaced_pod_log("none", NS, tail_lines=-1)
    assert err.value.status == 422
    assert core.read_namespaced_pod_log("p", NS, tail_lines=0) == ""
    assert core.read_namespaced_pod_log("p", NS, tail_lines=2) == "line 3\nline 4\n"


def test_a_log_request_naming_no_container_of_the_pod_is_400_even_before_the_pod_is_scheduled(cluster, api):
    """The API server picks the container (``validateContainer``) before it asks for a node: a pod not scheduled
    yet answers an unknown container, or none named of several, 400 as a running one does; a known one, nothing
    (was: an empty 200 whatever was named). ``previous`` of a container that never restarted is the kubelet's 400."""
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, {"metadata": {"name": "nowhere"}, "spec": {
        "nodeSelector": {"no-such": "node"}, "initContainers": [{"name": "init", "image": IMAGE}],
        "containers": [{"name": "a", "image": IMAGE}, {"name": "b", "image": IMAGE}]}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("nowhere", NS, container="c")
    assert (err.value.status, _status(err)["reason"], _status(err)["message"]) == (
        400, "BadRequest", "container c is not valid for pod nowhere")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("nowhere", NS)
    assert (err.value.status, _status(err)["message"]) == (
        400, "a container name must be specified for pod nowhere, choose one of: [a b] or one of the init "
             "containers: [init]")
    assert core.read_namespaced_pod_log("nowhere", NS, container="init") == ""
    cluster.behaviour = by_name("", {}, Script(run=0.01, logs="once\n"))
    core.create_namespaced_pod(NS, {"metadata": {"name": "once"}, "spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": IMAGE}]}})
    cluster.wait(lambda: core.read_namespaced_pod("once", NS).status.phase == "Succeeded")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("once", NS, container="other")
    assert (err.value.status, _status(err)["message"]) == (400, "container other is not valid for pod once")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("once", NS, previous=True)
    assert (err.value.status, _status(err)["message"]) == (
        400, 'previous terminated container "main" in pod "once" not found')


def test_a_process_containers_log_since_a_time_and_limited_in_raw_bytes(cluster, api):
    """``sinceTime`` leaves out the records stamped before it (whole seconds, as the API server hands it to the
    kubelet: RFC3339); ``limitBytes`` counts the log's bytes as written, invalid UTF-8 and all, and the log is
    those bytes (was: ``sinceTime`` ignored; the bytes after U+FFFD replaced each invalid one)."""
    core = process_pods_run(cluster, api, {
        "late": "import os, time; os.write(1, b'early\\n'); time.sleep(2.1 - time.time() % 1); "
                "os.write(1, b'late\\n')",  # 'late' stamped in a whole second after 'early''s
        "raw": "import os; os.write(1, b'\\xff\\xfeab\\n')"})
    stamps = dict(line.split(" ")[::-1] for line in core.read_namespaced_pod_log("late", NS, timestamps=True)
                  .splitlines())
    second = stamps["late"].split(".")[0]
    assert stamps["early"] < second, stamps
    assert _log_with_since_time(api, "late", second + "Z") == "late\n"
    assert _log_with_since_time(api, "late", second + "+00:00", timestamps="true") == f"{stamps['late']} late\n"
    assert _log_with_since_time(api, "late", stamps["early"].split(".")[0] + "Z") == "early\nlate\n"
    raw = core.read_namespaced_pod_log("raw", NS, _preload_content=False)
    assert raw.data == b"\xff\xfeab\n"
    assert core.read_namespaced_pod_log("raw", NS, limit_bytes=3, _preload_content=False).data == b"\xff\xfea"


@pytest.mark.parametrize("away", ["os.setpgrp", "os.setsid"], ids=["its own process group", "its own session"])
def test_a_process_containers_end_is_its_main_process_exit_whatever_its_children_did(cluster, api, away):
    """A container ends when its main process exits, whatever its other processes did: on a node its PID namespace
    goes with that process (every process in it killed), so a child that made a process group or a session of its own
    still holding the container's stdout and stderr neither keeps the container running nor outlives it. The model
    runs the container as processes of this host: it kills every process of the container's session and every one
    holding the container's log pipes."""
    core = client.CoreV1Api(api)
    cluster.behaviour = by_name("", {"parent": Script(process=True)})
    code = (f"import os, subprocess; child = subprocess.Popen(['sleep', '600'], preexec_fn={away}); "
            "print(child.pid, flush=True)")
    core.create_namespaced_pod(NS, {"metadata": {"name": "parent"}, "spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": IMAGE, "command": ["python", "-c", code]}]}})
    cluster.wait(lambda: core.read_namespaced_pod("parent", NS).status.phase == "Succeeded",
                 message="the container's end at its main process's exit")
    child = int(core.read_namespaced_pod_log("parent", NS))
    cluster.wait(lambda: _gone(child), message=f"the container's child {child} killed")


def _gone(pid: int) -> bool:
    """Whether process ``pid`` ended (gone, or a zombie left for its new parent to reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_eviction_api_marks_the_pod_and_deletes_it(cluster, api):
    # https://kubernetes.io/docs/concepts/scheduling-eviction/api-eviction/
    core = client.CoreV1Api(api)
    cluster.behaviour = by_name("", {}, Script(forever=True))
    core.create_namespaced_pod(NS, {"metadata": {"name": "drained"}, "spec": {"containers": [
        {"name": "main", "image": IMAGE}]}})
    cluster.wait(lambda: core.read_namespaced_pod("drained", NS).status.phase == "Running")
    core.create_namespaced_pod_eviction("drained", NS, {"metadata": {"name": "drained"}})
    last = cluster.history("pods", NS, "drained")[-1]
    assert [c for c in last["status"]["conditions"] if c["type"] == "DisruptionTarget"][0]["reason"] == \
        "EvictionByEvictionAPI"
    cluster.wait(lambda: cluster.get("pods", NS, "drained") is None)


def test_a_lost_node_taints_itself_and_its_pods_stay_terminating_while_their_job_fails(cluster, api):
    # https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/#taint-based-evictions: the node
    # lifecycle controller taints an unreachable node, the taint eviction controller deletes its pods (with
    # DisruptionTarget DeletionByTaintManager, pkg/controller/tainteviction/taint_eviction.go), and no kubelet
    # confirms; the Job controller counts a deleting pod as failed at once (isPodFailed), its Failed condition
    # waiting for the pod to terminate
    cluster.add_node(NodeSpec("node-2", runtime="sim"))
    cluster.update_node("node-2", unschedulable=True)
    cluster.behaviour = by_name("", {}, Script(forever=True))
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(NS, job("stranded"))
    pod = cluster.wait(lambda: [p for p in pods_of(api, "stranded") if p.status.phase == "Running"])[0]
    cluster.lose_node("node-1", evict_after=0.2)
    node = core.read_node("node-1")
    assert [(c.status, c.reason) for c in node.status.conditions if c.type == "Ready"] == [
        ("Unknown", "NodeStatusUnknown")]
    assert {(t.key, t.effect) for t in node.spec.taints} == {("node.kubernetes.io/unreachable", "NoSchedule"),
                                                            ("node.kubernetes.io/unreachable", "NoExecute")}
    gone = cluster.wait(lambda: (p := core.read_namespaced_pod(pod.metadata.name, NS)).metadata.deletion_timestamp
                        and p)
    assert gone.status.phase == "Running"  # as last reported: nobody tells otherwise
    assert [(c.reason, c.message) for c in gone.status.conditions if c.type == "DisruptionTarget"] == [
        ("DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint")]
    target = cluster.wait(lambda: [c for c in batch.read_namespaced_job("stranded", NS).status.conditions or []
                                   if c.type == "FailureTarget"])
    assert target[0].reason == "BackoffLimitExceeded"
    j = batch.read_namespaced_job("stranded", NS)
    assert j.status.terminating == 1 and "Failed" not in [c.type for c in j.status.conditions]
    assert core.read_namespaced_pod(pod.metadata.name, NS).metadata.deletion_timestamp  # still Terminating
    cluster.update_node("node-2", unschedulable=False)
    batch.create_namespaced_job(NS, job("elsewhere"))
    moved = cluster.wait(lambda: [p for p in pods_of(api, "elsewhere") if p.status.phase == "Running"])[0]
    assert moved.spec.node_name == "node-2"  # nothing new lands on the tainted node


def test_an_injected_sidecar_and_tolerated_taints(cluster, api):
    # https://istio.io/latest/docs/setup/additional-setup/sidecar-injection/ (namespace label istio-injection)
    cluster.namespace("mesh", {"istio-injection": "enabled"})
    cluster.inject_sidecar({"name": "istio-proxy", "image": IMAGE})
    core = client.CoreV1Api(api)
    cluster.update_node("node-1", taints=[{"key": "batch", "value": "yes", "effect": "NoSchedule"}])
    made = core.create_namespaced_pod("mesh", {"metadata": {"name": "meshed"}, "spec": {
        "restartPolicy": "Never", "tolerations": [{"key": "batch", "operator": "Equal", "value": "yes"}],
        "containers": [{"name": "worker", "image": IMAGE}]}})
    assert [c.name for c in made.spec.containers] == ["worker", "istio-proxy"]
    pod = cluster.wait(lambda: (p := core.read_namespaced_pod("meshed", "mesh")).status.phase == "Succeeded" and p)
    assert [c.name for c in pod.status.container_statuses] == ["istio-proxy", "worker"]
    plain = core.create_namespaced_pod(NS, {"metadata": {"name": "plain"}, "spec": {
        "tolerations": [{"key": "batch", "operator": "Exists"}], "containers": [{"name": "worker", "image": IMAGE}]}})
    assert [c.name for c in plain.spec.containers] == ["worker"]


def test_simulated_pods_run_the_real_worker_in_a_subprocess_or_in_process(cluster, api, tmp_path, monkeypatch):
    import uuid

    from sematic_k8s.executors.remote import run_task
    from sematic_k8s.func import load_func
    from sematic_k8s.future import new_id
    from sematic_k8s.settings import STORAGE_ENV, TASK_ENV
    from sematic_k8s.specs import TaskSpec, outcome_key
    from sematic_k8s.storage.local import LocalStorage
    from sematic_k8s.storage.urls import storage_from_url, storage_url

    module = f"kmodel_answer_{uuid.uuid4().hex[:8]}"
    source = tmp_path / f"{module}.py"
    source.write_text("import sematic_k8s as sk\n\n\n@sk.func(inline=False)\ndef answer() -> int:\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    func = load_func(f"{module}:answer", str(source))
    store = LocalStorage(tmp_path / "storage")

    def in_process(ctx: SimContext) -> int:  # what `python -m sematic_k8s.worker` does, without a process
        doc = run_task(TaskSpec.from_json(ctx.env[TASK_ENV]), storage_from_url(ctx.env[STORAGE_ENV]))
        return 1 if "error" in doc else 0
    cluster.behaviour = by_name("", {"sub": Script(process=True), "inproc": Script(func=in_process)})
    try:
        for name in ("sub", "inproc"):
            spec = TaskSpec(new_id(), new_id(), func.path, func.source_file, {}, {}, 1)
            env = [{"name": TASK_ENV, "value": spec.to_json()}, {"name": STORAGE_ENV, "value": storage_url(store)}]
            client.BatchV1Api(api).create_namespaced_job(NS, job(name, containers=[
                {"name": "worker", "image": IMAGE, "command": ["python", "-m", "sematic_k8s.worker"], "env": env}]))
            done = cluster.wait(lambda name=name: job_done(api, name), timeout=60)
            assert conditions(done)[-1] == ("Complete", "CompletionsReached")
            doc = json.loads(store.get(outcome_key(spec.run_id, 1)))
            assert (doc["output"]["type_name"], doc["output"]["summary"]) == ("int", 42)
    finally:
        forget(module)
        sys.modules.pop(module, None)


def _recording_server(seen: list[str]) -> http.server.ThreadingHTTPServer:
    """An HTTP/1.1 server on 127.0.0.1 (connections kept alive), serving on a thread, answering 200 to GET and PUT
    and appending each request's method and path to ``seen``."""
    class Recorder(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(f"{self.command} {self.path}")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = _answer

        def log_message(self, *args: Any) -> None:
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("ignore_sigterm,exit_code", [(True, 137), (False, 143)], ids=["past-grace", "at-sigterm"])
def test_a_func_container_ended_by_its_deadline_can_store_nothing_after_its_reported_end(cluster, api, tmp_path,
                                                                                        ignore_sigterm, exit_code):
    """A func container (a thread of this process) whose pod's activeDeadlineSeconds passes is stopped as the
    kubelet stops one: SIGTERM, and SIGKILL after terminationGracePeriodSeconds when it does not end (137), or its
    end at the SIGTERM (143, a Python process's without a handler). Once the pod says so, nothing the function does
    lands, as nothing a killed process does would: not a storage's outcome (a file), not an HTTP request (on a
    connection kept alive from before its end, nor on a new one), not a thread's (started before its end), not a
    log line; each refused where it is tried."""
    core = client.CoreV1Api(api)
    seen: list[str] = []
    server = _recording_server(seen)
    storage = storage_from_url(f"file://{tmp_path}")
    reported, tried = threading.Event(), threading.Event()
    refused: dict[str, str] = {}

    def attempt(what: str, act: Callable[[], Any]) -> None:
        try:
            act()
        except BaseException as e:  # noqa: BLE001 - what stopped it is the point
            refused[what] = type(e).__name__

    def late(ctx: SimContext) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
        conn.request("GET", "/alive")
        conn.getresponse().read()
        late_thread = threading.Thread(target=lambda: (reported.wait(60), attempt(
            "thread", lambda: storage.put("runs/r1/from-thread", b"x"))))
        late_thread.start()
        try:
            ctx.stopped.wait(60)  # the SIGTERM, then past the grace period
            reported.wait(60)

            def put_again() -> None:
                conn.request("PUT", "/runs/r1/outcome", body=b"{}")
                conn.getresponse().read()
            attempt("outcome", lambda: storage.put("runs/r1/outcome.json", b'{"ok": true}'))
            attempt("kept-alive PUT", put_again)
            attempt("new connection", lambda: urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{server.server_address[1]}/runs/r1/artifact", data=b"1", method="PUT")))
            attempt("log", lambda: ctx.log("stored late"))
            late_thread.join(60)
            return 0
        finally:
            tried.set()
    cluster.behaviour = by_name("", {"late": Script(func=late, ignore_sigterm=ignore_sigterm)})
    core.create_namespaced_pod(NS, {"metadata": {"name": "late"}, "spec": {
        "restartPolicy": "Never", "activeDeadlineSeconds": 1, "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": IMAGE}]}})
    try:
        pod = cluster.wait(lambda: (p := core.read_namespaced_pod("late", NS)).status.phase == "Failed" and p)
        terminated = pod.status.container_statuses[0].state.terminated
        assert (pod.status.reason, terminated.exit_code, terminated.reason) == ("DeadlineExceeded", exit_code, "Error")
        reported.set()
        assert tried.wait(30)
        assert refused == dict.fromkeys(["thread", "outcome", "kept-alive PUT", "new connection", "log"],
                                        "ContainerKilled"), refused
        assert seen == ["GET /alive"]
        assert not storage.exists("runs/r1/outcome.json") and not storage.exists("runs/r1/from-thread")
        assert core.read_namespaced_pod_log("late", NS) == ""
    finally:
        reported.set()
        server.shutdown()
        server.server_close()
