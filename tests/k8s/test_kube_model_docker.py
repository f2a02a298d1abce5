"""The cluster model's Docker kubelet (tests/support/kube_model): pods run for real in the shared Docker engine (host
network), with the environment, volumes, service account token and status shapes a real kubelet gives them.
Skipped without dockerd and the local registry (failed under CI=true)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")

from kubernetes import client  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from infra import REGISTRY, docker_client, require_docker  # noqa: E402
from kube_model import Cluster, NodeSpec  # noqa: E402

IMAGE = f"{REGISTRY}/python-base:bookworm"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    require_docker()
    with Cluster([NodeSpec("node-1", runtime="docker")]) as c:
        yield c
        assert not c.errors, c.errors
    left = docker_client().api.containers(all=True, filters={"label": f"kube-model.cluster={c.id}"})
    assert not left, [x["Names"] for x in left]  # every container of the model is gone with it


@pytest.fixture
def ns(cluster: Cluster) -> str:
    name = f"d-{uuid.uuid4().hex[:8]}"
    cluster.namespace(name)
    return name


@pytest.fixture
def core(cluster: Cluster) -> Iterator[client.CoreV1Api]:
    api = cluster.client()
    yield client.CoreV1Api(api)
    api.close()


def python_pod(name: str, code: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": IMAGE, "command": ["python", "-u", "-c", code], **spec.pop("container", {})}
    return {"metadata": {"name": name}, "spec": {"restartPolicy": "Never", "containers": [container], **spec}}


def ended(core: client.CoreV1Api, ns: str, name: str) -> Any:
    pod = core.read_namespaced_pod(name, ns)
    return pod if pod.status.phase in ("Succeeded", "Failed") else None


def test_a_pod_runs_in_docker_with_its_env_secrets_and_downward_api(cluster, ns, core):
    # https://kubernetes.io/docs/concepts/workloads/pods/downward-api/
    core.create_namespaced_secret(ns, {"metadata": {"name": "creds"}, "stringData": {"key": "s3cr3t"}})
    code = ("import os, sys; print(os.environ['PLAIN'], os.environ['SECRET'], os.environ['POD'], "
            "os.environ['KUBERNETES_SERVICE_HOST']); print('to stderr', file=sys.stderr); sys.exit(3)")
    env = [{"name": "PLAIN", "value": "v-$(POD)"}, {"name": "SECRET", "valueFrom": {"secretKeyRef": {
        "name": "creds", "key": "key"}}}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    env = [env[2], env[0], env[1]]
    pod = python_pod("real", code, container={"env": env})
    pod["spec"]["containers"].append({"name": "aaa-second", "image": IMAGE, "command": ["python", "-c", "print(1)"]})
    core.create_namespaced_pod(ns, pod)
    done = cluster.wait(lambda: ended(core, ns, "real"), timeout=120)
    assert done.status.phase == "Failed"
    first, second = done.status.container_statuses
    assert (first.name, first.state.terminated.exit_code, first.state.terminated.reason) == ("aaa-second", 0,
                                                                                               "Completed")
    assert (second.name, second.state.terminated.exit_code, second.state.terminated.reason) == ("main", 3, "Error")
    assert second.container_id.startswith("docker://") and second.image == IMAGE and second.image_id
    logs = core.read_namespaced_pod_log("real", ns, container="main")  # stdout and stderr, interleaved by time
    assert sorted(logs.splitlines()) == ["to stderr", "v-real s3cr3t real 127.0.0.1"]
    assert core.read_namespaced_pod_log("real", ns, container="main", tail_lines=1) == logs.splitlines(True)[-1]
    reasons = [e["reason"] for e in cluster.events(ns, "real")]
    assert reasons[0] == "Scheduled" and {"Pulled", "Created", "Started"} <= set(reasons)


def test_a_memory_limit_overrun_is_oom_killed(cluster, ns, core):
    # https://kubernetes.io/docs/tasks/configure-pod-container/assign-memory-resource/#exceed-a-containers-memory-limit
    code = "b = bytearray(400 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('survived')"
    core.create_namespaced_pod(ns, python_pod("hog", code, container={
        "resources": {"limits": {"memory": "64Mi"}}, "terminationMessagePolicy": "FallbackToLogsOnError"}))
    done = cluster.wait(lambda: ended(core, ns, "hog"), timeout=120)
    term = done.status.container_statuses[0].state.terminated
    assert (done.status.phase, term.reason, term.exit_code) == ("Failed", "OOMKilled", 137)
    assert done.status.qos_class == "Burstable"


def test_run_as_non_root_refuses_the_root_base_image_and_run_as_user_works(cluster, ns, core):
    # https://kubernetes.io/docs/tasks/configure-pod-container/security-context/
    core.create_namespaced_pod(ns, python_pod("root", "print(1)", securityContext={"runAsNonRoot": True}))
    cs = cluster.wait(lambda: (p := core.read_namespaced_pod("root", ns)).status.container_statuses and (
        w := p.status.container_statuses[0].state.waiting) and w.reason == "CreateContainerConfigError" and w,
                      timeout=60)
    assert "container has runAsNonRoot and image will run as root" in cs.message
    core.create_namespaced_pod(ns, python_pod("user", "import os; print(os.getuid(), os.getgid())", securityContext={
        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
        container={"securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}))
    done = cluster.wait(lambda: ended(core, ns, "user"), timeout=120)
    assert done.status.phase == "Succeeded" and core.read_namespaced_pod_log("user", ns) == "1000 1000\n"


READ_SECRET = """
import os, stat
st = os.stat('/task/task')
print(oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid, sorted(os.getgroups()))
try:
    print(open('/task/task').read())
