"""The cluster model's API server (tests/support/kube_model), through the official ``kubernetes`` client over HTTP:
object semantics, errors, patches, pagination, watches, deletion and garbage collection, faults, request log.

Each behaviour is checked against what the Kubernetes documentation says (pages cited per test)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")

from kubernetes import client  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from kubernetes.watch.watch import iter_resp_lines  # noqa: E402

from kube_model import Cluster, NodeSpec, Script, Timing  # noqa: E402

NS = "model"
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "ab" * 32


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster([NodeSpec("node-1", runtime="sim")], timing=Timing(bookmark_interval=0.2),
                 behaviour=lambda pod, c: Script(run=0.05)) as c:
        c.namespace(NS)
        yield c
        assert not c.errors, c.errors


def job_body(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": {"app": "x"}},
            "spec": {"backoffLimit": 0, **spec, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {
                "restartPolicy": "Never", "containers": [{"name": "main", "image": IMAGE}]}}}}


VALUE_RULE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
              "must start and end with an alphanumeric character")


def status_of(e: ApiException) -> dict[str, Any]:
    return json.loads(e.body)


def cm(name: str, **data: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels={"tier": name[:1]}), data=data or None)


# -- metadata, defaulting, errors ----------------------------------------------------------------------------


def test_create_fills_metadata_and_generate_name(api):
    # https://kubernetes.io/docs/reference/using-api/api-concepts/#generated-values
    core = client.CoreV1Api(api)
    made = core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="cfg-")))
    assert made.metadata.name.startswith("cfg-") and len(made.metadata.name) == len("cfg-") + 5
    # a long generateName is cut to 58 characters before the random 5 (names stay <= 63: Job pods, hostnames)
    long = core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(
        generate_name="g" * 62 + "-")))
    assert len(long.metadata.name) == 63 and long.metadata.name.startswith("g" * 58)
    assert made.metadata.uid and made.metadata.creation_timestamp and made.metadata.namespace == NS
    again = core.patch_namespaced_config_map(made.metadata.name, NS, {"data": {"a": "1"}})
    assert int(again.metadata.resource_version) > int(made.metadata.resource_version)
    assert again.metadata.uid == made.metadata.uid


def test_job_defaults_selector_labels_and_generation(api):
    # https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-selector and
    # https://kubernetes.io/docs/reference/labels-annotations-taints/#batchkubernetesiojob-name
    batch = client.BatchV1Api(api)
    job = batch.create_namespaced_job(NS, job_body("defaults", backoffLimit=None))
    uid = job.metadata.uid
    assert job.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    assert job.spec.template.metadata.labels == {
        "app": "x", "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": "defaults",
        "controller-uid": uid, "job-name": "defaults"}
    assert (job.spec.parallelism, job.spec.completions, job.spec.backoff_limit) == (1, 1, 6)
    assert job.spec.completion_mode == "NonIndexed" and job.spec.suspend is False
    assert job.metadata.generation == 1
    c = job.spec.template.spec.containers[0]
    assert c.termination_message_path == "/dev/termination-log" and c.image_pull_policy == "IfNotPresent"
    job = batch.patch_namespaced_job("defaults", NS, {"spec": {"suspend": True}})
    assert job.metadata.generation == 2
    job = batch.patch_namespaced_job("defaults", NS, {"metadata": {"labels": {"more": "1"}}})
    assert job.metadata.generation == 2  # metadata changes leave the generation alone


def test_invalid_names_and_labels_are_422_with_causes(api):
    # https://kubernetes.io/docs/concepts/overview/working-with-objects/names/#dns-subdomain-names
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, cm("Bad_Name"))
    body = status_of(err.value)
    assert err.value.status == 422 and body["reason"] == "Invalid" and body["kind"] == "Status"
    assert body["message"].startswith('ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
                                      "a lowercase RFC 1123 subdomain must consist of")
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    # https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(
            name="ok", labels={"sematic-k8s/func": "has spaces"})))
    assert err.value.status == 422 and "a valid label must be an empty string" in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(
            name="ok", labels={"x" * 64: "v"})))
    assert "name part must be no more than 63 characters" in status_of(err.value)["message"]
    # the job-name label holds the Job's name: more than 63 characters is invalid
    with pytest.raises(ApiException) as err:
        batch.create_namespaced_job(NS, job_body("j" * 64))
    assert err.value.status == 422 and "must be no more than 63 characters" in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        batch.create_namespaced_job(NS, {**job_body("always"), "spec": {
            "template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "m", "image": IMAGE}]}}}})
    assert 'spec.template.spec.restartPolicy: Unsupported value: "Always"' in status_of(err.value)["message"]


def test_secrets_and_config_maps_over_one_mib_are_422_too_long(api):
    # https://kubernetes.io/docs/concepts/configuration/secret/#restriction-data-size (pkg/apis/core/validation:
    # ValidateSecret, ValidateConfigMap; core.MaxSecretSize): the values' bytes, a Secret's decoded, at most 1 MiB
    core, mib = client.CoreV1Api(api), 1024 * 1024
    half = base64.b64encode(b"x" * (mib // 2)).decode()
    core.create_namespaced_secret(NS, {"metadata": {"name": "full"}, "data": {"a": half, "b": half}})  # 1 MiB: fine
    too_long = "Too long: must have at most 1048576 bytes"
    for body in ({"data": {"a": half, "b": half, "c": "eA=="}},  # one byte more
                 {"data": {"a": half}, "stringData": {"b": "x" * (mib // 2 + 1)}}):  # stringData counts, merged in
        with pytest.raises(ApiException) as err:
            core.create_namespaced_secret(NS, {"metadata": {"name": "big"}, **body})
        status = status_of(err.value)
        assert err.value.status == 422 and status["reason"] == "Invalid", status
        assert status["message"] == f'Secret "big" is invalid: data: {too_long}'
        assert status["details"]["causes"] == [{"reason": "FieldValueTooLong", "message": too_long, "field": "data"}]
    with pytest.raises(ApiException) as err:  # an update is held to it too
        core.patch_namespaced_secret("full", NS, {"data": {"c": "eA=="}})
    assert err.value.status == 422 and status_of(err.value)["details"]["causes"][0]["field"] == "data"
    core.create_namespaced_config_map(NS, cm("full-cm", a="x" * (mib // 2), b="x" * (mib // 2)))
    with pytest.raises(ApiException) as err:  # a ConfigMap's data and binaryData together; on the whole object
        core.create_namespaced_config_map(NS, {"metadata": {"name": "big-cm"}, "data": {"a": "x" * (mib // 2)},
                                               "binaryData": {"b": base64.b64encode(b"x" * (mib // 2 + 1)).decode()}})
    status = status_of(err.value)
    assert err.value.status == 422 and status["message"] == f'ConfigMap "big-cm" is invalid: []: {too_long}'
    assert status["details"]["causes"] == [{"reason": "FieldValueTooLong", "message": too_long, "field": "[]"}]
    assert {s.metadata.name for s in core.list_namespaced_secret(NS).items} >= {"full"}
    assert "big" not in {s.metadata.name for s in core.list_namespaced_secret(NS).items}


def test_a_request_body_over_three_mib_is_413_request_entity_too_large(api):
    # kube-apiserver's MaxRequestBodyBytes (3 MiB by default: apiserver/pkg/server/config.go), read by every handler
    # that takes a body (apiserver/pkg/endpoints/handlers/rest.go limitedReadBody): over it, 413 in a Status
    # (apimachinery NewRequestEntityTooLargeError), before any validation, on create, patch and update alike.
    # Was: read whole (aiohttp's own limit, 64 MiB), the 1 MiB validation answering 422 instead.
    core, limit = client.CoreV1Api(api), 3 * 1024 * 1024
    body = {"metadata": {"name": "huge"}, "data": {"a": "x" * limit}}
    core.create_namespaced_config_map(NS, cm("small", a="x"))
    for call in (lambda: core.create_namespaced_config_map(NS, body),
                 lambda: core.patch_namespaced_config_map("small", NS, {"data": {"a": "x" * limit}}),
                 lambda: core.replace_namespaced_config_map("small", NS, {**body, "metadata": {"name": "small"}})):
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 413
        assert status_of(err.value) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                        "message": "Request entity too large: limit is 3145728",
                                        "reason": "RequestEntityTooLarge", "code": 413}
    assert "huge" not in {c.metadata.name for c in core.list_namespaced_config_map(NS).items}
    assert core.read_namespaced_config_map("small", NS).data == {"a": "x"}
    fits = {"metadata": {"name": "fits"}, "data": {"a": "x" * (limit - 200)}}  # under 3 MiB: validation's 422
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, fits)
    assert err.value.status == 422, err.value.body[:300]


def test_device_plugin_resources_are_whole_units_and_requests_equal_limits(api):
    # https://kubernetes.io/docs/tasks/manage-gpus/scheduling-gpus/ and
    # https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/#extended-resources
    core = client.CoreV1Api(api)
    refused = {"0.5": ({"limits": {"nvidia.com/gpu": "500m"}}, 'resources.limits[nvidia.com/gpu]: Invalid value: '
                                                                 '"500m": must be an integer'),
               "requests only": ({"requests": {"nvidia.com/gpu": "1"}}, "resources.limits: Required value: Limit "
                                                                        "must be set for non overcommitable resources"),
               "requests below limits": ({"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "2"}},
                                         'resources.requests: Invalid value: "1": must be equal to nvidia.com/gpu '
                                         "limit of 2")}
    for what, (resources, words) in refused.items():
        with pytest.raises(ApiException) as err:
            core.create_namespaced_pod(NS, {"metadata": {"name": "gpu"}, "spec": {"containers": [
                {"name": "main", "image": IMAGE, "resources": resources}]}})
        assert err.value.status == 422 and words in status_of(err.value)["message"], what
    made = core.create_namespaced_pod(NS, {"metadata": {"name": "gpu"}, "spec": {"containers": [
        {"name": "main", "image": IMAGE, "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}})
    assert made.spec.containers[0].resources.requests == {"nvidia.com/gpu": "1"}  # defaulted from the limit


def test_already_exists_not_found_and_conflict_bodies(api):
    # https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions (optimistic concurrency)
    core = client.CoreV1Api(api)
    made = core.create_namespaced_config_map(NS, cm("once"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, cm("once"))
    assert err.value.status == 409 and status_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'configmaps "once" already exists', "reason": "AlreadyExists",
        "details": {"name": "once", "kind": "configmaps"}, "code": 409}
    with pytest.raises(ApiException) as err:
        client.BatchV1Api(api).read_namespaced_job("nope", NS)
    assert err.value.status == 404 and status_of(err.value)["message"] == 'jobs.batch "nope" not found'
    assert status_of(err.value)["details"] == {"name": "nope", "group": "batch", "kind": "jobs"}
    core.patch_namespaced_config_map("once", NS, {"data": {"k": "v"}})
    made.data = {"k": "stale"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("once", NS, made)
    assert err.value.status == 409 and status_of(err.value)["reason"] == "Conflict"
    assert "the object has been modified" in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("no-such-ns", cm("x"))
    assert err.value.status == 404 and status_of(err.value)["message"] == 'namespaces "no-such-ns" not found'


def test_replace_patch_flavours_and_status_subresource(api):
    # https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    core.create_namespaced_config_map(NS, cm("p", a="1", b="2"))
    current = core.read_namespaced_config_map("p", NS)
    current.data["c"] = "3"
    assert core.replace_namespaced_config_map("p", NS, current).data == {"a": "1", "b": "2", "c": "3"}
    merged = core.patch_namespaced_config_map("p", NS, {"data": {"a": None, "d": "4"}},
                                              _content_type="application/merge-patch+json")
    assert merged.data == {"b": "2", "c": "3", "d": "4"}
    patched = core.patch_namespaced_config_map("p", NS, [{"op": "replace", "path": "/data/b", "value": "two"}])
    assert patched.data["b"] == "two"
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("p", NS, [{"op": "test", "path": "/data/b", "value": "2"}])
    assert err.value.status == 422
    batch.create_namespaced_job(NS, job_body("s", suspend=True))
    with pytest.raises(ApiException) as err:  # a Job's pod template is immutable
        batch.patch_namespaced_job("s", NS, {"spec": {"template": {"spec": {"containers": [
            {"name": "main", "env": [{"name": "A", "value": "1"}]}]}}}})
    assert err.value.status == 422 and "spec.template: Invalid value" in status_of(err.value)["message"]
    assert "field is immutable" in status_of(err.value)["message"]
    core.create_namespaced_service(NS, {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}})
    lb = {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}
    assert core.patch_namespaced_service_status("svc", NS, {"status": lb}).status.load_balancer.ingress[0].ip == \
        "10.0.0.1"
    svc = core.patch_namespaced_service("svc", NS, {"status": {"loadBalancer": {}}, "metadata": {"labels": {"z": "1"}}})
    assert svc.status.load_balancer.ingress[0].ip == "10.0.0.1"  # status changes only through /status
    assert svc.metadata.labels == {"z": "1"}


def test_strategic_merge_patch_merges_lists_by_key(api):
    core = client.CoreV1Api(api)
    pod = {"metadata": {"name": "smp"}, "spec": {"nodeName": "nowhere", "containers": [
        {"name": "a", "image": IMAGE, "env": [{"name": "X", "value": "1"}]}, {"name": "b", "image": IMAGE}]}}
    core.create_namespaced_pod(NS, pod)
    core.patch_namespaced_pod_status("smp", NS, {"status": {"conditions": [
        {"type": "Custom", "status": "True"}]}})
    patched = core.patch_namespaced_pod_status("smp", NS, {"status": {"conditions": [
        {"type": "Other", "status": "False"}]}})
    assert {c.type for c in patched.status.conditions} >= {"Custom", "Other"}  # merged by type
    patched = core.patch_namespaced_pod("smp", NS, {"metadata": {"finalizers": ["a/b"]}})
    patched = core.patch_namespaced_pod("smp", NS, {"metadata": {"finalizers": ["c/d"]}})
    assert patched.metadata.finalizers == ["a/b", "c/d"]
    core.patch_namespaced_pod("smp", NS, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/b", "c/d"]}})


def test_list_selectors_and_pagination_with_expired_continue(cluster, api):
    # https://kubernetes.io/docs/reference/using-api/api-concepts/#retrieving-large-results-sets-in-chunks
    core = client.CoreV1Api(api)
    for i in range(7):
        core.create_namespaced_config_map(NS, cm(f"{'ab'[i % 2]}-{i}"))
    assert [m.metadata.name for m in core.list_namespaced_config_map(NS, label_selector="tier=a").items] == [
        "a-0", "a-2", "a-4", "a-6"]
    assert len(core.list_namespaced_config_map(NS, label_selector="tier in (a,b),tier!=b").items) == 4
    assert [m.metadata.name for m in core.list_namespaced_config_map(
        NS, field_selector="metadata.name=b-3").items] == ["b-3"]
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map(NS, field_selector="spec.nope=1")
    assert err.value.status == 400
    first = core.list_namespaced_config_map(NS, limit=3)
    assert len(first.items) == 3 and first.metadata._continue and first.metadata.remaining_item_count == 5
    core.create_namespaced_config_map(NS, cm("zz-late"))  # not in the snapshot of the first page
    names = [m.metadata.name for m in first.items]
    token = first.metadata._continue
    while token:
        page = core.list_namespaced_config_map(NS, limit=3, _continue=token)
        names += [m.metadata.name for m in page.items]
        token = page.metadata._continue
    assert "zz-late" not in names and len(names) == 8  # 7 + kube-root-ca.crt, as of the first page
    second = core.list_namespaced_config_map(NS, limit=2)
    core.create_namespaced_config_map(NS, cm("zz-later"))
    cluster.compact()  # etcd compaction past the snapshot the token reads
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map(NS, limit=2, _continue=second.metadata._continue)
    assert err.value.status == 410 and status_of(err.value)["reason"] == "Expired"
    assert "The provided continue parameter is too old" in status_of(err.value)["message"]


def test_lists_and_objects_as_their_metadata_only_and_accept_headers_not_served(cluster, api):
    # https://kubernetes.io/docs/reference/using-api/api-concepts/#receiving-resources-as-tables ("metadata only"),
    # apimachinery's negotiation.NegotiateMediaTypeOptions and the apiserver's transformObject
    core = client.CoreV1Api(api)
    for i in range(5):
        core.create_namespaced_secret(NS, {"metadata": {"name": f"s-{i}", "labels": {"app": "x"}},
                                           "stringData": {"token": f"t{i}"}})

    def answer(fn: Any, *args: Any, accept: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        try:
            resp = fn(*args, _preload_content=False, _headers={"Accept": accept}, **kwargs)
        except ApiException as e:
            return e.status, json.loads(e.body)
        return resp.status, json.loads(resp.data)

    meta_list = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
    names: list[str] = []
    token = None
    while True:  # paged as the list itself: limit and continue kept
        status, page = answer(core.list_namespaced_secret, NS, accept=meta_list, label_selector="app=x", limit=2,
                              **({"_continue": token} if token else {}))
        assert status == 200 and page["kind"] == "PartialObjectMetadataList", page
        assert page["apiVersion"] == "meta.k8s.io/v1" and page["metadata"]["resourceVersion"]
        assert all(set(item) == {"kind", "apiVersion", "metadata"} and item["kind"] == "PartialObjectMetadata"
                   and item["metadata"]["labels"] == {"app": "x"} for item in page["items"]), page
        names += [item["metadata"]["name"] for item in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            break
    assert names == [f"s-{i}" for i in range(5)]
    status, one = answer(core.read_namespaced_secret, "s-1", NS,
                         accept="application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")
    assert status == 200 and one["kind"] == "PartialObjectMetadata" and "data" not in one, one
    # a clause not served is passed over for the next; none served: 406 NotAcceptable
    status, whole = answer(core.list_namespaced_secret, NS, accept="application/json;as=Nope;g=meta.k8s.io;v=v1, "
                                                                   "application/json;q=0.5")
    assert status == 200 and whole["kind"] == "SecretList" and whole["items"][0]["data"], whole
    served = "only the following media types are accepted: application/json, application/yaml, " \
             "application/vnd.kubernetes.protobuf"
    for accept in ("text/html", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v2",
                   "application/json;as=Table;g=meta.k8s.io;v=v1"):  # Table: not modelled (a real server makes one)
        assert answer(core.list_namespaced_secret, NS, accept=accept) == (406, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": served,
            "reason": "NotAcceptable", "code": 406}), accept
    status, refused = answer(core.list_namespaced_secret, NS,
                             accept="application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")
    assert (status, refused["message"]) == (406, "you requested PartialObjectMetadata, but the requested object is "
                                                 "a list (*core.SecretList)")
    status, refused = answer(core.read_namespaced_secret, "s-1", NS, accept=meta_list)
    assert (status, refused["message"]) == (406, "you requested PartialObjectMetadataList, but the requested object "
                                                 "is not a list (*core.Secret)")
    assert answer(core.list_namespaced_secret, NS, accept="*/*")[1]["kind"] == "SecretList"


def test_list_and_watch_options_are_validated_as_the_api_server_does(api):
    # https://kubernetes.io/docs/reference/using-api/api-concepts/#the-resourceversion-parameter and
    # apimachinery's ValidateListOptions: a continue token carries the version its pages read, so no other may be
    # asked for beside it; resourceVersionMatch is for lists (a watch takes it only with sendInitialEvents)
    core = client.CoreV1Api(api)
    for i in range(3):
        core.create_namespaced_config_map(NS, cm(f"o-{i}"))
    first = core.list_namespaced_config_map(NS, limit=1)
    token, rv = first.metadata._continue, first.metadata.resource_version
    refused = {
        "continue beside a resourceVersion": (400, "specifying resource version is not allowed when using continue",
                                              {"_continue": token, "resource_version": rv}),
        "continue beside resourceVersionMatch": (422, "resourceVersionMatch: Forbidden: resourceVersionMatch is "
                                                      "forbidden when continue is provided",
                                                 {"_continue": token, "resource_version": "0",
                                                  "resource_version_match": "NotOlderThan"}),
        "Exact at 0": (422, 'resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
                       {"resource_version": "0", "resource_version_match": "Exact"}),
        "an unknown match": (422, 'resourceVersionMatch: Unsupported value: "Newest"',
                             {"resource_version": rv, "resource_version_match": "Newest"}),
        "a match without a version": (422, "resourceVersionMatch is forbidden unless resourceVersion is provided",
                                      {"resource_version_match": "NotOlderThan"}),
        "a watch with a match": (422, "resourceVersionMatch is forbidden for watch unless sendInitialEvents is "
                                      "provided", {"watch": True, "resource_version": rv,
                                                   "resource_version_match": "NotOlderThan", "timeout_seconds": 1}),
    }
    for what, (code, words, kwargs) in refused.items():
        with pytest.raises(ApiException) as err:
            core.list_namespaced_config_map(NS, limit=1, _preload_content=False, **kwargs)
        assert err.value.status == code and words in status_of(err.value)["message"], what
        if code == 422:
            assert status_of(err.value)["message"].startswith('ListOptions.meta.k8s.io "" is invalid: '), what
    # what a pager does is fine: "0" (or nothing) beside the token, and a limit that is not positive means none
    assert len(core.list_namespaced_config_map(NS, limit=1, _continue=token, resource_version="0").items) == 1
    assert len(core.list_namespaced_config_map(NS, limit=-1).items) == 4  # with kube-root-ca.crt


def _watch(api: client.ApiClient, events: list[dict[str, Any]], stop: threading.Event, **kwargs: Any) -> None:
    resp = client.CoreV1Api(api).list_namespaced_config_map(NS, watch=True, _preload_content=False, **kwargs)
    for line in iter_resp_lines(resp):
        events.append(json.loads(line))
        if stop.is_set():
            break
    resp.release_conn()


def test_label_selectors_are_decoded_with_the_label_rules(api):
    # https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set: a
    # selector's keys and values must be valid label keys and values; apimachinery's labels.Parse (NewRequirement)
    # checks them when the API server decodes the query, a 400 BadRequest, whatever the verb
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    value_rule = VALUE_RULE
    refused = {
        "a value of 64 characters": ("sematic-k8s/run-id=" + "a" * 64, f'unable to parse requirement: '
                                     f'values[0][sematic-k8s/run-id]: Invalid value: "{"a" * 64}": must be no more '
                                     f'than 63 characters'),
        "a value with a slash": ("app=ns/name", 'unable to parse requirement: values[0][app]: Invalid value: '
                                                f'"ns/name": {value_rule}'),
        "a value in a set": ("app in (ok,-bad)", 'unable to parse requirement: values[1][app]: Invalid value: '
                                                 f'"-bad": {value_rule}'),
        "a key": ("-app=x", 'unable to parse requirement: key: Invalid value: "-app": name part must consist of '),
    }
    for what, (selector, words) in refused.items():
        for call, kwargs in ((batch.list_namespaced_job, {}),
                             (core.list_namespaced_pod, {"watch": True, "timeout_seconds": 1,
                                                         "_preload_content": False}),
                             (core.delete_collection_namespaced_config_map, {})):
            with pytest.raises(ApiException) as err:
                call(NS, label_selector=selector, **kwargs)
            body = status_of(err.value)
            assert (err.value.status, body["reason"]) == (400, "BadRequest"), what
            assert body["message"].startswith(words), (what, body["message"])
    assert batch.list_namespaced_job(NS, label_selector="sematic-k8s/run-id=" + "a" * 63 + ",app in (x, y),!z"
                                     ).items == []


def test_immutable_job_spec_fields_are_refused_and_the_rest_may_change(api):
    # apis/batch/validation ValidateJobSpecUpdate: completions, selector, template (of a Job that started),
    # completionMode, podFailurePolicy and backoffLimitPerIndex are immutable; parallelism, backoffLimit,
    # activeDeadlineSeconds, ttlSecondsAfterFinished, suspend may change
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(NS, job_body("fixed"))
    for field, value in (("podFailurePolicy", {"rules": [{"action": "Ignore", "onPodConditions": [
            {"type": "DisruptionTarget"}]}]}), ("completionMode", "Indexed"), ("completions", 2)):
        with pytest.raises(ApiException) as err:
            batch.patch_namespaced_job("fixed", NS, {"spec": {field: value}})
        assert err.value.status == 422 and status_of(err.value)["reason"] == "Invalid", field
        assert f"spec.{field}: Invalid value: " in status_of(err.value)["message"], field
        assert status_of(err.value)["message"].endswith("field is immutable"), field
    changed = batch.patch_namespaced_job("fixed", NS, {"spec": {"parallelism": 0, "backoffLimit": 2,
                                                                "ttlSecondsAfterFinished": 5}})
    assert (changed.spec.parallelism, changed.spec.backoff_limit, changed.spec.ttl_seconds_after_finished) == (0, 2, 5)


def test_a_bookmark_never_runs_ahead_of_changes_the_watch_has_not_sent(cluster, api):
    # https://kubernetes.io/docs/reference/using-api/api-concepts/#watch-bookmarks: a BOOKMARK says every change
    # up to its resourceVersion was sent, so a client resumes from it; changes that piled up while the stream's
    # timeout ran out must come on the resumed watch, not be skipped by a bookmark at the newest version
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, cm("b-0"))
    events: list[dict[str, Any]] = []
    t = threading.Thread(target=_watch, args=(api, events, threading.Event()), kwargs={
        "allow_watch_bookmarks": True, "timeout_seconds": 1, "label_selector": "tier=b"})
    t.start()
    cluster.wait(lambda: events, message="the watch's first event")

    def burst() -> None:  # two changes, then the loop is busy past the watch's deadline
        cluster.apply([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n, "labels": {"tier": "b"}}}
                       for n in ("b-1", "b-2")], namespace=NS)
        time.sleep(1.5)
    cluster.call(burst)
    t.join(10)
    assert not t.is_alive()
    resumed: list[dict[str, Any]] = []
    _watch(api, resumed, threading.Event(), allow_watch_bookmarks=True, timeout_seconds=1, label_selector="tier=b",
           resource_version=events[-1]["object"]["metadata"]["resourceVersion"])  # as a watcher resumes
    added = [e["object"]["metadata"]["name"] for e in events + resumed if e["type"] == "ADDED"]
    assert added == ["b-0", "b-1", "b-2"], [(e["type"], e["object"]["metadata"]) for e in events + resumed]


def test_watch_initial_state_resume_bookmarks_and_timeout(cluster, api):
    # https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes and
    # https://kubernetes.io/docs/reference/using-api/api-concepts/#watch-bookmarks
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, cm("w-1"))
    events: list[dict[str, Any]] = []
    stop = threading.Event()
    t = threading.Thread(target=_watch, args=(api, events, stop), kwargs={
        "allow_watch_bookmarks": True, "timeout_seconds": 2, "label_selector": "tier=w"})
    t.start()
    cluster.wait(lambda: events)
    core.create_namespaced_config_map(NS, cm("w-2"))
    core.patch_namespaced_config_map("w-2", NS, {"metadata": {"labels": {"tier": "other"}}})  # leaves the selection
    core.delete_namespaced_config_map("w-1", NS)
    t.join(10)
    kinds = [(e["type"], e["object"]["metadata"].get("name")) for e in events if e["type"] != "BOOKMARK"]
    assert kinds == [("ADDED", "w-1"), ("ADDED", "w-2"), ("DELETED", "w-2"), ("DELETED", "w-1")]
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks and set(bookmarks[0]["object"]["metadata"]) == {"resourceVersion"}
    assert bookmarks[0]["object"]["kind"] == "ConfigMap"
    assert not t.is_alive()  # timeoutSeconds ended the stream
    # resuming from a version replays what came after it
    rv = events[0]["object"]["metadata"]["resourceVersion"]
    again: list[dict[str, Any]] = []
    _watch(api, again, threading.Event(), resource_version=rv, timeout_seconds=1, label_selector="tier=w")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in again] == [
        ("ADDED", "w-2"), ("DELETED", "w-2"), ("DELETED", "w-1")]


def test_a_watch_sends_every_change_queued_while_a_bookmark_is_due():
    # a bookmark waits until the changes queued before it are sent; those are sent meanwhile (the stream kept
    # timing out on an empty wait instead, and a busy watch, such as a fan-out's pods, stopped for good). Bookmarks
    # are due all the time here, so that changes are always queued while one is due.
    with Cluster([NodeSpec("node-1", runtime="sim")], timing=Timing(bookmark_interval=0.001)) as cluster:
        cluster.namespace(NS)
        api = cluster.client()
        core = client.CoreV1Api(api)
        events: list[dict[str, Any]] = []
        stop = threading.Event()
        t = threading.Thread(target=_watch, args=(api, events, stop), kwargs={
            "allow_watch_bookmarks": True, "timeout_seconds": 30, "label_selector": "tier=b"}, daemon=True)
        t.start()
        cluster.wait(lambda: any(e["type"] == "BOOKMARK" for e in events), message="the first bookmark")
        names = [f"b-{i}" for i in range(20)]
        for name in names:
            core.create_namespaced_config_map(NS, cm(name))
        cluster.wait(lambda: [e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED"] == names,
                     timeout=10, message="every ADDED on the watch")
        stop.set()
        cluster.drop_watches()
        t.join(10)
        api.close()
        assert not cluster.errors, cluster.errors


def test_watch_from_a_compacted_version_gets_an_in_stream_410(cluster, api):
    core = client.CoreV1Api(api)
    old = core.create_namespaced_config_map(NS, cm("old")).metadata.resource_version
    core.create_namespaced_config_map(NS, cm("new"))
    cluster.compact()
    events: list[dict[str, Any]] = []
    _watch(api, events, threading.Event(), resource_version=old, timeout_seconds=5)
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    assert events[0]["object"]["message"].startswith(f"too old resource version: {old} (")
    # a list at an exact, compacted version is an HTTP 410
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map(NS, resource_version=old, resource_version_match="Exact")
    assert err.value.status == 410


def test_dropped_watches_and_injected_watch_errors(cluster, api):
    events: list[dict[str, Any]] = []
    t = threading.Thread(target=_watch, args=(api, events, threading.Event()), kwargs={"timeout_seconds": 30})
    t.start()
    cluster.wait(lambda: cluster.call(lambda: len(cluster.server.watches)) == 1)
    assert cluster.drop_watches() == 1
    t.join(10)
    assert not t.is_alive()
    t = threading.Thread(target=_watch, args=(api, events, threading.Event()), kwargs={"timeout_seconds": 30})
    t.start()
    cluster.wait(lambda: cluster.call(lambda: len(cluster.server.watches)) == 1)
    cluster.watch_error(410)
    t.join(10)
    assert events[-1]["type"] == "ERROR" and events[-1]["object"]["code"] == 410


def test_faults_sustained_429_with_retry_after_5xx_and_dropped_connections(cluster, api):
    core = client.CoreV1Api(api)
    fault = cluster.fail(429, verb="create", resource="configmaps", times=None, retry_after=7)
    for _ in range(3):
        with pytest.raises(ApiException) as err:
            core.create_namespaced_config_map(NS, cm("busy"))
        assert err.value.status == 429 and err.value.headers["Retry-After"] == "7"
        # API Priority and Fairness answers before any handler: Go's http.Error, text, not a Status
        # (k8s.io/apiserver/pkg/server/filters/maxinflight.go, tooManyRequests)
        assert err.value.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert err.value.body == "Too many requests, please try again later.\n"
    assert fault.hits == 3
    cluster.clear_faults()
    core.create_namespaced_config_map(NS, cm("busy"))
    cluster.fail(503, verb="get", times=1)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("busy", NS)
    assert err.value.status == 503
    assert core.read_namespaced_config_map("busy", NS).metadata.name == "busy"
    dropping = cluster.fail(verb="list", resource="configmaps", drop=True, times=None)
    with pytest.raises(Exception) as dropped:  # noqa: B017 - urllib3 says how the connection broke
        core.list_namespaced_config_map(NS, _request_timeout=5)
    assert not isinstance(dropped.value, ApiException) and dropping.hits == 4  # urllib3 tried 3 more times


def test_request_log_counts_calls_per_caller(cluster, api):
    cluster.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot", "namespace": NS}},
                   {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": "robot", "namespace": NS},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                "name": "cluster-admin"},
                    "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": NS}]}])
    robot = cluster.client(f"{NS}/robot")
    for _ in range(3):
        client.CoreV1Api(robot).list_namespaced_pod(NS)
    client.CoreV1Api(api).list_namespaced_pod(NS, resource_version="0")
    mine = cluster.calls(user=f"system:serviceaccount:{NS}:robot", verb="list", resource="pods")
    assert len(mine) == 3 and all(r.quorum_list and r.namespace == NS and r.status == 200 for r in mine)
    assert not cluster.calls(user="kube-model-admin", verb="list")[-1].quorum_list
    robot.close()


# -- deletion, finalizers, garbage collection ----------------------------------------------------------------


def _owned_cm(name: str, owner: Any, block: bool = False) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, owner_references=[client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name=owner.metadata.name, uid=owner.metadata.uid,
        block_owner_deletion=block)]))


@pytest.mark.parametrize("policy", ["Background", "Foreground", "Orphan"])
def test_owner_deletion_propagation(cluster, api, policy):
    # https://kubernetes.io/docs/concepts/architecture/garbage-collection/#cascading-deletion
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(NS, cm("owner"))
    core.create_namespaced_config_map(NS, _owned_cm("dep", owner, block=True))
    core.delete_namespaced_config_map("owner", NS, propagation_policy=policy)
    if policy == "Orphan":
        cluster.wait(lambda: cluster.get("configmaps", NS, "owner") is None)
        dep = core.read_namespaced_config_map("dep", NS)
        assert dep.metadata.owner_references is None
    else:
        cluster.wait(lambda: cluster.get("configmaps", NS, "dep") is None and
                     cluster.get("configmaps", NS, "owner") is None)


def test_foreground_deletion_keeps_the_owner_until_blocking_dependents_go(cluster, api):
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(NS, cm("fg"))
    core.create_namespaced_config_map(NS, _owned_cm("fg-dep", owner, block=True))
    core.patch_namespaced_config_map("fg-dep", NS, {"metadata": {"finalizers": ["example.com/hold"]}})
    _, code, _ = core.delete_namespaced_config_map_with_http_info("fg", NS, propagation_policy="Foreground")
    assert code == 200  # the API server answers 202 only to the deprecated orphanDependents=false
    held = cluster.wait(lambda: cluster.get("configmaps", NS, "fg"))
    assert held["metadata"]["deletionTimestamp"] and "foregroundDeletion" in held["metadata"]["finalizers"]
    cluster.wait(lambda: (cluster.get("configmaps", NS, "fg-dep") or {}).get("metadata", {}).get("deletionTimestamp"))
    assert cluster.get("configmaps", NS, "fg") is not None
    core.patch_namespaced_config_map("fg-dep", NS, {"metadata": {"finalizers": None}})
    cluster.wait(lambda: cluster.get("configmaps", NS, "fg") is None)


def test_a_create_meeting_an_object_being_deleted_says_so(cluster, api):
    # apiserver/pkg/registry/generic/registry/store.go, Store.Create: an AlreadyExists whose object has a
    # deletionTimestamp (a foreground deletion, a finalizer) is "object is being deleted: <AlreadyExists message>"
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, cm("going"))
    core.patch_namespaced_config_map("going", NS, {"metadata": {"finalizers": ["example.com/hold"]}})
    core.delete_namespaced_config_map("going", NS)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, cm("going"))
    assert err.value.status == 409 and status_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'object is being deleted: configmaps "going" already exists', "reason": "AlreadyExists",
        "details": {"name": "going", "kind": "configmaps"}, "code": 409}
    core.patch_namespaced_config_map("going", NS, {"metadata": {"finalizers": None}})
    cluster.wait(lambda: cluster.get("configmaps", NS, "going") is None)
    core.create_namespaced_config_map(NS, cm("going"))  # gone: made again


def test_a_dependent_of_an_owner_that_does_not_exist_is_collected(cluster, api):
    core = client.CoreV1Api(api)
    ghost = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="ghost", uid="00000000-dead-beef-0000-000000000000"))
    core.create_namespaced_config_map(NS, _owned_cm("orphaned", ghost))
    cluster.wait(lambda: cluster.get("configmaps", NS, "orphaned") is None)


def test_deleting_a_job_orphans_its_pods_by_default_with_a_warning(cluster, api):
    # https://kubernetes.io/docs/concepts/workloads/controllers/job/#job-termination-and-cleanup (pods stay
    # unless propagationPolicy is Background or Foreground)
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    cluster.behaviour = lambda pod, c: Script(forever=True)
    batch.create_namespaced_job(NS, job_body("keep"))
    pod = cluster.wait(lambda: core.list_namespaced_pod(NS, label_selector="job-name=keep").items)[0]
    _, _, headers = batch.delete_namespaced_job_with_http_info("keep", NS)
    assert "child pods are preserved by default" in headers.get("Warning", "")
    cluster.wait(lambda: cluster.get("jobs.batch", NS, "keep") is None)
    name = pod.metadata.name
    left = cluster.wait(lambda: (p := core.read_namespaced_pod(name, NS)).metadata.finalizers is None and p)
    assert left.metadata.owner_references is None and left.metadata.deletion_timestamp is None
    core.delete_namespaced_pod(name, NS)  # no job-tracking finalizer left to hold it (syncOrphanPod)
    cluster.wait(lambda: cluster.get("pods", NS, name) is None)
    batch.create_namespaced_job(NS, job_body("go"))
    pod = cluster.wait(lambda: core.list_namespaced_pod(NS, label_selector="job-name=go").items)[0]
    batch.delete_namespaced_job("go", NS, propagation_policy="Background")
    cluster.wait(lambda: cluster.get("pods", NS, pod.metadata.name) is None)


def test_the_job_controller_drops_the_tracking_finalizer_of_a_pod_no_job_controls(cluster, api):
    # kube-controller-manager's Job controller (syncOrphanPod): an orphan keeps no batch.kubernetes.io/job-tracking
    # finalizer, else it could never be deleted (its Job deleted with propagationPolicy Orphan, or none)
    core = client.CoreV1Api(api)
    cluster.behaviour = lambda pod, c: Script(forever=True)
    core.create_namespaced_pod(NS, {"metadata": {"name": "stray", "finalizers": ["batch.kubernetes.io/job-tracking"]},
                                    "spec": {"containers": [{"name": "c", "image": IMAGE}]}})
    cluster.wait(lambda: core.read_namespaced_pod("stray", NS).metadata.finalizers is None)


def test_a_bound_pod_is_deleted_gracefully_by_its_kubelet(cluster, api):
    # https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination
    core = client.CoreV1Api(api)
    cluster.behaviour = lambda pod, c: Script(forever=True, ignore_sigterm=True)
    core.create_namespaced_pod(NS, {"metadata": {"name": "slow"}, "spec": {
        "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": IMAGE}]}})
    cluster.wait(lambda: core.read_namespaced_pod("slow", NS).status.phase == "Running")
    deleted = core.delete_namespaced_pod("slow", NS)
    assert deleted.metadata.deletion_timestamp and deleted.metadata.deletion_grace_period_seconds == 1
    assert core.read_namespaced_pod("slow", NS).metadata.deletion_timestamp  # still there, terminating
    last = cluster.wait(lambda: cluster.get("pods", NS, "slow") is None)
    assert last


def test_namespace_deletion_empties_it_and_refuses_new_content(cluster, api):
    # https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/
    core = client.CoreV1Api(api)
    cluster.namespace("doomed")
    core.create_namespaced_config_map("doomed", cm("x"))
    core.patch_namespaced_config_map("x", "doomed", {"metadata": {"finalizers": ["example.com/hold"]}})
    core.delete_namespace("doomed")
    assert core.read_namespace("doomed").status.phase == "Terminating"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("doomed", cm("y"))
    assert err.value.status == 403 and "because it is being terminated" in status_of(err.value)["message"]
    core.patch_namespaced_config_map("x", "doomed", {"metadata": {"finalizers": None}})
    cluster.wait(lambda: cluster.get("namespaces", "", "doomed") is None)


# -- discovery, events, misc ---------------------------------------------------------------------------------


def test_discovery_and_version(api):
    # https://kubernetes.io/docs/concepts/overview/kubernetes-api/#discovery-api
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"batch", "rbac.authorization.k8s.io", "events.k8s.io"} <= groups
    resources = {r.name: r for r in client.BatchV1Api(api).get_api_resources().resources}
    assert resources["jobs"].namespaced and "watch" in resources["jobs"].verbs and "jobs/status" in resources
    core = {r.name for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"pods", "pods/log", "pods/eviction", "events", "namespaces", "serviceaccounts/token"} <= core
    assert client.VersionApi(api).get_code().minor == "33"


def test_events_are_served_by_both_event_apis(cluster, api):
    # https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(NS, job_body("ev"))
    cluster.wait(lambda: [e for e in cluster.events(NS) if e["reason"] == "Completed"])
    old = client.CoreV1Api(api).list_namespaced_event(NS, field_selector="involvedObject.name=ev").items
    assert [e.reason for e in old] == ["SuccessfulCreate", "Completed"]
    assert old[0].source.component == "job-controller" and old[0].count == 1 and old[0].type == "Normal"
    assert old[0].involved_object.kind == "Job" and old[0].involved_object.uid
    # events.k8s.io/v1 shows the legacy recorder's Events with a null eventTime, which the official client's
    # EventsV1Event model refuses: read that view as JSON (as a real cluster needs too)
    with pytest.raises(ValueError):
        client.EventsV1Api(api).list_namespaced_event(NS, field_selector="regarding.name=ev")
    resp = client.EventsV1Api(api).list_namespaced_event(NS, field_selector="regarding.name=ev",
                                                          _preload_content=False)
    new = json.loads(resp.data)["items"]
    assert [e["reason"] for e in new] == ["SuccessfulCreate", "Completed"] and new[0]["eventTime"] is None
    assert new[0]["regarding"]["name"] == "ev" and new[0]["note"].startswith("Created pod: ev-")
    assert new[0]["deprecatedSource"]["component"] == "job-controller" and new[0]["deprecatedCount"] == 1
    resp = client.EventsV1Api(api).list_namespaced_event(NS, field_selector="reason=Scheduled",
                                                          _preload_content=False)
    [scheduled] = json.loads(resp.data)["items"]
    assert scheduled["reportingController"] == "default-scheduler" and scheduled["eventTime"]
    assert scheduled["action"] == "Binding" and scheduled["note"].startswith(f"Successfully assigned {NS}/ev-")
    legacy_view = client.CoreV1Api(api).list_namespaced_event(NS, field_selector="reason=Scheduled").items[0]
    assert legacy_view.first_timestamp is None and legacy_view.reporting_component == "default-scheduler"


def test_similar_events_are_combined_and_a_source_spamming_an_object_is_cut_off() -> None:
    # client-go's EventCorrelator (tools/record/events_cache.go): the 10th distinct message of one source, object,
    # type and reason is recorded "(combined from similar events): ...", later ones update that Event; a source
    # records 25 Events or updates about one object, then one per 300 s. A Job whose every pod a quota refuses
    # (each refusal names its generated pod) so gets 9 FailedCreate Events and a combined one counted to 16
    timing = Timing(create_retry=0.02, create_retry_cap=0.02, event_spam_refill=10_000)
    with Cluster([NodeSpec("node-1", runtime="sim")], timing=timing) as cluster:
        cluster.namespace(NS)
        api = cluster.client()
        client.CoreV1Api(api).create_namespaced_resource_quota(NS, {"metadata": {"name": "none"},
                                                                    "spec": {"hard": {"pods": "0"}}})
        client.BatchV1Api(api).create_namespaced_job(NS, job_body("agg"))

        def failed_create() -> list[dict[str, Any]]:
            return [e for e in cluster.events(NS, "agg") if e["reason"] == "FailedCreate"]
        cluster.wait(lambda: any(e["count"] == 16 for e in failed_create()), timeout=20, message="16 combined")
        combined_key = next(k for k in cluster.recorder.logged if k[-1] == "(combined from similar events): ")
        cluster.wait(lambda: cluster.recorder.logged[combined_key][0] > 30, message="refusals past the burst")
        events = failed_create()
        plain, combined = events[:9], events[9:]
        assert len({e["message"] for e in plain}) == 9 and all(e["count"] == 1 for e in plain)
        assert all(e["message"].startswith('Error creating: pods "agg-') for e in plain)
        [one] = combined
        assert one["message"].startswith('(combined from similar events): Error creating: pods "agg-')
        assert "exceeded quota: none" in one["message"] and one["count"] == 16
        api.close()
        assert not cluster.errors, cluster.errors


def test_a_schedulers_repeated_event_is_a_series_written_at_its_second_and_at_its_end() -> None:
    # client-go tools/events (event_broadcaster.go): every failed attempt is recorded; isomorphic Events (same
    # type, action, reason, reporter, regarded object) are one Event whose series is written at the first repeat
    # (count 2), then only every 30 min and when the series ends (6 min without a repeat)
    timing = Timing(scheduler_retry=0.05, event_series_finish=1.0, event_series_refresh=10_000)
    with Cluster([NodeSpec("node-1", runtime="sim")], timing=timing,
                 behaviour=lambda pod, c: Script(run=0.05)) as cluster:
        cluster.namespace(NS)
        api = cluster.client()
        core = client.CoreV1Api(api)
        core.create_namespaced_pod(NS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "picky"},
                                        "spec": {"restartPolicy": "Never", "nodeSelector": {"pool": "gpu"},
                                                 "containers": [{"name": "main", "image": IMAGE}]}})

        def failed() -> list[dict[str, Any]]:
            return [e for e in cluster.events(NS, "picky") if e["reason"] == "FailedScheduling"]

        def attempts() -> int:  # as the scheduler's recorder counts them
            return max([c["series"]["count"] for c in cluster.recorder.isomorphic.values()
                        if c["series"] and c["stored"]["reason"] == "FailedScheduling"] or [0])
        cluster.wait(lambda: attempts() > 5, message="repeated attempts")
        [event] = failed()
        assert event["series"]["count"] == 2 and event["type"] == "Warning" and event["action"] == "Scheduling"
        assert event["message"].startswith("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity")
        cluster.update_node("node-1", labels={"pool": "gpu"})
        cluster.wait(lambda: core.read_namespaced_pod("picky", NS).spec.node_name, message="scheduled")
        [event] = cluster.wait(lambda: [e for e in failed() if e["series"]["count"] > 5], message="its end")
        assert all(c["stored"]["reason"] != "FailedScheduling" for c in cluster.recorder.isomorphic.values())
        api.close()
        assert not cluster.errors, cluster.errors


def test_secrets_string_data_and_dry_run(api):
    core = client.CoreV1Api(api)
    s = core.create_namespaced_secret(NS, client.V1Secret(metadata=client.V1ObjectMeta(name="s"),
                                                          string_data={"k": "v"}))
    assert s.data == {"k": base64.b64encode(b"v").decode()} and s.type == "Opaque"
    core.create_namespaced_config_map(NS, cm("dry"), dry_run="All")
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("dry", NS)


def test_too_large_resource_version_on_list(cluster, api):
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(api).list_namespaced_config_map(NS, resource_version=str(10**9),
                                                         resource_version_match="NotOlderThan")
    assert err.value.status == 504 and "Too large resource version" in status_of(err.value)["message"]



def test_watch_from_a_compacted_version_can_be_an_http_410(cluster, api):
    core = client.CoreV1Api(api)
    old = core.create_namespaced_config_map(NS, cm("h-old")).metadata.resource_version
    core.create_namespaced_config_map(NS, cm("h-new"))
    cluster.compact()
    cluster.gone_as_http()
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map(NS, watch=True, resource_version=old, timeout_seconds=2)
    assert err.value.status == 410 and status_of(err.value)["reason"] == "Expired"


def test_a_kubeconfig_for_load_kube_config(cluster, tmp_path):
    from kubernetes import config

    path = cluster.kubeconfig(str(tmp_path / "kubeconfig"), namespace=NS)
    configured = client.Configuration()
    config.load_kube_config(config_file=path, client_configuration=configured)
    with client.ApiClient(configured) as over_tls:
        assert client.CoreV1Api(over_tls).read_namespace(NS).metadata.name == NS
