"""The Helm chart (helm/sematic-k8s): rendered and linted by Helm's own Go library (helm-python-sdk), every
rendered manifest validated against the official Kubernetes schemas (kubernetes-validate, strict) for two
Kubernetes versions, and its behaviour asserted: RBAC scope, secrets, hooks, labels, images, and the chart's two
scripts run for real (the migration hook's against SQLite, the bucket init container's against an S3 API on
127.0.0.1).

Without helm-python-sdk or kubernetes-validate the tests skip, unless CI=true: then they fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import s3server

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "sematic-k8s"
KUBE_VERSIONS = ("1.30.0", "1.33.0")  # both bundled by kubernetes-validate >= 1.33
RELEASE, NAMESPACE = "sk", "pipelines"
FULLNAME = f"{RELEASE}-sematic-k8s"
DIGEST = "sha256:" + "ab" * 32

DRIVER_RULES = {  # (apiGroup, resource) -> verbs: exactly what the driver ServiceAccount may do
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
    ("", "pods"): {"list", "watch", "delete"},  # delete: a worker pod left running by its Job's orphaning delete
    ("", "pods/log"): {"get"},
    ("", "events"): {"list", "watch"},  # Warning Events of the namespace, on one watch
    ("", "secrets"): {"create", "delete"},  # each worker Job's task Secret; never read: no get, list, patch, update
}
SERVER_RERUN_RULES = {  # what the server may do in the run namespace to start a rerun's driver
    ("batch", "jobs"): {"create", "get"},
    ("", "secrets"): {"create", "patch", "delete", "list"},
    ("", "configmaps"): {"get"},
}
REGISTRY = "registry.example.com/pipelines"
STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "app.kubernetes.io/part-of",
                   "helm.sh/chart")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
EXTERNAL_URL = "postgresql+psycopg://app:s3cr%40t@db.example.internal:5432/sematic"

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "external-db-url": {"postgresql": {"enabled": False}, "database": {"external": {"url": EXTERNAL_URL}}},
    "external-db-secret": {"postgresql": {"enabled": False},
                           "database": {"external": {"existingSecret": "my-db", "existingSecretKey": "dsn"}}},
    "minio": {"minio": {"enabled": True}, "artifacts": {"prefix": "/runs/"}},
    "ingress": {"ingress": {"enabled": True, "className": "nginx",
                            "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "64m"},
                            "hosts": [{"host": "sk.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                            "tls": [{"secretName": "sk-tls", "hosts": ["sk.example.com"]}]}},
    "digest": {"image": {"repository": "registry.example.com/sematic-k8s-server", "digest": DIGEST},
               "postgresql": {"image": {"digest": DIGEST}}, "imagePullSecrets": [{"name": "regcred"}]},
    "aws-s3-run-namespace": {"artifacts": {"bucket": "team-artifacts", "s3": {
                                 "region": "eu-west-1", "accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "shh"}},
                             "runs": {"namespace": "runs", "createNamespace": True},
                             "postgresql": {"persistence": {"enabled": False}},
                             "service": {"type": "NodePort", "nodePort": 30080}},
    "minimal": {"runs": {"rbac": {"create": False}}, "migrations": {"enabled": False},
                "postgresql": {"auth": {"password": "given-password"}},
                "server": {"serviceAccount": {"create": False}, "rerunLauncher": ""}},
    "reruns": {"server": {"rerunImageRepositories": [REGISTRY, "registry.example.com/team-b"],
                          "rerunConcurrency": 3, "rerunQueue": 20, "maxRequestMB": 64, "tokenMaxHours": 48,
                          "headerTimeoutSeconds": 20, "bodyTimeoutSeconds": 300, "sendTimeoutSeconds": 120,
                          "maxStreamsPerKey": 8, "tokenSweepNamespaces": ["team-a"]},
               "runs": {"namespace": "runs"}},
}


def _require(module: str, package: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        message = f"{package} is not installed (pip install {package})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def helm() -> Any:
    return _require("helm_python", "helm-python-sdk")


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    return _require("kubernetes_validate", "kubernetes-validate")


@pytest.fixture(scope="module")
def chart(helm: Any) -> Iterator[Any]:
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


SERVER_REPOSITORY = "registry.example.com/sematic-k8s-server"


def with_image(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` naming the server image (the chart has no default for it), unless they do."""
    return {**values, "image": {"repository": SERVER_REPOSITORY, **values.get("image", {})}}


def render_files(chart: Any, values: dict[str, Any], *, is_upgrade: bool = False) -> dict[str, str]:
    return chart.render(with_image(values), name=RELEASE, namespace=NAMESPACE, is_install=not is_upgrade,
                        is_upgrade=is_upgrade)