except PermissionError as e:
    print('refused', e.strerror)
try:
    os.unlink('/task/task')
except OSError as e:
    print('unlink', e.strerror)
"""


@pytest.mark.parametrize("fs_group", [None, 2000])
def test_a_secret_volume_is_roots_of_the_fs_group_and_read_only_as_a_kubelet_mounts_it(cluster, ns, core, fs_group):
    # https://kubernetes.io/docs/concepts/configuration/secret/#using-secrets-as-files-from-a-pod (root-owned files
    # of defaultMode; with fsGroup, of that group and group-readable: SetVolumeOwnership), always mounted read-only
    core.create_namespaced_secret(ns, {"metadata": {"name": "task"}, "stringData": {"task": "the task"}})
    security = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                **({"fsGroup": fs_group} if fs_group else {})}
    name = f"reader-{fs_group or 'none'}"
    core.create_namespaced_pod(ns, python_pod(name, READ_SECRET, securityContext=security, container={
        "volumeMounts": [{"name": "task", "mountPath": "/task"}]},  # readOnly not asked: it is all the same
        volumes=[{"name": "task", "secret": {"secretName": "task", "defaultMode": 0o400}}]))
    done = cluster.wait(lambda: ended(core, ns, name), timeout=120)
    assert done.status.phase == "Succeeded"
    lines = core.read_namespaced_pod_log(name, ns).splitlines()
    if fs_group:  # 0400 | 0440, root:2000, and the container's user is in group 2000
        assert lines == ["0o440 0 2000 [1000, 2000]", "the task", "unlink Read-only file system"], lines
    else:  # root's 0400: the non-root user may not read it
        assert lines == ["0o400 0 0 [1000]", "refused Permission denied", "unlink Read-only file system"], lines


def test_a_pod_reaches_the_api_with_its_service_account_token(cluster, ns, core):
    # https://kubernetes.io/docs/tasks/run-application/access-api-from-pod/#directly-accessing-the-rest-api
    core.create_namespaced_service_account(ns, {"metadata": {"name": "reader"}})
    cluster.apply([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": "reader", "namespace": ns},
                    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]},
                   {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": "reader", "namespace": ns},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
                    "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]}])
    code = """
import json, os, ssl, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token, ns = open(f"{sa}/token").read(), open(f"{sa}/namespace").read()
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
base = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
for what in ("pods", "configmaps"):
    req = urllib.request.Request(f"{base}/api/v1/namespaces/{ns}/{what}", headers={"Authorization": f"Bearer {token}"})
    try:
        print(what, urllib.request.urlopen(req, context=ctx).status)
    except urllib.error.HTTPError as e:
        print(what, e.code, json.load(e)["message"])
"""
    core.create_namespaced_pod(ns, python_pod("caller", code, serviceAccountName="reader"))
    done = cluster.wait(lambda: ended(core, ns, "caller"), timeout=120)
    assert done.status.phase == "Succeeded", core.read_namespaced_pod_log("caller", ns)
    assert core.read_namespaced_pod_log("caller", ns).splitlines() == [
        "pods 200", f'configmaps 403 configmaps is forbidden: User "system:serviceaccount:{ns}:reader" cannot list '
                    f'resource "configmaps" in API group "" in the namespace "{ns}"']


def test_a_missing_image_in_the_registry_backs_off(cluster, ns, core):
    missing = f"{REGISTRY}/kube-model-missing:{uuid.uuid4().hex[:8]}"
    core.create_namespaced_pod(ns, {"metadata": {"name": "gone"}, "spec": {"containers": [
        {"name": "main", "image": missing}]}})
    cluster.wait(lambda: any(e["reason"] == "BackOff" for e in cluster.events(ns, "gone")), timeout=60)
    failed = [e["message"] for e in cluster.events(ns, "gone") if e["message"].startswith("Failed to pull")]
    assert failed[0] == (f'Failed to pull image "{missing}": rpc error: code = NotFound desc = failed to pull and '
                         f'unpack image "{missing}": failed to resolve reference "{missing}": {missing}: not found')
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("gone", ns)
    assert "is waiting to start" in json.loads(err.value.body)["message"]


def test_a_job_in_docker_completes_and_its_containers_go_with_it(cluster, ns):
    api = cluster.client()
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(ns, {"metadata": {"name": "real-job"}, "spec": {"backoffLimit": 0, "template": {
        "spec": {"restartPolicy": "Never", "containers": [
            {"name": "main", "image": IMAGE, "command": ["python", "-c", "print('done')"]}]}}}})
    cluster.wait(lambda: (j := batch.read_namespaced_job("real-job", ns)).status.succeeded == 1 and j, timeout=120)
    docker = docker_client()
    ours = {"label": [f"kube-model.cluster={cluster.id}", f"io.kubernetes.pod.namespace={ns}"]}
    assert docker.api.containers(all=True, filters=ours)
    batch.delete_namespaced_job("real-job", ns, propagation_policy="Foreground")
    cluster.wait(lambda: not docker.api.containers(all=True, filters=ours), timeout=60)
    api.close()
