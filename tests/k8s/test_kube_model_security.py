"""The cluster model's authentication, RBAC and admission (tests/support/kube_model), through the official client:
ServiceAccount tokens, the driver Role rendered from the Helm chart, Pod Security admission driven by namespace
labels, ResourceQuota, missing ServiceAccounts, and how a Job whose pods are refused reports it (FailedCreate)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes = pytest.importorskip("kubernetes")

from kubernetes import client  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from kube_model import Cluster, NodeSpec, Script  # noqa: E402

CHART = Path(__file__).resolve().parents[2] / "helm" / "sematic-k8s"
NS = "pipelines"
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "ab" * 32
DRIVER = f"system:serviceaccount:{NS}:sematic-k8s-driver"
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=lambda p, c: Script(run=0.05)) as c:
        yield c
        assert not c.errors, c.errors


@pytest.fixture
def admin(cluster: Cluster) -> Iterator[client.ApiClient]:
    a = cluster.client()
    yield a
    a.close()


def status_of(e: ApiException) -> dict[str, Any]:
    return json.loads(e.body)


def chart_objects() -> list[dict[str, Any]]:
    """The run-namespace objects of the chart as Helm renders them (helm-python-sdk, as tests/test_helm.py)."""
    try:
        import helm_python as helm
    except ImportError:
        pytest.skip("helm-python-sdk is not installed")
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render({"image": {"repository": "registry.example.com/sematic-k8s-server"}}, name="sk",
                             namespace=NS, is_install=True, is_upgrade=False)
    docs = [d for path, text in sorted(files.items()) if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    return [d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret")
            and d["metadata"].get("namespace") == NS]


def pod(name: str, *, sc: dict[str, Any] | None = None, csc: dict[str, Any] | None = None,
        **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "worker", "image": IMAGE}
    if csc is not None:
        container["securityContext"] = csc
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [container], **({"securityContext": sc} if sc else {}),
                     **spec}}


def job(name: str, pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": pod_spec}}}


# -- authentication and RBAC ---------------------------------------------------------------------------------


def test_the_charts_driver_role_allows_what_it_grants_and_forbids_the_rest(cluster, admin):
    # https://kubernetes.io/docs/reference/access-authn-authz/rbac/#role-and-clusterrole
    cluster.namespace(NS)
    cluster.apply(chart_objects(), namespace=NS)
    driver = cluster.client(f"{NS}/sematic-k8s-driver")
    batch, core = client.BatchV1Api(driver), client.CoreV1Api(driver)
    batch.create_namespaced_job(NS, job("granted", pod("x")["spec"]))
    assert [j.metadata.name for j in batch.list_namespaced_job(NS).items] == ["granted"]
    core.list_namespaced_pod(NS)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("sematic-k8s", NS)
    assert err.value.status == 403 and status_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'configmaps "sematic-k8s" is forbidden: User "{DRIVER}" cannot get resource "configmaps" in API '
                   f'group "" in the namespace "{NS}"',
        "reason": "Forbidden", "details": {"name": "sematic-k8s", "kind": "configmaps"}, "code": 403}
    with pytest.raises(ApiException) as err:
        batch.patch_namespaced_job_status("granted", NS, {"status": {}})
    assert status_of(err.value)["message"] == (
        f'jobs.batch "granted" is forbidden: User "{DRIVER}" cannot patch resource "jobs/status" in API group "batch" '
        f'in the namespace "{NS}"')
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod("default")
    assert 'cannot list resource "pods" in API group "" in the namespace "default"' in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        core.list_node()
    assert status_of(err.value)["message"] == (
        f'nodes is forbidden: User "{DRIVER}" cannot list resource "nodes" in API group "" at the cluster scope')
    # a worker Job's task Secret: made and deleted, never read back (nor any other Secret, a token among them)
    core.create_namespaced_secret(NS, {"metadata": {"name": "sk-x-1-task"}, "stringData": {"task": "{}"}})
    for read in (lambda: core.read_namespaced_secret("sk-x-1-task", NS), lambda: core.list_namespaced_secret(NS),
                 lambda: core.patch_namespaced_secret("sk-x-1-task", NS, {"metadata": {"labels": {"a": "b"}}})):
        with pytest.raises(ApiException) as err:
            read()
        assert err.value.status == 403, err.value
    core.delete_namespaced_secret("sk-x-1-task", NS)
    review = client.AuthorizationV1Api(driver).create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"namespace": NS, "verb": "get", "resource": "pods", "subresource": "log"}}})
    assert review.status.allowed is True
    worker = cluster.client(f"{NS}/sematic-k8s-worker")
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(worker).list_namespaced_pod(NS)
    assert err.value.status == 403
    with pytest.raises(ApiException) as err:  # a create names no object: the request has no name yet
        client.BatchV1Api(worker).create_namespaced_job(NS, job("refused", pod("x")["spec"]))
    assert err.value.status == 403 and status_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'jobs.batch is forbidden: User "system:serviceaccount:{NS}:sematic-k8s-worker" cannot create '
                   f'resource "jobs" in API group "batch" in the namespace "{NS}"',
        "reason": "Forbidden", "details": {"group": "batch", "kind": "jobs"}, "code": 403}
    for c in (driver, worker):
        c.close()


def test_tokens_bad_deleted_and_anonymous(cluster, admin):
    # https://kubernetes.io/docs/reference/access-authn-authz/authentication/#anonymous-requests
    cluster.namespace("t")
    core = client.CoreV1Api(admin)
    core.create_namespaced_service_account("t", {"metadata": {"name": "robot"}})
    token = cluster.token("t/robot")
    robot = cluster.client(token=token)
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(robot).list_namespaced_pod("t")
    assert err.value.status == 403
    core.delete_namespaced_service_account("robot", "t")
    with pytest.raises(ApiException) as err:  # a deleted ServiceAccount's tokens stop working
        client.CoreV1Api(robot).list_namespaced_pod("t")
    assert err.value.status == 401 and status_of(err.value)["reason"] == "Unauthorized"
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(cluster.client(token="not-a-token")).list_namespaced_pod("t")
    assert err.value.status == 401
    anon = cluster.client(anonymous=True)
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(anon).list_namespaced_pod("t")
    assert 'User "system:anonymous" cannot list resource "pods"' in status_of(err.value)["message"]
    assert client.VersionApi(anon).get_code().major == "1"  # /version is public


def test_token_request_subresource_issues_a_working_token(cluster, admin):
    # https://kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-request-v1/
    core = client.CoreV1Api(admin)
    cluster.namespace("t")
    core.create_namespaced_service_account("t", {"metadata": {"name": "robot"}})
    cluster.apply([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": "read", "namespace": "t"},
                    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]},
                   {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": "read", "namespace": "t"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read"},
                    "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "t"}]}])
    issued = core.create_namespaced_service_account_token("robot", "t", {"spec": {"audiences": ["api"]}})
    assert client.CoreV1Api(cluster.client(token=issued.status.token)).list_namespaced_pod("t").items == []


def test_a_rule_for_resource_slash_star_grants_no_subresource(cluster, admin):
    # https://kubernetes.io/docs/reference/kubernetes-api/authorization-resources/role-v1/ (PolicyRule.resources:
    # "*" all, "*/foo" the subresource foo of all) and rbac/v1 helpers.go ResourceMatches: "*", the exact
    # "resource/subresource", "*/subresource"; "pods/*" matches nothing. Was: the model granted pods/log by it.
    core = client.CoreV1Api(admin)
    cluster.namespace("t")
    core.create_namespaced_service_account("t", {"metadata": {"name": "robot"}})
    rules = {"star": ["pods/*"], "exact": ["pods/log"], "any": ["*/log"], "all": ["*"]}
    cluster.apply([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": name, "namespace": "t"},
                    "rules": [{"apiGroups": [""], "resources": resources, "verbs": ["get"]}]}
                   for name, resources in rules.items()])
    robot = client.AuthorizationV1Api(cluster.client("t/robot"))

    def allowed(resource: str, subresource: str) -> bool:
        review = robot.create_self_subject_access_review({"spec": {"resourceAttributes": {
            "namespace": "t", "verb": "get", "resource": resource, "subresource": subresource}}})
        return bool(review.status.allowed)

    granted = []
    for name in rules:
        cluster.apply([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": {"name": name, "namespace": "t"},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                        "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "t"}]}])
        granted.append((name, allowed("pods", "log"), allowed("pods", "status"), allowed("pods", "")))
        client.RbacAuthorizationV1Api(admin).delete_namespaced_role_binding(name, "t")
    assert granted == [("star", False, False, False), ("exact", True, False, False), ("any", True, False, False),
                       ("all", True, True, True)]
    pod_log = client.CoreV1Api(cluster.client("t/robot"))
    cluster.apply([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": "star", "namespace": "t"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "star"},
                    "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "t"}]}])
    with pytest.raises(ApiException) as err:  # a real request, not only a review
        pod_log.read_namespaced_pod_log("any", "t")
    assert err.value.status == 403 and status_of(err.value)["message"] == (
        'pods "any" is forbidden: User "system:serviceaccount:t:robot" cannot get resource "pods/log" in API '
        'group "" in the namespace "t"')


# -- Pod Security admission ----------------------------------------------------------------------------------


def test_restricted_namespace_rejects_a_plain_pod_with_the_real_message(cluster, admin):
    # https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
    cluster.namespace("locked", {"pod-security.kubernetes.io/enforce": "restricted"})
    core = client.CoreV1Api(admin)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("locked", pod("plain"))
    assert err.value.status == 403 and status_of(err.value)["message"] == (
        'pods "plain" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false '
        '(container "worker" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities '
        '(container "worker" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or '
        'container "worker" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "worker" '
        'must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')
    made = core.create_namespaced_pod("locked", pod("hardened", sc=RESTRICTED_POD, csc=RESTRICTED_CONTAINER))
    assert made.metadata.name == "hardened"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("locked", pod("root", sc={**RESTRICTED_POD, "runAsUser": 0},
                                                 csc=RESTRICTED_CONTAINER))
    assert "runAsUser=0 (pod must not set runAsUser=0)" in status_of(err.value)["message"]


def test_baseline_namespace_rejects_host_access_and_warn_mode_only_warns(cluster, admin):
    # https://kubernetes.io/docs/concepts/security/pod-security-standards/#baseline and
    # https://kubernetes.io/docs/concepts/security/pod-security-admission/#pod-security-admission-labels-for-namespaces
    cluster.namespace("base", {"pod-security.kubernetes.io/enforce": "baseline"})
    core = client.CoreV1Api(admin)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("base", pod("host", csc={"privileged": True}, hostNetwork=True,
                                               volumes=[{"name": "root", "hostPath": {"path": "/"}}]))
    assert status_of(err.value)["message"] == (
        'pods "host" is forbidden: violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true), '
        'hostPath volumes (volume "root"), privileged (container "worker" must not set '
        'securityContext.privileged=true)')
    assert core.create_namespaced_pod("base", pod("plain")).metadata.name == "plain"  # baseline allows root
    cluster.namespace("soft", {"pod-security.kubernetes.io/warn": "restricted"})
    _, code, headers = core.create_namespaced_pod_with_http_info("soft", pod("warned"))
    assert code == 201 and 'would violate PodSecurity \\"restricted:latest\\": allowPrivilegeEscalation' in headers[
        "Warning"]


def test_a_job_is_admitted_but_its_refused_pods_surface_only_as_failed_create_events(cluster, admin):
    # https://kubernetes.io/docs/concepts/security/pod-security-admission/ (workload resources only warn)
    cluster.namespace("locked", {"pod-security.kubernetes.io/enforce": "restricted"})
    batch = client.BatchV1Api(admin)
    _, code, headers = batch.create_namespaced_job_with_http_info("locked", job("refused", pod("x")["spec"]))
    assert code == 201 and 'would violate PodSecurity \\"restricted:latest\\"' in headers["Warning"]
    events = cluster.wait(lambda: [e for e in cluster.events("locked", "refused") if e["reason"] == "FailedCreate"])
    assert events[0]["type"] == "Warning" and events[0]["source"] == {"component": "job-controller"}
    assert events[0]["message"].startswith('Error creating: pods "refused-')
    assert 'is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false' in \
        events[0]["message"]
    cluster.wait(lambda: len([e for e in cluster.events("locked", "refused") if e["reason"] == "FailedCreate"]) >= 2)
    j = batch.read_namespaced_job("refused", "locked")
    assert not j.status.conditions and not j.status.active and j.status.start_time  # it just hangs
    assert client.CoreV1Api(admin).list_namespaced_pod("locked").items == []


# -- ResourceQuota and ServiceAccount admission --------------------------------------------------------------


def test_resource_quota_rejects_pods_past_the_limit(cluster, admin):
    # https://kubernetes.io/docs/concepts/policy/resource-quotas/
    cluster.namespace("q")
    core = client.CoreV1Api(admin)
    core.create_namespaced_resource_quota("q", {"metadata": {"name": "compute"},
                                               "spec": {"hard": {"pods": "1", "requests.cpu": "1"}}})
    cluster.behaviour = lambda p, c: Script(forever=True)
    spec = pod("a")["spec"]
    spec["containers"][0]["resources"] = {"requests": {"cpu": "500m"}}
    core.create_namespaced_pod("q", {"metadata": {"name": "a"}, "spec": spec})
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("q", {"metadata": {"name": "b"}, "spec": spec})
    assert err.value.status == 403 and status_of(err.value)["message"] == (
        'pods "b" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=1, limited: pods=1')
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("q", pod("c"))
    assert status_of(err.value)["message"] == 'pods "c" is forbidden: failed quota: compute: must specify ' \
                                              'requests.cpu for: worker'
    quota = cluster.wait(lambda: (core.read_namespaced_resource_quota("compute", "q").status.used or {}).get("pods")
                         == "1" and core.read_namespaced_resource_quota("compute", "q"))
    assert quota.status.used == {"pods": "1", "requests.cpu": "500m"}
    batch = client.BatchV1Api(admin)
    batch.create_namespaced_job("q", job("over", spec))
    event = cluster.wait(lambda: [e for e in cluster.events("q", "over") if e["reason"] == "FailedCreate"])[0]
    assert "exceeded quota: compute, requested: pods=1, used: pods=1, limited: pods=1" in event["message"]


def test_a_missing_service_account_refuses_the_pod(cluster, admin):
    # https://kubernetes.io/docs/concepts/security/service-accounts/
    cluster.namespace("sa")
    core, batch = client.CoreV1Api(admin), client.BatchV1Api(admin)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("sa", pod("p", serviceAccountName="ghost"))
    assert status_of(err.value)["message"] == ('pods "p" is forbidden: error looking up service account sa/ghost: '
                                              'serviceaccount "ghost" not found')
    batch.create_namespaced_job("sa", job("j", pod("p", serviceAccountName="ghost")["spec"]))
    event = cluster.wait(lambda: [e for e in cluster.events("sa", "j") if e["reason"] == "FailedCreate"])[0]
    assert 'error looking up service account sa/ghost: serviceaccount "ghost" not found' in event["message"]
    made = core.create_namespaced_pod("sa", pod("default-sa"))
    assert made.spec.service_account_name == "default"
    assert made.spec.containers[0].volume_mounts[0].mount_path == "/var/run/secrets/kubernetes.io/serviceaccount"
    no_token = core.create_namespaced_pod("sa", pod("no-token", automountServiceAccountToken=False))
    assert not no_token.spec.containers[0].volume_mounts


def test_a_proxy_url_acts_as_its_service_account(cluster, admin):
    # https://kubernetes.io/docs/reference/kubectl/generated/kubectl_proxy/
    cluster.namespace("px")
    client.CoreV1Api(admin).create_namespaced_service_account("px", {"metadata": {"name": "robot"}})
    url = cluster.proxy("px/robot")
    with client.ApiClient(client.Configuration(host=url)) as bare:
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(bare).list_namespaced_pod("px")
    assert 'User "system:serviceaccount:px:robot" cannot list resource "pods"' in status_of(err.value)["message"]
    with client.ApiClient(client.Configuration(host=cluster.proxy())) as as_admin:
        assert client.CoreV1Api(as_admin).list_namespaced_pod("px").items == []