def render(chart: Any, values: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object of the chart (NOTES.txt left out)."""
    docs = []
    for path, text in sorted(render_files(chart, values, **kwargs).items()):
        if path.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


@pytest.fixture(scope="module")
def rendered(chart: Any) -> dict[str, list[dict[str, Any]]]:
    return {name: render(chart, values) for name, values in VARIANTS.items()}


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = doc["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def hooks(doc: dict[str, Any]) -> set[str]:
    return set(doc["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(",")) - {""}


def string_data(secret: dict[str, Any]) -> dict[str, str]:
    return secret.get("stringData", {})


def regular(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The release's own resources (hooks left out)."""
    return [d for d in docs if not hooks(d)]


def generated(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Secrets the secrets hook Job makes when they do not exist (its $SECRETS)."""
    jobs = find(docs, "Job", f"{FULLNAME}-secrets")
    return json.loads(env_of(containers(jobs[0])[0])["SECRETS"]["value"]) if jobs else []


# -- helm lint and schema validation ------------------------------------------------------------------


def test_lint_has_no_errors_or_warnings(helm: Any) -> None:
    for name, values in VARIANTS.items():
        report = helm.lint(str(CHART), with_image(values), strict=True, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["errors"] == [] and problems == [], (name, report)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_manifest_is_valid_for_two_kubernetes_versions(rendered: dict[str, list[dict[str, Any]]],
                                                             kubernetes_validate: Any, variant: str) -> None:
    docs = rendered[variant]
    assert len(docs) >= 5
    for doc in docs:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{variant}: {doc['kind']} {doc['metadata']['name']} is not valid for Kubernetes "
                            f"{version}: {e}")


def test_the_schemas_catch_a_misspelt_field(rendered: dict[str, list[dict[str, Any]]],
                                            kubernetes_validate: Any) -> None:
    """The strict validation above is not vacuous."""
    deployment = one(rendered["default"], "Deployment", FULLNAME)
    bad = yaml.safe_load(yaml.safe_dump(deployment))
    bad["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSIONS[0], strict=True)


def test_names_are_unique_per_kind_and_namespace(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant, docs in rendered.items():
        keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
        assert len(keys) == len(set(keys)), (variant, keys)


def test_release_named_like_the_chart_has_no_clashing_names(chart: Any) -> None:
    files = chart.render(with_image({"minio": {"enabled": True}}), name="sematic-k8s", namespace="sematic-k8s")
    docs = [d for path, text in files.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), keys
    assert ("Deployment", "sematic-k8s") in keys


# -- labels -------------------------------------------------------------------------------------------


def test_standard_labels_everywhere(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant, docs in rendered.items():
        for doc in docs:
            labels = doc["metadata"].get("labels", {})
            missing = [k for k in STANDARD_LABELS if k not in labels]
            assert not missing, f"{variant}: {doc['kind']} {doc['metadata']['name']} lacks {missing}"
            assert labels["app.kubernetes.io/instance"] == RELEASE
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
            if doc["kind"] in WORKLOADS:
                pod_labels = doc["spec"]["template"]["metadata"]["labels"]
                assert all(k in pod_labels for k in STANDARD_LABELS), (variant, doc["metadata"]["name"])
            if doc["kind"] in ("Deployment", "StatefulSet"):
                selector = doc["spec"]["selector"]["matchLabels"]
                pod_labels = doc["spec"]["template"]["metadata"]["labels"]
                assert selector.items() <= pod_labels.items()
                assert "app.kubernetes.io/version" not in selector  # selectors are immutable: no version in them


def test_services_select_their_pods(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant in ("default", "minio"):
        docs = rendered[variant]
        workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
        for svc in find(docs, "Service"):
            targets = [w for w in workloads
                       if svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
            assert len(targets) == 1, (variant, svc["metadata"]["name"])
            ports = {p["name"] for c in containers(targets[0]) for p in c.get("ports", [])}
            assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports


def test_common_labels_are_added(chart: Any) -> None:
    docs = render(chart, {"commonLabels": {"team": "ml"}})
    assert all(d["metadata"]["labels"]["team"] == "ml" for d in docs)


# -- RBAC and service accounts ------------------------------------------------------------------------


def _granted(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}  # no nonResourceURLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in role["rules"])
    return granted


def test_roles_are_namespaced_and_grant_exactly_the_driver_and_rerun_verbs(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant, docs in rendered.items():
        assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding"), variant
        docs = regular(docs)
        if variant == "minimal":
            assert not find(docs, "Role") and not find(docs, "RoleBinding")
            continue
        run_ns = "runs" if variant in ("aws-s3-run-namespace", "reruns") else NAMESPACE
        role = one(docs, "Role", f"{FULLNAME}-driver")
        assert role["metadata"]["namespace"] == run_ns
        assert _granted(role) == DRIVER_RULES
        assert not any("resourceNames" in rule for rule in role["rules"])
        binding = one(docs, "RoleBinding", f"{FULLNAME}-driver")
        assert binding["metadata"]["namespace"] == run_ns
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": role["metadata"]["name"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sematic-k8s-driver",
                                        "namespace": run_ns}]

        reruns = one(docs, "Role", f"{FULLNAME}-server-reruns")
        assert reruns["metadata"]["namespace"] == run_ns and _granted(reruns) == SERVER_RERUN_RULES
        [config_rule] = [r for r in reruns["rules"] if "configmaps" in r["resources"]]
        assert config_rule["resourceNames"] == ["sematic-k8s"]
        binding = one(docs, "RoleBinding", f"{FULLNAME}-server-reruns")
        assert binding["metadata"]["namespace"] == run_ns
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{FULLNAME}-server",
                                        "namespace": NAMESPACE}]


def test_the_server_may_sweep_token_secrets_only_in_the_namespaces_named_in_its_values(chart: Any) -> None:
    """server.tokenSweepNamespaces: a Role in each (list and delete on secrets, nothing else) bound to the server's
    account, the list given to the server ($SEMATIC_K8S_TOKEN_SWEEP_NAMESPACES) and its API token mounted (even
    without the Kubernetes rerun launcher); none named: no such Role, no variable."""
    values = {"server": {"tokenSweepNamespaces": ["team-a", "team-b"], "rerunLauncher": ""}}
    docs = render(chart, values)
    roles = find(docs, "Role", f"{FULLNAME}-server-token-sweep")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(_granted(r) == {("", "secrets"): {"list", "delete"}} for r in roles)
    bindings = find(docs, "RoleBinding", f"{FULLNAME}-server-token-sweep")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert all(b["subjects"] == [{"kind": "ServiceAccount", "name": f"{FULLNAME}-server", "namespace": NAMESPACE}]
               and b["roleRef"]["name"] == f"{FULLNAME}-server-token-sweep" for b in bindings)
    deployment = one(docs, "Deployment", FULLNAME)
    (container,) = containers(deployment)
    assert env_of(container)["SEMATIC_K8S_TOKEN_SWEEP_NAMESPACES"]["value"] == "team-a,team-b"
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    values["runs"] = {"rbac": {"create": False}}
    assert not find(render(chart, values), "Role", f"{FULLNAME}-server-token-sweep")
    default = render(chart, {})
    assert not find(default, "Role", f"{FULLNAME}-server-token-sweep")
    assert "SEMATIC_K8S_TOKEN_SWEEP_NAMESPACES" not in env_of(containers(one(default, "Deployment", FULLNAME))[0])


def test_worker_service_account_has_no_permissions_and_no_token(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    worker = one(docs, "ServiceAccount", "sematic-k8s-worker")
    assert worker["automountServiceAccountToken"] is False
    assert worker["metadata"]["namespace"] == NAMESPACE
    driver = one(docs, "ServiceAccount", "sematic-k8s-driver")
    assert driver["automountServiceAccountToken"] is True
    subjects = {s["name"] for b in find(regular(docs), "RoleBinding") for s in b["subjects"]}
    assert subjects == {"sematic-k8s-driver", f"{FULLNAME}-server"}


def test_run_namespace_holds_everything_runs_need(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["aws-s3-run-namespace"]
    assert one(docs, "Namespace", "runs")
    for kind, name in [("ServiceAccount", "sematic-k8s-driver"), ("ServiceAccount", "sematic-k8s-worker"),
                       ("Secret", "sematic-k8s-s3"), ("ConfigMap", "sematic-k8s"),
                       ("Role", f"{FULLNAME}-server-reruns")]:
        assert one(docs, kind, name)["metadata"]["namespace"] == "runs", (kind, name)
    # the server side stays in the release namespace
    for kind, name in [("Deployment", FULLNAME), ("Secret", f"{FULLNAME}-s3"), ("Secret", f"{FULLNAME}-database")]:
        assert one(docs, kind, name)["metadata"]["namespace"] == NAMESPACE


# -- secrets --------------------------------------------------------------------------------------------


def test_server_gets_the_database_url_from_a_secret(rendered: dict[str, list[dict[str, Any]]]) -> None:
    expected = {"default": (f"{FULLNAME}-database", "url"), "external-db-url": (f"{FULLNAME}-database", "url"),
                "external-db-secret": ("my-db", "dsn")}
    for variant, (secret, key) in expected.items():
        docs = rendered[variant]
        server = one(docs, "Deployment", FULLNAME)
        (container,) = containers(server)
        env = env_of(container)
        assert "value" not in env["SEMATIC_K8S_DB_URL"]
        assert env["SEMATIC_K8S_DB_URL"]["valueFrom"] == {"secretKeyRef": {"name": secret, "key": key}}
        if variant != "external-db-secret":
            url = string_data(one(docs, "Secret", secret))[key]
            assert url.startswith("postgresql+psycopg://")
            assert EXTERNAL_URL == url or variant == "default"


def test_no_credential_is_a_plain_value_in_a_pod_spec(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant, docs in rendered.items():
        secrets = [v for s in find(docs, "Secret") for k, v in string_data(s).items()
                   if k != "AWS_ACCESS_KEY_ID" and len(v) >= 8]  # an access key id is a name, not a secret
        for workload in (d for d in docs if d["kind"] in WORKLOADS):
            for container in containers(workload):
                for e in container.get("env", []):
                    value = str(e.get("value", ""))
                    assert not any(s in value for s in secrets), (variant, workload["metadata"]["name"], e["name"])
                    assert not re.match(r"(AWS_SECRET|.*PASSWORD|.*API_KEY$|SEMATIC_K8S_DB_URL)", e["name"]) \
                        or "valueFrom" in e, (variant, e["name"])


def test_bundled_postgresql_password_is_never_made_by_a_render(chart: Any,
                                                              rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Rendering the chart twice (helm template, Argo CD) gives the same manifests: the password is made once by
    the secrets hook Job, into a Secret no render contains, and everything reads it from there."""
    docs = rendered["default"]
    assert render(chart, {}) == docs and render(chart, {}, is_upgrade=True) == render(chart, {}, is_upgrade=True)
    assert [(g["name"], g["data"], g["legacy"]) for g in generated(docs)] == [  # upgrades keep the old one
        (f"{FULLNAME}-postgresql", {"password": None}, {"name": f"{FULLNAME}-database", "key": "postgres-password"})]
    assert not find(docs, "Secret", f"{FULLNAME}-postgresql")
    url = string_data(one(docs, "Secret", f"{FULLNAME}-database"))["url"]
    assert url == f"postgresql+psycopg://sematic@{FULLNAME}-postgresql:5432/sematic"  # no password in it
    assert string_data(one(docs, "Secret", f"{FULLNAME}-migrations"))["url"] == url
    ref = {"name": f"{FULLNAME}-postgresql", "key": "password"}
    pg = one(docs, "StatefulSet", f"{FULLNAME}-postgresql")
    assert env_of(containers(pg)[0])["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == ref
    for workload in (one(docs, "Deployment", FULLNAME), one(docs, "Job", f"{FULLNAME}-migrate")):
        assert env_of(containers(workload)[0])["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == ref  # libpq reads it


def test_a_given_or_existing_postgresql_password_makes_no_hook(chart: Any) -> None:
    docs = render(chart, {"postgresql": {"auth": {"password": "p@ss/w:rd"}}})
    assert string_data(one(docs, "Secret", f"{FULLNAME}-postgresql")) == {"password": "p@ss/w:rd"}
    assert not find(docs, "Job", f"{FULLNAME}-secrets")
    docs = render(chart, {"postgresql": {"auth": {"existingSecret": "pg-creds", "existingSecretKey": "pw"}}})
    assert not find(docs, "Job", f"{FULLNAME}-secrets") and not find(docs, "Secret", f"{FULLNAME}-postgresql")
    pg = one(docs, "StatefulSet", f"{FULLNAME}-postgresql")
    assert env_of(containers(pg)[0])["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pg-creds",
                                                                                           "key": "pw"}


def test_the_secrets_hook_runs_first_with_only_get_and_create_on_secrets(rendered: dict[str, list[dict[str, Any]]]
                                                                         ) -> None:
    docs = rendered["aws-s3-run-namespace"]
    job = one(docs, "Job", f"{FULLNAME}-secrets")
    assert hooks(job) == {"pre-install", "pre-upgrade"}
    weight = int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert all(int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) > weight
               for d in docs if hooks(d) and d["metadata"]["name"] != f"{FULLNAME}-secrets")
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        made = one(docs, kind, f"{FULLNAME}-secrets")
        assert hooks(made) == hooks(job) and int(made["metadata"]["annotations"]["helm.sh/hook-weight"]) < weight
    assert _granted(one(docs, "Role", f"{FULLNAME}-secrets")) == {("", "secrets"): {"get", "create"}}
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"{FULLNAME}-secrets" and pod["securityContext"]["runAsNonRoot"] is True
    assert containers(job)[0]["command"][2].strip() == (CHART / "files" / "secrets.py").read_text().strip()


def test_no_shared_key_for_drivers(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Drivers get a token of their own resolution's when they are launched: the chart makes no key for them."""
    for variant, docs in rendered.items():
        for secret in find(docs, "Secret"):
            assert not any(v.startswith("sk8s_") for v in string_data(secret).values()), (variant, secret)
            assert "api-key" not in string_data(secret), variant
        for config in find(docs, "ConfigMap"):
            assert "SEMATIC_K8S_API_KEY_SECRET" not in config.get("data", {}), variant


def test_s3_credentials(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not find(rendered["default"], "Secret", f"{FULLNAME}-s3")  # no credentials: the pods' own identity
    docs = rendered["aws-s3-run-namespace"]
    for name in (f"{FULLNAME}-s3", "sematic-k8s-s3"):
        assert string_data(one(docs, "Secret", name)) == {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
                                                          "AWS_SECRET_ACCESS_KEY": "shh"}
    env = env_of(containers(one(docs, "Deployment", FULLNAME))[0])
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == f"{FULLNAME}-s3"
    assert env["SEMATIC_K8S_S3_REGION"]["value"] == "eu-west-1"
    assert env["SEMATIC_K8S_STORAGE"]["value"] == "s3://team-artifacts"


# -- the migration hook -----------------------------------------------------------------------------------


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook_with_an_external_database(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant in ("external-db-url", "external-db-secret"):
        docs = rendered[variant]
        job = one(docs, "Job", f"{FULLNAME}-migrate")
        assert hooks(job) == {"pre-install", "pre-upgrade"}
        annotations = job["metadata"]["annotations"]
        assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {"before-hook-creation",
                                                                             "hook-succeeded"}
        # what the Job reads exists before it: a hook Secret of a lower weight (or the user's own Secret)
        ref = env_of(containers(job)[0])["SEMATIC_K8S_DB_URL"]["valueFrom"]["secretKeyRef"]
        if variant == "external-db-secret":
            assert ref == {"name": "my-db", "key": "dsn"}
        else:
            assert ref == {"name": f"{FULLNAME}-migrations", "key": "url"}
            assert string_data(one(docs, "Secret", f"{FULLNAME}-migrations"))["url"] == EXTERNAL_URL
            secret = one(docs, "Secret", f"{FULLNAME}-migrations")
            assert hooks(secret) == hooks(job)
            assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
                annotations["helm.sh/hook-weight"])


def test_migration_job_with_bundled_postgresql_runs_before_upgrades_and_after_the_install(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    """pre-install would deadlock: Helm creates the StatefulSet only after the pre-install hooks succeeded."""
    job = one(rendered["default"], "Job", f"{FULLNAME}-migrate")
    assert hooks(job) == {"post-install", "pre-upgrade"}
    assert hooks(one(rendered["default"], "Secret", f"{FULLNAME}-migrations")) == hooks(job)


def test_migration_job_runs_the_server_image_as_non_root(rendered: dict[str, list[dict[str, Any]]]) -> None:
    job = one(rendered["digest"], "Job", f"{FULLNAME}-migrate")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["image"] == f"registry.example.com/sematic-k8s-server@{DIGEST}"
    assert container["command"][:2] == ["python", "-c"]
    assert container["command"][2].strip() == (CHART / "files" / "migrate.py").read_text().strip()
    assert not find(rendered["minimal"], "Job")


def test_only_hooks_are_hooks(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant, docs in rendered.items():
        hooked = sorted(d["metadata"]["name"] for d in docs if hooks(d))
        expected = {f"{FULLNAME}-migrate", f"{FULLNAME}-migrations"}
        if variant in ("default", "minio", "ingress", "digest", "aws-s3-run-namespace", "reruns"):
            expected.add(f"{FULLNAME}-secrets")  # the bundled PostgreSQL's password, made once
        if variant == "minimal":
            expected = set()
        if variant == "external-db-secret":
            expected = {f"{FULLNAME}-migrate"}  # the URL is in the user's Secret: no hook Secret needed
        assert set(hooked) == expected, (variant, hooked)


def _run_hook_script(workload: dict[str, Any], env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run the first container command of a rendered hook Job (or a Deployment's init container) here, as its pod
    would, with ``env``."""
    container = containers(workload)[0]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SEMATIC_K8S_", "AWS_"))}
    pythonpath = os.pathsep.join([str(REPO), str(REPO / "server")])
    command = [sys.executable if c == "python" else c for c in container["command"]]
    return subprocess.run(command, env={**base, "PYTHONPATH": pythonpath, "HOME": str(tmp), **env},
                          capture_output=True, text=True, timeout=120, cwd=tmp)


def test_migration_script_migrates(chart: Any, tmp_path: Path) -> None:
    pytest.importorskip("alembic")
    from sematic_k8s_server import auth
    from sematic_k8s_server.db import open_store

    job = one(render(chart, {}), "Job", f"{FULLNAME}-migrate")
    url = f"sqlite:///{tmp_path / 'meta.sqlite3'}"
    env = {"SEMATIC_K8S_DB_URL": url, "WAIT_SECONDS": "5"}
    done = _run_hook_script(job, env, tmp_path)
    assert done.returncode == 0 and "schema at head" in done.stderr, done.stderr
    again = _run_hook_script(job, env, tmp_path)  # an upgrade: nothing to do
    assert again.returncode == 0, again.stderr
    assert "SEMATIC_K8S_DRIVER_API_KEY" not in env_of(containers(job)[0])
    store = open_store(url)
    try:
        assert auth.list_keys(store.engine) == []  # no key registered behind anyone's back
        assert "resolution_tokens" in sa_tables(store.engine)
    finally:
        store.engine.dispose()


def sa_tables(engine: Any) -> set[str]:
    import sqlalchemy as sa

    return set(sa.inspect(engine).get_table_names())


def test_migration_script_gives_up_on_an_unreachable_database(chart: Any, tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    job = one(render(chart, {}), "Job", f"{FULLNAME}-migrate")
    done = _run_hook_script(job, {"SEMATIC_K8S_DB_URL": "postgresql+psycopg://u:secretpw@127.0.0.1:9/db",
                                  "WAIT_SECONDS": "0"}, tmp_path)
    assert done.returncode != 0
    assert "did not answer" in done.stderr and "secretpw" not in done.stderr


# -- the server ------------------------------------------------------------------------------------------


def test_server_deployment(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    server = one(docs, "Deployment", FULLNAME)
    pod = server["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"{SERVER_REPOSITORY}:0.1.0"
    assert container["command"] == ["sematic-k8s", "server", "--host", "0.0.0.0", "--port", "8000",
                                    "--max-request-mb", "32", "--header-timeout", "10", "--body-timeout", "60",
                                    "--send-timeout", "60", "--max-streams-per-key", "64",
                                    "--token-max-hours", "168", "--workers", "1",
                                    "--shutdown-timeout", "20",
                                    "--rerun-launcher", "kubernetes", "--rerun-namespace", NAMESPACE,
                                    "--self-url", f"http://{FULLNAME}.{NAMESPACE}.svc:8000",
                                    "--rerun-concurrency", "2", "--rerun-queue", "8",  # no repository: no rerun
                                    "--actions-by", "team"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe in ("livenessProbe", "startupProbe"):  # alive, whatever its database does
        assert container[probe]["httpGet"] == {"path": "/api/v1/health", "port": "http"}, probe
    assert container["readinessProbe"]["httpGet"] == {"path": "/api/v1/ready", "port": "http"}  # its database answers
    # a rolling update: the pod serves on while its endpoint goes (preStop), then has the rest of its grace period,
    # less 5 s, to answer the requests under way (--shutdown-timeout) before the kubelet's SIGKILL
    assert pod["terminationGracePeriodSeconds"] == 30
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["python", "-c", "import time; time.sleep(5)"]
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", env_of(container)["SEMATIC_K8S_HOME"]["value"]} <= mounts
    assert pod["serviceAccountName"] == f"{FULLNAME}-server"
    assert pod["automountServiceAccountToken"] is True  # it creates rerun drivers' Jobs
    svc = one(docs, "Service", FULLNAME)
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert not find(docs, "Ingress")


def test_the_grace_period_and_the_prestop_delay_set_the_servers_shutdown_timeout(chart: Any) -> None:
    docs = render(chart, {"server": {"terminationGracePeriodSeconds": 120, "shutdownDelaySeconds": 0}})
    pod = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["terminationGracePeriodSeconds"] == 120 and "lifecycle" not in container
    assert container["command"][container["command"].index("--shutdown-timeout") + 1] == "115"


def test_server_processes_and_more_storages_come_from_values(chart: Any) -> None:
    values = {"server": {"workers": 2, "storageAllow": ["s3://other-bucket/runs", "s3://archive/x"],
                         "actionsBy": "owner"}}
    (container,) = containers(one(render(chart, values), "Deployment", FULLNAME))
    command = container["command"]
    assert command[command.index("--workers") + 1] == "2"
    assert command[command.index("--actions-by") + 1] == "owner"
    assert env_of(container)["SEMATIC_K8S_STORAGE_ALLOW"]["value"] == "s3://other-bucket/runs,s3://archive/x"
    (default,) = containers(one(render(chart, {}), "Deployment", FULLNAME))
    assert "SEMATIC_K8S_STORAGE_ALLOW" not in env_of(default)


def test_the_servers_database_pool_and_lock_waits_come_from_values(chart: Any) -> None:
    """server.database: $SEMATIC_K8S_DB_POOL_SIZE, $SEMATIC_K8S_DB_POOL_TIMEOUT, $SEMATIC_K8S_DB_LOCK_TIMEOUT and
    $SEMATIC_K8S_DB_POOLER on the server's container (the pooler on the migration Job's too), by default the server's
    own defaults (sematic_k8s.settings), and as given; each value the server would refuse at its start is refused by
    the render in one line naming it. Was: not in the chart's values (set only through server.extraEnv); no pooler."""
    from sematic_k8s import settings

    names = (settings.DB_POOL_SIZE_ENV, settings.DB_POOL_TIMEOUT_ENV, settings.DB_LOCK_TIMEOUT_ENV,
             settings.DB_POOLER_ENV)
    (default,) = containers(one(render(chart, {}), "Deployment", FULLNAME))
    assert [env_of(default)[name]["value"] for name in names] == [
        f"{settings.DEFAULT_DB_POOL_SIZE}", f"{settings.DEFAULT_DB_POOL_TIMEOUT:g}",
        f"{settings.DEFAULT_DB_LOCK_TIMEOUT:g}", settings.DB_POOLERS[0]]
    given = {"server": {"database": {"poolSize": 12, "poolTimeoutSeconds": 7.5, "lockTimeoutSeconds": 0,
                                     "pooler": "transaction"}}}
    manifests = render(chart, given)
    (container,) = containers(one(manifests, "Deployment", FULLNAME))
    assert [env_of(container)[name]["value"] for name in names] == ["12", "7.5", "0", "transaction"]
    (migrate,) = containers(one(manifests, "Job", f"{FULLNAME}-migrate"))  # its engine, too: no prepared statement
    assert env_of(migrate)[settings.DB_POOLER_ENV]["value"] == "transaction"


def test_reruns_go_by_the_allow_list_and_the_servers_settings(rendered: dict[str, list[dict[str, Any]]],
                                                               chart: Any) -> None:
    (container,) = containers(one(rendered["reruns"], "Deployment", FULLNAME))
    command = container["command"]
    flags = list(zip(command[4::2], command[5::2], strict=True))
    assert ("--rerun-launcher", "kubernetes") in flags and ("--rerun-namespace", "runs") in flags
    assert [v for f, v in flags if f == "--rerun-image-repository"] == [REGISTRY, "registry.example.com/team-b"]
    assert ("--rerun-concurrency", "3") in flags and ("--rerun-queue", "20") in flags
    assert ("--max-request-mb", "64") in flags and ("--token-max-hours", "48") in flags
    assert {("--header-timeout", "20"), ("--body-timeout", "300"), ("--send-timeout", "120"),
            ("--max-streams-per-key", "8")} <= set(flags)
    notes = render_files(chart, VARIANTS["reruns"])["sematic-k8s/templates/NOTES.txt"]
    assert REGISTRY in notes
    (off,) = containers(one(rendered["minimal"], "Deployment", FULLNAME))
    assert "--rerun-launcher" not in off["command"] and "--rerun-image-repository" not in off["command"]
    pod = one(rendered["minimal"], "Deployment", FULLNAME)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False  # no reruns: no Kubernetes API token


def test_image_by_digest_or_tag(chart: Any, rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["digest"]
    (container,) = containers(one(docs, "Deployment", FULLNAME))
    assert container["image"] == f"registry.example.com/sematic-k8s-server@{DIGEST}"
    assert containers(one(docs, "StatefulSet"))[0]["image"] == f"docker.io/library/postgres:16.4@{DIGEST}"
    assert one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    tagged = render(chart, {"image": {"repository": "r/server", "tag": "1.2.3"}})
    assert containers(one(tagged, "Deployment", FULLNAME))[0]["image"] == "r/server:1.2.3"


def test_ingress(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ingress = one(rendered["ingress"], "Ingress", FULLNAME)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["sk.example.com"], "secretName": "sk-tls"}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "sk.example.com"
    assert rule["http"]["paths"] == [{"path": "/", "pathType": "Prefix",
                                      "backend": {"service": {"name": FULLNAME, "port": {"name": "http"}}}}]


def test_drivers_settings_configmap(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["minio"]
    data = one(docs, "ConfigMap", "sematic-k8s")["data"]
    assert data["SEMATIC_K8S_SERVER"] == f"http://{FULLNAME}.{NAMESPACE}.svc:8000"
    assert one(docs, "Service", FULLNAME)["spec"]["ports"][0]["port"] == 8000
    assert data["SEMATIC_K8S_STORAGE"] == "s3://sematic-k8s-artifacts/runs"
    assert data["SEMATIC_K8S_S3_ENDPOINT"] == f"http://{FULLNAME}-minio.{NAMESPACE}.svc:9000"
    assert {p["port"] for p in one(docs, "Service", f"{FULLNAME}-minio")["spec"]["ports"]} == {9000, 9001}
    assert data["SEMATIC_K8S_SERVICE_ACCOUNT"] == "sematic-k8s-driver"
    assert data["SEMATIC_K8S_WORKER_SERVICE_ACCOUNT"] == "sematic-k8s-worker"
    assert data["SEMATIC_K8S_STORAGE_SECRET"] == "sematic-k8s-s3"
    [made] = [g for g in generated(docs) if g["name"] == "sematic-k8s-s3"]
    assert made["namespace"] == NAMESPACE


def test_settings_use_the_names_the_kubernetes_executor_reads(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The ConfigMap's keys are the environment variables launch_driver and the executor read."""
    pytest.importorskip("kubernetes")
    from sematic_k8s import settings
    from sematic_k8s.k8s import manifests

    docs = rendered["minio"]
    data = one(docs, "ConfigMap", "sematic-k8s")["data"]
    assert data[settings.SERVICE_ACCOUNT_ENV] == one(docs, "RoleBinding", f"{FULLNAME}-driver")["subjects"][0]["name"]
    assert data[settings.WORKER_SERVICE_ACCOUNT_ENV] == "sematic-k8s-worker"
    assert data[settings.STORAGE_SECRET_ENV] == "sematic-k8s-s3"
    assert data[settings.NAMESPACE_ENV] == NAMESPACE
    made = {g["name"]: g for g in generated(docs)}
    storage = made[made[data[settings.STORAGE_SECRET_ENV]]["name"]]
    storage = generated(docs)[storage["copy_of"]] if "copy_of" in storage else storage
    required = {k for k, (_, optional) in manifests.STORAGE_SECRET_KEYS.items() if not optional}
    assert required <= storage["data"].keys()


# -- PostgreSQL and MinIO ----------------------------------------------------------------------------------


def test_bundled_postgresql(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    sts = one(docs, "StatefulSet", f"{FULLNAME}-postgresql")
    assert sts["spec"]["serviceName"] == f"{FULLNAME}-postgresql-hl"
    assert one(docs, "Service", f"{FULLNAME}-postgresql-hl")["spec"]["clusterIP"] == "None"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    for variant in ("external-db-url", "external-db-secret"):
        assert not find(rendered[variant], "StatefulSet") and not find(rendered[variant], "Service",
                                                                       f"{FULLNAME}-postgresql")
    ephemeral = one(rendered["aws-s3-run-namespace"], "StatefulSet")
    assert "volumeClaimTemplates" not in ephemeral["spec"]


def test_minio_is_off_by_default_and_complete_when_on(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not [d for d in rendered["default"] if "minio" in d["metadata"]["name"]]
    docs = rendered["minio"]
    minio = one(docs, "Deployment", f"{FULLNAME}-minio")
    env = env_of(containers(minio)[0])
    assert env["MINIO_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": f"{FULLNAME}-s3",
                                                                        "key": "AWS_SECRET_ACCESS_KEY"}
    assert one(docs, "PersistentVolumeClaim", f"{FULLNAME}-minio")
    assert not find(docs, "Secret", f"{FULLNAME}-s3")  # made once by the secrets hook, never by a render
    made = generated(docs)
    [creds] = [g for g in made if g["name"] == f"{FULLNAME}-s3"]
    assert creds["data"] == {"AWS_ACCESS_KEY_ID": "sematic-k8s", "AWS_SECRET_ACCESS_KEY": None}
    [copy] = [g for g in made if g["name"] == "sematic-k8s-s3"]
    assert made[copy["copy_of"]] == creds
    assert not find(docs, "Job", f"{FULLNAME}-minio-bucket")  # a post-install hook would wait for the server
    bucket, server = containers(one(docs, "Deployment", FULLNAME))  # the bucket made before the server starts
    assert bucket["name"] == "create-bucket" and server["name"] == "server"
    for container in (bucket, server):
        assert env_of(container)["SEMATIC_K8S_S3_ENDPOINT"]["value"] == f"http://{FULLNAME}-minio.{NAMESPACE}.svc:9000"
    assert [c["name"] for c in containers(one(rendered["default"], "Deployment", FULLNAME))] == ["server"]


@pytest.fixture(name="s3_endpoint")
def s3_endpoint_fixture() -> Iterator[str]:
    """A real S3 API on 127.0.0.1: $AWS_ENDPOINT_URL_S3 when set (CI's server), else moto's in-process."""
    with s3server.s3_endpoint() as url:
        yield url


def test_the_bucket_init_container_creates_the_bucket(chart: Any, s3_endpoint: str, tmp_path: Path) -> None:
    boto3 = pytest.importorskip("boto3")
    job = one(render(chart, {"minio": {"enabled": True}}), "Deployment", FULLNAME)
    bucket = f"helm-{uuid.uuid4().hex[:12]}"
    env = {"SEMATIC_K8S_S3_BUCKET": bucket, "SEMATIC_K8S_S3_ENDPOINT": s3_endpoint, "WAIT_SECONDS": "10",
           "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
           "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test")}
    done = _run_hook_script(job, env, tmp_path)
    assert done.returncode == 0 and "created" in done.stderr, done.stderr
    again = _run_hook_script(job, env, tmp_path)
    assert again.returncode == 0 and "exists" in again.stderr, again.stderr
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    client.head_bucket(Bucket=bucket)
    client.delete_bucket(Bucket=bucket)


# -- values, errors, notes ----------------------------------------------------------------------------------


def test_every_value_is_documented() -> None:
    """Each key in values.yaml has a comment on the line above it (or on its own line)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        if not re.match(r"^\s*(- )?[A-Za-z][\w.-]*:", line):
            continue
        prev = lines[i - 1].strip() if i else ""
        if "#" not in line.split(":", 1)[1] and not prev.startswith("#"):
            undocumented.append(f"{i + 1}: {line.strip()}")
    assert not undocumented, "values without a comment:\n" + "\n".join(undocumented)


@pytest.mark.parametrize("values, message", [
    ({"database": {"external": {"url": "postgresql://x"}}}, "postgresql.enabled=false"),
    ({"postgresql": {"enabled": False}}, "database.external.url"),
    ({"artifacts": {"s3": {"accessKeyId": "AKIA"}}}, "artifacts.s3.secretAccessKey"),
    ({"server": {"rerunLauncher": "docker"}}, "server.rerunLauncher must be"),
    ({"server": {"actionsBy": "owners"}}, 'server.actionsBy must be "team" (any user key acts on any resolution) or '
                                          '"owner" (a user key on its own), not "owners"'),
    ({"server": {"terminationGracePeriodSeconds": 10}}, "server.terminationGracePeriodSeconds (10) must be at least "
                                                        "server.shutdownDelaySeconds (5) + 6"),
    ({"image": {"repository": ""}}, "image.repository is required: the server image in a registry your nodes pull "
                                    "from"),
    ({"minio": {"enabled": True}, "runs": {"namespace": "runs", "createNamespace": True}},
     "create it first (kubectl create namespace runs) and set runs.createNamespace=false, or give minio.rootPassword"),
    ({"server": {"database": {"poolSize": 0}}}, "server.database.poolSize must be a whole number of connections >= 1, "
                                                "not 0: set one (the default is 50)"),
    ({"server": {"database": {"poolSize": 2.5}}}, "server.database.poolSize must be a whole number"),
    ({"server": {"database": {"poolTimeoutSeconds": 60}}}, "server.database.poolTimeoutSeconds must be above 0 and "
                                                           "below 60, the clients' request timeout"),
    ({"server": {"database": {"poolTimeoutSeconds": "soon"}}}, "server.database.poolTimeoutSeconds must be above 0"),
    ({"server": {"database": {"lockTimeoutSeconds": -1}}}, "server.database.lockTimeoutSeconds must be a number of "
                                                           "seconds >= 0"),
    ({"server": {"database": {"pooler": "session"}}}, 'server.database.pooler must be "none" (PostgreSQL itself, or a '
                                                      'session-pooling PgBouncer) or "transaction" (PgBouncer\'s '
                                                      'transaction pooling), not "session"'),
])
def test_contradictory_values_fail_with_a_clear_message(chart: Any, helm: Any, values: dict[str, Any],
                                                        message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(chart, values)


def test_notes(chart: Any) -> None:
    notes = render_files(chart, VARIANTS["minio"])["sematic-k8s/templates/NOTES.txt"]
    assert f"port-forward svc/{FULLNAME} 8000:8000" in notes
    assert "sematic-k8s api-keys create" in notes and "sematic-k8s api-keys revoke" in notes
    assert "api-keys create NAME --read-only" in notes
    assert "sematic-k8s/resolution-id=" in notes
    assert f"port-forward svc/{FULLNAME}-minio 9000:9000" in notes


def test_client_side_install_dry_run_orders_hooks(helm: Any) -> None:
    """Helm's install action (client dry run, in-memory release storage) accepts the chart and sorts the
    migration Job out of the manifest into the release's hooks."""
    with helm.Config(namespace=NAMESPACE, storage_driver="memory") as cfg:
        release = cfg.install(str(CHART), RELEASE, with_image(VARIANTS["external-db-url"]), namespace=NAMESPACE,
                              dry_run="client")
    assert release["status"] == "pending-install"
    manifest = release["manifest"]
    assert f"name: {FULLNAME}-migrate" not in manifest
    assert "kind: StatefulSet" not in manifest and "kind: Deployment" in manifest


# -- what the chart asks of a cluster, and of the code ------------------------------------------------------------


def test_the_chart_needs_kubernetes_1_27() -> None:
    """podFailurePolicy (on by default from 1.26) and the batch.kubernetes.io/* pod labels (1.27) the driver reads:
    Helm refuses to install on an older cluster (the -0 lets pre-release and vendor builds such as 1.29.3-eks
    through)."""
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart_yaml["kubeVersion"] == ">=1.27.0-0"
    assert "1.27" in (CHART / "README.md").read_text()


def test_third_party_images_are_pinned_by_digest(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant in ("default", "minio"):
        for workload in (d for d in rendered[variant] if d["kind"] in WORKLOADS):
            for container in containers(workload):
                if not container["image"].startswith(SERVER_REPOSITORY):
                    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", container["image"]), container


# Each Kubernetes API call the driver makes (its executor and watches), by client method -> (group, resource,
# verbs): the chart's driver Role must grant exactly these. A new call fails this test until it is listed here
# (and granted, or dropped).
DRIVER_CALLS = {
    "create_namespaced_job": ("batch", "jobs", {"create"}),
    "read_namespaced_job": ("batch", "jobs", {"get"}),
    "list_namespaced_job": ("batch", "jobs", {"list", "watch"}),  # listed, then watched (k8s/watch.py)
    "delete_namespaced_job": ("batch", "jobs", {"delete"}),
    "list_namespaced_pod": ("", "pods", {"list", "watch"}),
    "delete_namespaced_pod": ("", "pods", {"delete"}),
    "read_namespaced_pod_log": ("", "pods/log", {"get"}),
    "list_namespaced_event": ("", "events", {"list", "watch"}),  # listed, then watched (Warning Events)
    "create_namespaced_secret": ("", "secrets", {"create"}),  # a worker Job's task, presigned URLs and all
    "delete_namespaced_secret": ("", "secrets", {"delete"}),  # when its run ends (or one an earlier driver left)
}
DRIVER_CODE = ("sematic_k8s/executors/kubernetes.py", "sematic_k8s/k8s/watch.py", "sematic_k8s/k8s/pods.py",
               "sematic_k8s/k8s/client.py", "sematic_k8s/driver.py")


def test_the_driver_role_grants_exactly_the_calls_the_driver_makes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    called = set()
    for path in DRIVER_CODE:
        called |= set(re.findall(r"\.((?:create|read|list|delete|patch|replace)_namespaced_\w+)", (REPO / path)
                                 .read_text()))
    assert called <= DRIVER_CALLS.keys(), f"calls the Role was not checked against: {called - DRIVER_CALLS.keys()}"
    needed: dict[tuple[str, str], set[str]] = {}
    for method in called | {"list_namespaced_event"}:  # the events listing may live in a module not scanned
        group, resource, verbs = DRIVER_CALLS[method]
        needed.setdefault((group, resource), set()).update(verbs)
    assert _granted(one(regular(rendered["default"]), "Role", f"{FULLNAME}-driver")) == needed == DRIVER_RULES
