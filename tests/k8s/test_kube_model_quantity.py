"""The cluster model's resource quantities (tests/support/kube_model/quantity.py) against apimachinery's own test
cases: k8s.io/apimachinery/pkg/api/resource/quantity_test.go (commit eed236ce), the tables of TestQuantityParse
(value and format parsed), TestQuantityString (canonical strings and their alternates), TestQuantityParseEmit,
TestParseQuantity (the canonical column; an input without one is kept as given) and TestJSONWhitespace. Then the
model through the official client: what it stores reads back canonical, as a real API server's does."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from decimal import Decimal

import pytest

from kube_model.quantity import BINARY, DECIMAL, EXPONENT, FORMAT_WRONG, canonical, of, parse

MAX = 2**63 - 1  # maxAllowed


def dec(value: int | float, scale: int) -> Decimal:
    """decQuantity(value, scale, _): value * 10^scale."""
    return Decimal(str(value)) * Decimal(10) ** scale


# TestQuantityParse: input -> (value, format)
PARSE = [
    ("0", dec(0, 0), DECIMAL), ("0n", dec(0, 0), DECIMAL), ("0u", dec(0, 0), DECIMAL), ("0m", dec(0, 0), DECIMAL),
    ("0Ki", dec(0, 0), BINARY), ("0k", dec(0, 0), DECIMAL), ("0Mi", dec(0, 0), BINARY), ("0M", dec(0, 0), DECIMAL),
    ("0Gi", dec(0, 0), BINARY), ("0G", dec(0, 0), DECIMAL), ("0Ti", dec(0, 0), BINARY), ("0T", dec(0, 0), DECIMAL),
    ("1", dec(1, 0), DECIMAL),
    ("1Ki", dec(1024, 0), BINARY), ("8Ki", dec(8 * 1024, 0), BINARY), ("7Mi", dec(7 * 2**20, 0), BINARY),
    ("6Gi", dec(6 * 2**30, 0), BINARY), ("5Ti", dec(5 * 2**40, 0), BINARY), ("4Pi", dec(4 * 2**50, 0), BINARY),
    ("3Ei", dec(3 * 2**60, 0), BINARY), ("10Ti", dec(10 * 2**40, 0), BINARY), ("100Ti", dec(100 * 2**40, 0), BINARY),
    ("5n", dec(5, -9), DECIMAL), ("4u", dec(4, -6), DECIMAL), ("3m", dec(3, -3), DECIMAL), ("9", dec(9, 0), DECIMAL),
    ("8k", dec(8, 3), DECIMAL), ("50k", dec(5, 4), DECIMAL), ("7M", dec(7, 6), DECIMAL), ("6G", dec(6, 9), DECIMAL),
    ("5T", dec(5, 12), DECIMAL), ("40T", dec(4, 13), DECIMAL), ("300T", dec(3, 14), DECIMAL),
    ("2P", dec(2, 15), DECIMAL), ("1E", dec(1, 18), DECIMAL),
    ("1E-3", dec(1, -3), EXPONENT), ("1e3", dec(1, 3), EXPONENT), ("1E6", dec(1, 6), EXPONENT),
    ("1e9", dec(1, 9), EXPONENT), ("1E12", dec(1, 12), EXPONENT), ("1e15", dec(1, 15), EXPONENT),
    ("1E18", dec(1, 18), EXPONENT), ("1e14", dec(1, 14), EXPONENT), ("1e13", dec(1, 13), EXPONENT),
    ("100.035k", dec(100035, 0), DECIMAL),
    ("0.001", dec(1, -3), DECIMAL), ("0.0005k", dec(5, -1), DECIMAL), ("0.005", dec(5, -3), DECIMAL),
    ("0.05", dec(5, -2), DECIMAL), ("0.5", dec(5, -1), DECIMAL), ("0.00050k", dec(5, -1), DECIMAL),
    ("0.00500", dec(5, -3), DECIMAL), ("0.05000", dec(5, -2), DECIMAL), ("0.50000", dec(5, -1), DECIMAL),
    ("0.5e0", dec(5, -1), EXPONENT), ("0.5e-1", dec(5, -2), EXPONENT), ("0.5e-2", dec(5, -3), EXPONENT),
    ("10.035M", dec(10035, 3), DECIMAL),
    ("1.2e3", dec(12, 2), EXPONENT), ("1.3E+6", dec(13, 5), EXPONENT), ("1.40e9", dec(14, 8), EXPONENT),
    ("1.53E12", dec(153, 10), EXPONENT), ("1.6e15", dec(16, 14), EXPONENT), ("1.7E18", dec(17, 17), EXPONENT),
    ("9.01", dec(901, -2), DECIMAL), ("8.1k", dec(81, 2), DECIMAL), ("7.123456M", dec(7123456, 0), DECIMAL),
    ("6.987654321G", dec(6987654321, 0), DECIMAL), ("5.444T", dec(5444, 9), DECIMAL),
    ("40.1T", dec(401, 11), DECIMAL), ("300.2T", dec(3002, 11), DECIMAL), ("2.5P", dec(25, 14), DECIMAL),
    ("1.01E", dec(101, 16), DECIMAL),
    ("3.001n", dec(4, -9), DECIMAL), ("1.1E-9", dec(2, -9), EXPONENT), ("0.0000000001", dec(1, -9), DECIMAL),
    ("0.0000000005", dec(1, -9), DECIMAL), ("0.00000000050", dec(1, -9), DECIMAL), ("0.5e-9", dec(1, -9), EXPONENT),
    ("0.9n", dec(1, -9), DECIMAL), ("0.00000012345", dec(124, -9), DECIMAL),
    ("0.00000012354", dec(124, -9), DECIMAL), ("9Ei", Decimal(MAX), BINARY),
    ("9223372036854775807Ki", Decimal(MAX), BINARY), ("12E", dec(12, 18), DECIMAL),
    ("100.035Ki", dec(10243584, -2), BINARY), ("0.5Mi", dec(2**19, 0), BINARY),
    ("0.05Gi", dec(536870912, -1), BINARY), ("0.025Ti", dec(274877906944, -1), BINARY),
    ("0.000000000001Ki", dec(2, -9), DECIMAL), (".001", dec(1, -3), DECIMAL), (".0001k", dec(100, -3), DECIMAL),
    ("1.", dec(1, 0), DECIMAL), ("1.G", dec(1, 9), DECIMAL),
]

# TestQuantityString: (canonical, alternate written back as it); the canonical form is kept as given
STRING = [
    ("1Gi", "1024Mi"), ("300Mi", "307200Ki"), ("6Ki", ""), ("1001Gi", "1025024Mi"), ("1Ti", "1024Gi"),
    ("5", "5000m"), ("500m", "0.5"), ("1G", "1000M"), ("1G", "0.001T"), ("1m", "1000u"), ("80m", ""),
    ("1080m", "1.08"), ("1080m", "1080000000n"), ("300M", ""), ("1T", ""), ("1234567M", ""), ("1234567m", ""),
    ("3k", ""), ("1025", ""), ("0", ""), ("1e9", ".001e12"), ("1e-3", "0.001e0"), ("1e-9", "1000e-12"),
    ("80e-3", ""), ("300e6", ""), ("1e12", ""), ("1e3", ""), ("3e3", ""), ("0", "00"), ("1n", ""), ("80n", ""),
    ("1080n", ""), ("1u", ""), ("80u", ""), ("1080u", ""),
]

# TestQuantityParseEmit (and each negated, zero aside)
EMIT = [("1Ki", "1Ki"), ("1Mi", "1Mi"), ("1Gi", "1Gi"), ("1024Mi", "1Gi"), ("1000M", "1G"), (".001Ki", "1024m"),
        (".000001Ki", "1024u"), (".000000001Ki", "1024n"), (".000000000001Ki", "2n")]

# TestParseQuantity: input -> canonical ("" where the input is kept as written)
CANONICAL = [
    ("-999999999999999999", ""), ("999999999999999999", ""),
    ("-999999999999999999.0", "-999999999999999999"), ("999999999999999999.0", "999999999999999999"),
    ("-999999999999999999.1", "-999999999999999999100m"), ("999999999999999999.1", "999999999999999999100m"),
    ("-9999999999999999999", ""), ("9999999999999999999", ""), ("-1E", ""), ("1E", ""),
    ("-1000000000000000000", "-1E"), ("1000000000000000000", "1E"),
    ("-9999999999999999999.0", "-9999999999999999999"), ("9999999999999999999.0", "9999999999999999999"),
    ("-1.0E", "-1E"), ("1.0E", "1E"), ("-1000000000000000000.0", "-1E"), ("1000000000000000000.0", "1E"),
    ("-9999999999999999999000m", "-9999999999999999999"), ("9999999999999999999000m", "9999999999999999999"),
    ("-9999999999999999999.1", "-9999999999999999999100m"), ("9999999999999999999.1", "9999999999999999999100m"),
    ("-1.0000000000000000001E", "-1000000000000000000100m"), ("1.0000000000000000001E", "1000000000000000000100m"),
    ("-1000000000000000000.1", "-1000000000000000000100m"), ("1000000000000000000.1", "1000000000000000000100m"),
    ("-1.000000000000000001E", "-1000000000000000001"), ("1.000000000000000001E", "1000000000000000001"),
    ("-1000000000000000001", ""), ("1000000000000000001", ""),
    ("-10E", ""), ("10E", ""), ("-10000000000000000000", "-10E"), ("10000000000000000000", "10E"),
    ("-10.0E", "-10E"), ("10.0E", "10E"), ("-10000000000000000000.0", "-10E"), ("10000000000000000000.0", "10E"),
    ("-10000000000000000000000m", "-10E"), ("10000000000000000000000m", "10E"),
    ("-10.0000000000000000001E", "-10000000000000000000100m"),
    ("10.0000000000000000001E", "10000000000000000000100m"),
    ("-10000000000000000000.1", "-10000000000000000000100m"), ("10000000000000000000.1", "10000000000000000000100m"),
    ("-10.000000000000000001E", "-10000000000000000001"), ("10.000000000000000001E", "10000000000000000001"),
    ("-10000000000000000001", ""), ("10000000000000000001", ""),
    ("-9223372036854775809", ""), ("9223372036854775806", ""),
    ("-9223372036854775809.0", "-9223372036854775809"), ("9223372036854775806.0", "9223372036854775806"),
    ("-9223372036854775809000m", "-9223372036854775809"), ("9223372036854775806000m", "9223372036854775806"),
    ("-9223372036854775809.1", "-9223372036854775809100m"), ("9223372036854775806.1", "9223372036854775806100m"),
    ("-9223372036854775808", ""), ("9223372036854775807", ""),
    ("-9223372036854775808.0", "-9223372036854775808"), ("9223372036854775807.0", "9223372036854775807"),
    ("-9223372036854775808000m", "-9223372036854775808"), ("9223372036854775807000m", "9223372036854775807"),
    ("-9223372036854775808.1", "-9223372036854775808100m"), ("9223372036854775807.1", "9223372036854775807100m"),
    ("-9223372036854775807", ""), ("9223372036854775808", ""),
    ("-9223372036854775807.0", "-9223372036854775807"), ("9223372036854775808.0", "9223372036854775808"),
    ("-9223372036854775807000m", "-9223372036854775807"), ("9223372036854775808000m", "9223372036854775808"),
    ("-9223372036854775807.1", "-9223372036854775807100m"), ("9223372036854775808.1", "9223372036854775808100m"),
]


@pytest.mark.parametrize(("text", "value", "fmt"), PARSE)
def test_a_quantity_parses_to_apimachinerys_value_and_format(text: str, value: Decimal, fmt: str) -> None:
    q = parse(text)
    assert (q.value, q.format) == (value, fmt)


@pytest.mark.parametrize(("expect", "alternate"), STRING)
def test_a_quantity_is_written_back_in_apimachinerys_canonical_form(expect: str, alternate: str) -> None:
    assert parse(expect).text == expect  # kept as given: already canonical
    if alternate:
        assert parse(alternate).text == ""
        assert canonical(alternate) == expect
    if expect != "0":
        assert of(-parse(expect).value, parse(expect).format) == "-" + expect


@pytest.mark.parametrize(("text", "expect"), EMIT)
def test_a_parsed_quantity_is_emitted_as_apimachinery_emits_it(text: str, expect: str) -> None:
    assert canonical(text) == expect
    assert canonical("-" + text) == "-" + expect


@pytest.mark.parametrize(("text", "expect"), CANONICAL)
def test_a_quantity_reserializes_as_apimachinery_reserializes_it(text: str, expect: str) -> None:
    assert canonical(text) == (expect or text)


def test_json_numbers_and_whitespace_decode_as_apimachinery_decodes_them() -> None:
    # TestJSONWhitespace: `" 1"`, `"1 "`, `1`, ` 1`, `1 `, `10`, `-1`, ` -1`
    for given, expect in ((" 1", "1"), ("1 ", "1"), (1, "1"), (10, "10"), (-1, "-1"), (" -1", "-1")):
        assert canonical(given) == expect
    assert canonical(0.5) == "500m"


@pytest.mark.parametrize("text", ["", "1.5x", "1Kii", "abc", "1e", " ", "1 1"])
def test_a_malformed_quantity_is_refused_in_apimachinerys_words(text: str) -> None:
    with pytest.raises(ValueError, match="quantities must match|unable to parse quantity's suffix") as e:
        parse(text)
    assert str(e.value) in (FORMAT_WRONG, "unable to parse quantity's suffix")


def test_the_task_s_examples() -> None:
    assert [canonical(t) for t in ("1000m", "1024Mi", "0.5", "1e3", "2000Mi")] == ["1", "1Gi", "500m", "1e3",
                                                                                    "2000Mi"]


# -- the model, through the official client --------------------------------------------------------------

kubernetes = pytest.importorskip("kubernetes")

from kubernetes import client  # noqa: E402

from kube_model import Cluster, NodeSpec, Script  # noqa: E402

NS = "quantities"
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "ab" * 32


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster([NodeSpec("node-1", runtime="sim", cpu="4000m", memory="16384Mi")],
                 behaviour=lambda p, c: Script(run=0.05)) as c:
        c.namespace(NS)
        yield c
        assert not c.errors, c.errors


def _pod_spec() -> dict[str, object]:
    return {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": IMAGE,
                            "resources": {"requests": {"cpu": "1000m", "memory": "1024Mi"},
                                          "limits": {"cpu": "1.5", "memory": "2000Mi"}}}],
            "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1048576Ki"}}]}


def test_the_model_stores_every_quantity_in_canonical_form(cluster: Cluster) -> None:
    api = cluster.client()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    core.create_namespaced_pod(NS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                    "spec": _pod_spec()})
    pod = core.read_namespaced_pod("p", NS)
    res = pod.spec.containers[0].resources
    assert (res.requests, res.limits) == ({"cpu": "1", "memory": "1Gi"}, {"cpu": "1500m", "memory": "2000Mi"})
    assert pod.spec.volumes[0].empty_dir.size_limit == "1Gi"

    batch.create_namespaced_job(NS, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                                     "spec": {"template": {"spec": _pod_spec()}}})
    job_res = batch.read_namespaced_job("j", NS).spec.template.spec.containers[0].resources
    assert job_res.requests == {"cpu": "1", "memory": "1Gi"}

    core.create_namespaced_limit_range(NS, {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "lr"},
                                            "spec": {"limits": [{"type": "Container",
                                                                 "max": {"cpu": "8000m", "memory": "0.5Ti"}}]}})
    item = core.read_namespaced_limit_range("lr", NS).spec.limits[0]
    assert item.max == {"cpu": "8", "memory": "512Gi"}
    assert item.default == {"cpu": "8", "memory": "512Gi"}  # defaulted from max, as stored
    # sent again as first written, it is the same object: no change, no new resourceVersion (nothing else
    # writes a LimitRange: no race with a controller)
    stored = core.read_namespaced_limit_range("lr", NS)
    body = api.sanitize_for_serialization(stored)
    body["spec"]["limits"][0]["max"] = {"cpu": "8000m", "memory": "0.5Ti"}
    again = core.replace_namespaced_limit_range("lr", NS, body)
    assert again.metadata.resource_version == stored.metadata.resource_version
    assert again.spec.limits[0].max == {"cpu": "8", "memory": "512Gi"}

    core.create_namespaced_resource_quota(NS, {"apiVersion": "v1", "kind": "ResourceQuota",
                                               "metadata": {"name": "q"},
                                               "spec": {"hard": {"requests.cpu": "10000m", "pods": "1e3"}}})
    assert core.read_namespaced_resource_quota("q", NS).spec.hard == {"requests.cpu": "10", "pods": "1e3"}

    node = core.read_node("node-1").status
    assert (node.capacity["cpu"], node.capacity["memory"]) == ("4", "16Gi")
    assert (node.allocatable["cpu"], node.allocatable["memory"]) == ("4", "16Gi")
    api.close()


def test_a_quotas_sums_are_written_in_their_quantities_format(cluster: Cluster) -> None:
    # quota.Add and PodRequests keep the first quantity's format: a real API server says 512Mi, not 536870912
    api = cluster.client()
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(NS, {"apiVersion": "v1", "kind": "ResourceQuota",
                                               "metadata": {"name": "q"},
                                               "spec": {"hard": {"requests.memory": "1024Mi"}}})

    def pending(name: str, memory: str) -> dict[str, object]:  # on no node: it stays, counted
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"restartPolicy": "Never", "nodeSelector": {"pool": "none"},
                         "containers": [{"name": "main", "image": IMAGE,
                                         "resources": {"requests": {"memory": memory}}}]}}
    core.create_namespaced_pod(NS, pending("a", "512Mi"))
    core.create_namespaced_pod(NS, pending("b", "0.25Gi"))
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(NS, pending("c", "0.5Gi"))
    assert "exceeded quota: q, requested: requests.memory=512Mi, used: requests.memory=768Mi, limited: " \
           "requests.memory=1Gi" in refused.value.body
    used = cluster.wait(lambda: (core.read_namespaced_resource_quota("q", NS).status.used or {}).get(
        "requests.memory") == "768Mi", message="the quota's usage")
    assert used
    api.close()


def test_a_quotas_hard_limit_is_compared_exactly(cluster: Cluster) -> None:
    # quota.LessThanOrEqual compares the exact sums with Quantity.Cmp: two pods of 500u fill a 1m quota, no
    # rounding of each pod up to a millicore (which refused the second)
    api = cluster.client()
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(NS, {"apiVersion": "v1", "kind": "ResourceQuota",
                                               "metadata": {"name": "q"}, "spec": {"hard": {"requests.cpu": "1m"}}})

    def pending(name: str, cpu: str) -> dict[str, object]:  # on no node: it stays, counted
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"restartPolicy": "Never", "nodeSelector": {"pool": "none"},
                         "containers": [{"name": "main", "image": IMAGE, "resources": {"requests": {"cpu": cpu}}}]}}
    core.create_namespaced_pod(NS, pending("a", "500u"))
    core.create_namespaced_pod(NS, pending("b", "0.0005"))
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(NS, pending("c", "1n"))
    assert "exceeded quota: q, requested: requests.cpu=1n, used: requests.cpu=1m, limited: requests.cpu=1m" \
        in refused.value.body
    assert cluster.wait(lambda: (core.read_namespaced_resource_quota("q", NS).status.used or {}).get(
        "requests.cpu") == "1m", message="the quota's usage")
    api.close()


def test_a_quantity_sent_as_a_json_number_is_read_from_its_text(cluster: Cluster) -> None:
    # Quantity.UnmarshalJSON parses a number's own bytes: 1e3 stays 1e3 (exponent form), never 1000.0 -> 1k. The
    # official client would send a Python float as 1000.0: the body goes as raw JSON
    body = (b'{"apiVersion":"v1","kind":"ResourceQuota","metadata":{"name":"n"},'
            b'"spec":{"hard":{"pods":1e3,"requests.cpu":0.1,"requests.memory":1.5e9}}}')
    req = urllib.request.Request(f"{cluster.url}/api/v1/namespaces/{NS}/resourcequotas", data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {cluster.token()}"})
    with urllib.request.urlopen(req) as answer:
        assert answer.status == 201
    api = cluster.client()
    hard = client.CoreV1Api(api).read_namespaced_resource_quota("n", NS).spec.hard
    assert hard == {"pods": "1e3", "requests.cpu": "100m", "requests.memory": "1500e6"}
    api.close()
