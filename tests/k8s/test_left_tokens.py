"""The server's sweeper of token Secrets left owned by nothing (``sematic_k8s_server.token_secrets.LeftTokens``) on its
own thread, woken as the sweeper wakes it, against the cluster model behind a proxy: the API answering every list of
Secrets 500 for several passes (an API server failing, or a load balancer before it), then again; no API server at
its address (its connections refused); every list held unanswered (a partition) in a server; a Secret listed, its
delete held, deleted (or made again, owned) by someone else meanwhile (the delete answered 404, 409)."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

pytest.importorskip("kubernetes")

from kube_model import Cluster, NodeSpec  # noqa: E402
from outages import ThrottlingProxy  # noqa: E402
from sematic_k8s.store.records import Batch, ResolutionRecord, utcnow  # noqa: E402
from sematic_k8s_server.config import RerunConfig, ServerConfig  # noqa: E402
from sematic_k8s_server.token_secrets import LeftTokens  # noqa: E402
from serving import serve, wait_for, write_through_api  # noqa: E402

NS = "sk-runs"
LIST = f"GET /api/v1/namespaces/{NS}/secrets?".encode()


def _token_secret(core: Any, namespace: str, res_id: str, owners: list[dict[str, str]] | None = None) -> None:
    """A driver's token Secret ``sk-token-<res_id>`` made in ``namespace`` through ``core`` (a ``CoreV1Api``), labelled
    as a launch labels it and holding a token; owned by ``owners`` when given, else by nothing."""
    from sematic_k8s.labels import RESOLUTION_LABEL, ROLE_LABEL

    labels = {ROLE_LABEL: "driver", "app.kubernetes.io/managed-by": "sematic-k8s", RESOLUTION_LABEL: res_id}
    core.create_namespaced_secret(namespace, {"metadata": {"name": f"sk-token-{res_id}", "labels": labels, **(
        {"ownerReferences": owners} if owners else {})}, "stringData": {"api-key": "sk8t_secret"}})


def _one_pass(store: Any, api: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One pass of a sweeper of left token Secrets on ``store`` over ``NS``, the Kubernetes API at ``api``
    ($SEMATIC_K8S_KUBE_HOST): the names of the Secrets it deleted."""
    monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", api)
    tokens = LeftTokens(store, [NS])
    try:
        return tokens.sweep()
    finally:
        tokens.close()


def test_an_api_failing_for_several_passes_is_said_once(sqlite_store, monkeypatch, caplog) -> None:
    """Four passes whose list of Secrets the API answers 500, then one it answers: one warning in all, the
    sweeper's (what failed, that the next sweep tries again); none of a retry within a pass (the next sweep is its
    retry). Was: a "retrying" warning at every pass, the log of an outage growing with each sweep."""
    with Cluster([NodeSpec("node-1", runtime="sim")], namespaces=[NS]) as cluster:
        proxy = ThrottlingProxy(int(cluster.proxy().rpartition(":")[2]), lambda head: head.startswith(LIST), 10**6,
                                status=500, code="")
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", proxy.url)
        caplog.set_level(logging.INFO)
        tokens = LeftTokens(sqlite_store, [NS])
        try:
            for n in range(1, 5):
                tokens.wake()
                wait_for(lambda n=n: proxy.throttled >= n, 60, what=f"pass {n}'s list answered 500")
            proxy.passing()
            tokens.wake()
            wait_for(lambda: any(c.status == 200 for c in cluster.calls(verb="list", resource="secrets")), 60,
                     what="a list of Secrets answered")
            tokens.wake()  # one more pass after the one that succeeded (so that it has ended, said or not)
            wait_for(lambda: sum(c.status == 200 for c in cluster.calls(verb="list", resource="secrets")) >= 2, 60,
                     what="a second list of Secrets answered")
        finally:
            tokens.stop()
            proxy.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"looking for drivers' token Secrets left owned by nothing in namespace {NS} "
                                  "failed (tried again at the next sweep): "), warnings


@pytest.mark.parametrize("meanwhile", ["deleted", "made again, owned"])
def test_a_secret_deleted_or_made_again_between_its_list_and_its_delete_is_left(sqlite_store, monkeypatch, caplog,
                                                                              meanwhile) -> None:
    """An unowned token Secret past its grace, its resolution not recorded here: listed, its delete held by the proxy
    while someone else deletes it (and, in the second case, a launch makes it again, owned by an object): the delete,
    let through, is answered 404 (409: the uid listed is not the one there) and the pass goes on, says nothing; the
    Secret made again stays. (Held: caused and kept as a test.)"""
    from kubernetes import client

    from sematic_k8s.k8s.client import make_api_client
    from sematic_k8s.labels import RESOLUTION_LABEL, ROLE_LABEL

    res_id = "ab" * 16
    name = f"sk-token-{res_id}"
    labels = {ROLE_LABEL: "driver", "app.kubernetes.io/managed-by": "sematic-k8s", RESOLUTION_LABEL: res_id}
    with Cluster([NodeSpec("node-1", runtime="sim")], namespaces=[NS]) as cluster:
        admin = make_api_client(cluster.proxy())
        core = client.CoreV1Api(admin)
        core.create_namespaced_secret(NS, {"metadata": {"name": name, "labels": labels}, "data": {}})
        delete = f"DELETE /api/v1/namespaces/{NS}/secrets/{name}".encode()
        proxy = ThrottlingProxy(int(cluster.proxy().rpartition(":")[2]), lambda head: head.startswith(delete), 1,
                                status=-2)
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", proxy.url)
        monkeypatch.setenv("SEMATIC_K8S_TOKEN_SECRET_GRACE", "0")
        caplog.set_level(logging.INFO)
        tokens = LeftTokens(sqlite_store, [NS])
        try:
            tokens.wake()
            wait_for(lambda: proxy.held == 1, 60, what="the sweeper's delete held")
            core.delete_namespaced_secret(name, NS)
            if meanwhile != "deleted":
                owner = core.create_namespaced_config_map(NS, {"metadata": {"name": "owner"}})
                core.create_namespaced_secret(NS, {"metadata": {"name": name, "labels": labels, "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]}})
            proxy.passing()
            status = 404 if meanwhile == "deleted" else 409
            wait_for(lambda: len(cluster.calls(verb="delete", resource="secrets")) == 2, 60,
                     what="the held delete answered")
            tokens.wake()
            wait_for(lambda: len(cluster.calls(verb="list", resource="secrets")) >= 2, 60, what="a second pass")
            tokens.wake()
            wait_for(lambda: len(cluster.calls(verb="list", resource="secrets")) >= 3, 60, what="a third pass")
        finally:
            tokens.stop()
            proxy.close()
            admin.close()
        deletes = [c.status for c in cluster.calls(verb="delete", resource="secrets")]
        left = [s["metadata"]["name"] for s in cluster.list("secrets", NS)]
    assert deletes == [200, status], deletes  # someone else's, then the sweeper's
    assert left == ([] if meanwhile == "deleted" else [name])
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_api_not_there_is_said_refused_not_unanswered(sqlite_store, monkeypatch, caplog) -> None:
    """Nothing listening at the API's address (an API server down, a wrong $SEMATIC_K8S_KUBE_HOST): the sweeper's
    warning says it could not be reached and what the system said (connection refused), at once. Was: "did not
    answer within 60 s ... a network partition": urllib3's refusal is a ConnectTimeoutError by class."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", f"http://127.0.0.1:{port}")
    caplog.set_level(logging.INFO)
    tokens = LeftTokens(sqlite_store, [NS])
    try:
        tokens.wake()
        said = wait_for(lambda: [r.getMessage() for r in caplog.records if r.name == "sematic_k8s_server"], 60,
                        what="the sweeper's warning")
    finally:
        tokens.stop()
    assert len(said) == 1 and said[0].startswith(
        f"looking for drivers' token Secrets left owned by nothing in namespace {NS} failed (tried again at the next "
        f"sweep): KubernetesUnanswered: the Kubernetes API at http://127.0.0.1:{port} could not be reached (1 try): "
        "list_namespaced_secret ([Errno 111] Connection refused); check that it is up"), said


def test_a_pass_the_api_never_answers_holds_no_other_sweep(tmp_path, monkeypatch) -> None:
    """A server with the Kubernetes rerun launcher whose every list of Secrets is held unanswered (a partition, a
    proxy that stopped forwarding): its sweeper of silent resolutions goes on meanwhile (a resolution silent past the
    heartbeat timeout is marked failed) and the server stops. (Held: the pass has a thread of its own; kept as a
    test.)"""
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", "2")  # a sweep every 0.5 s
    with Cluster([NodeSpec("node-1", runtime="sim")], namespaces=[NS]) as cluster:
        proxy = ThrottlingProxy(int(cluster.proxy().rpartition(":")[2]), lambda head: head.startswith(LIST), 10**6,
                                status=0)
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", proxy.url)
        reruns = RerunConfig(launcher="kubernetes", image_repositories=("127.0.0.1:5000/pipelines",),
                             storage_url="s3://sk-left-tokens/artifacts", executor_settings={"namespace": NS})
        try:
            with serve(tmp_path, config=ServerConfig(reruns=reruns)) as s:
                wait_for(lambda: proxy.held >= 1, 60, what="the token pass's list held")
                root = "cd" * 16  # running, its heartbeat now and never again
                batch = Batch()
                batch.add_resolution(ResolutionRecord(id=root, root_func_path="pipes:pipeline", state="running",
                                                      created_at=utcnow(), heartbeat_at=utcnow()))
                write_through_api(s.url, s.key, batch)
                wait_for(lambda: s.store.get_resolution(root).state == "failed", 60,
                         what="the silent resolution marked failed by the sweeper")
                assert proxy.held == 1  # the token pass still waiting on its list
        finally:
            proxy.close()


def test_many_secrets_are_listed_a_page_at_a_time_and_only_the_left_ones_deleted(sqlite_store, monkeypatch) -> None:
    """120 token Secrets left owned by nothing (their resolutions not recorded here), 10 owned by an object and 10 of a
    resolution still running, each holding a token, read 50 at a time (``PAGE``): one pass deletes exactly the 120,
    each list asked for at most 50 (limit) and the next page by its continue token, and answered as the Secrets'
    metadata only (PartialObjectMetadataList: no ``data`` in any answer). Was: one list of every Secret in the
    namespace; then lists of the whole Secrets, their tokens read by the server for nothing."""
    from kubernetes import client

    from sematic_k8s.k8s.client import make_api_client
    from sematic_k8s_server import token_secrets

    monkeypatch.setattr(token_secrets, "PAGE", 50)
    monkeypatch.setenv("SEMATIC_K8S_TOKEN_SECRET_GRACE", "0")
    running = [f"{n:032x}" for n in range(1000, 1010)]
    batch = Batch()
    for res_id in running:
        batch.add_resolution(ResolutionRecord(id=res_id, root_func_path="pipes:pipeline", state="running",
                                              created_at=utcnow(), heartbeat_at=utcnow()))
    sqlite_store.write(batch)
    with Cluster([NodeSpec("node-1", runtime="sim")], namespaces=[NS]) as cluster:
        admin = make_api_client(cluster.proxy())
        core = client.CoreV1Api(admin)
        owner = core.create_namespaced_config_map(NS, {"metadata": {"name": "owner"}})
        owned = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]
        kinds = {f"{n:032x}": "left" for n in range(120)} | {f"{n:032x}": "owned" for n in range(500, 510)}
        kinds |= dict.fromkeys(running, "running")
        for res_id, kind in kinds.items():
            _token_secret(core, NS, res_id, owned if kind == "owned" else None)
        try:
            deleted = _one_pass(sqlite_store, cluster.proxy(), monkeypatch)
        finally:
            admin.close()
        calls = cluster.calls(verb="list", resource="secrets")
        lists = [c.query for c in calls]
        left = {s["metadata"]["name"] for s in cluster.list("secrets", NS)}
        assert all(s.get("data") for s in cluster.list("secrets", NS))  # the tokens there, not sent
    assert sorted(deleted) == sorted(f"sk-token-{r}" for r, kind in kinds.items() if kind == "left")
    assert left == {f"sk-token-{r}" for r, kind in kinds.items() if kind != "left"}
    assert len(lists) == 3 and all(q.get("limit") == "50" for q in lists), lists  # 140 Secrets: 50, 50, 40
    assert "continue" not in lists[0] and all(q.get("continue") for q in lists[1:]), lists
    assert [(c.status, c.kind) for c in calls] == [(200, "PartialObjectMetadataList")] * 3, calls
    assert {f for c in calls for f in c.item_fields} == {"kind", "apiVersion", "metadata"}, calls  # no data


def test_only_the_configured_namespaces_are_swept_and_one_refused_is_said_once(tmp_path, monkeypatch, caplog) -> None:
    """A server without the rerun launcher, told to sweep two namespaces ($SEMATIC_K8S_TOKEN_SWEEP_NAMESPACES, read
    into ``ServerConfig.token_sweep_namespaces``), acting as its ServiceAccount with the chart's Role (list, delete on
    secrets) in the first only; a left token Secret in each, and one in a third namespace that a failed resolution's
    record names (its executor's) and where the account may list too: the first's is deleted at once, the second's
    refusal (403) is said once over many sweeps, in plain words (what it lacks, what to do), and the third is never
    listed. The Role given in the second, its Secret is deleted at the next sweep. Was: the rerun namespace only (and
    only with the Kubernetes rerun launcher); a list refused failed the whole pass."""
    from kubernetes import client

    from sematic_k8s_server.cli import _config

    swept, refused, named = "sk-team-a", "sk-team-b", "sk-team-c"
    account = "sk-system/server"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "token-sweep"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "delete"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "token-sweep"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "token-sweep"},
               "subjects": [{"kind": "ServiceAccount", "name": "server", "namespace": "sk-system"}]}
    ids = {ns: f"{n:032x}" for n, ns in enumerate((swept, refused, named))}
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", "2")  # a sweep every 0.5 s
    monkeypatch.setenv("SEMATIC_K8S_TOKEN_SECRET_GRACE", "0")
    monkeypatch.setenv("SEMATIC_K8S_TOKEN_SWEEP_NAMESPACES", f"{swept}, {refused},{swept}")
    config = _config({"local": False, "max_request_bytes": 2**20, "body_timeout": 60.0, "max_streams_per_key": 8,
                      "rerun_launcher": None, "rerun_images": (), "allow_docker": False, "rerun_namespace": None,
                      "rerun_concurrency": 2, "rerun_queue": 8, "token_max_hours": 24})
    assert config.token_sweep_namespaces == (swept, refused)
    caplog.set_level(logging.INFO)
    with Cluster([NodeSpec("node-1", runtime="sim")], namespaces=["sk-system", swept, refused, named]) as cluster:
        cluster.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "server"}}],
                      namespace="sk-system")
        for ns in (swept, named):
            cluster.apply([role, binding], namespace=ns)
        admin = cluster.client()
        core = client.CoreV1Api(admin)
        for ns, res_id in ids.items():
            _token_secret(core, ns, res_id)
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", cluster.proxy(account))
        user = cluster.user_of(account)

        def lists(ns: str) -> list[int]:
            return [c.status for c in cluster.calls(user=user, verb="list", resource="secrets") if c.namespace == ns]

        try:
            with serve(tmp_path, config=config) as s:
                batch = Batch()
                batch.add_resolution(ResolutionRecord(
                    id=ids[named], root_func_path="pipes:pipeline", state="failed", created_at=utcnow(),
                    ended_at=utcnow(), settings={"kind": "cloud", "executor": "kubernetes",
                                                 "executor_settings": {"namespace": named}}))
                write_through_api(s.url, s.key, batch)
                wait_for(lambda: len(lists(refused)) >= 4 and len(lists(swept)) >= 4, 60, what="four sweeps")
                assert not cluster.list("secrets", swept)
                cluster.apply([role, binding], namespace=refused)
                wait_for(lambda: not cluster.list("secrets", refused), 60, what="the second namespace's Secret deleted")
                n = len(lists(refused))
                wait_for(lambda: len(lists(refused)) >= n + 2, 60, what="two more sweeps")
        finally:
            admin.close()
        assert [c for c in cluster.requests if c.namespace == named and c.user == user] == []  # never listed
        assert [s["metadata"]["name"] for s in cluster.list("secrets", named)] == [f"sk-token-{ids[named]}"]
        assert set(lists(refused)) == {403, 200} and set(lists(swept)) == {200}
    said = [r.getMessage() for r in caplog.records if r.name == "sematic_k8s_server" and r.levelno >= logging.WARNING]
    assert said == [
        f"the Kubernetes API refuses to let this server sweep the drivers' token Secrets left owned by nothing in "
        f'namespace {refused} (403: secrets is forbidden: User "{user}" cannot list resource "secrets" in API group "" '
        f'in the namespace "{refused}"); it lacks list on secrets in API group ""; they are not deleted there until '
        f"its ServiceAccount has a Role allowing list and delete on secrets there (the chart makes one in each of "
        f"server.tokenSweepNamespaces), or the namespace is taken out of $SEMATIC_K8S_TOKEN_SWEEP_NAMESPACES"], said


def test_a_refused_rerun_namespace_is_said_to_need_the_role_not_to_be_taken_out(sqlite_store, monkeypatch,
                                                                                caplog) -> None:
    """The server's rerun namespace (swept as such: ``rerun_namespaces``), its ServiceAccount given no Role there: the
    refusal (403) says to give it list and delete on secrets there, as the chart's server Role does. Was: "or the
    namespace is taken out of $SEMATIC_K8S_TOKEN_SWEEP_NAMESPACES", which does not name it."""
    account = "sk-system/server"
    with Cluster([NodeSpec("node-1", runtime="sim")], namespaces=["sk-system", NS]) as cluster:
        cluster.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "server"}}],
                      namespace="sk-system")
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", cluster.proxy(account))
        user = cluster.user_of(account)
        caplog.set_level(logging.INFO)
        tokens = LeftTokens(sqlite_store, [NS], [NS])
        try:
            tokens.wake()
            wait_for(lambda: any(c.status == 403 for c in cluster.calls(user=user, verb="list", resource="secrets")),
                     60, what="the list of Secrets refused")
            tokens.wake()  # one more pass: its refusal was said (or not) once this one ran
            wait_for(lambda: len(cluster.calls(user=user, verb="list", resource="secrets")) >= 2, 60,
                     what="a second list")
        finally:
            tokens.stop()
    said = [r.getMessage() for r in caplog.records if r.name == "sematic_k8s_server" and r.levelno >= logging.WARNING]
    assert said == [
        f"the Kubernetes API refuses to let this server sweep the drivers' token Secrets left owned by nothing in "
        f'namespace {NS} (403: secrets is forbidden: User "{user}" cannot list resource "secrets" in API group "" '
        f'in the namespace "{NS}"); it lacks list on secrets in API group ""; they are not deleted there; it is this '
        f"server's rerun namespace (--rerun-namespace), where its reruns make their drivers' token Secrets: give its "
        f"ServiceAccount list and delete on secrets there, as the chart's server Role in the rerun namespace does"
    ], said


def test_the_deletes_of_a_pass_reuse_their_connections(sqlite_store, monkeypatch) -> None:
    """40 token Secrets left owned by nothing, deleted in one pass through a TCP proxy that counts the connections it
    accepts: the pass's list and deletes share the client's pooled connections (a few at most). Was: each delete's
    answer (``_preload_content=False``) never read nor let go, its connection kept from the pool: a new connection for
    each delete, 40 of them."""
    from kubernetes import client

    from outages import BalancingProxy
    from sematic_k8s.k8s.client import make_api_client

    monkeypatch.setenv("SEMATIC_K8S_TOKEN_SECRET_GRACE", "0")
    with Cluster([NodeSpec("node-1", runtime="sim")], namespaces=[NS]) as cluster:
        admin = make_api_client(cluster.proxy())
        core = client.CoreV1Api(admin)
        for n in range(40):
            _token_secret(core, NS, f"{n:032x}")
        admin.close()
        proxy = BalancingProxy(int(cluster.proxy().rpartition(":")[2]))
        try:
            deleted = _one_pass(sqlite_store, proxy.url, monkeypatch)
        finally:
            proxy.close()
        assert len(deleted) == 40 and not cluster.list("secrets", NS)
        assert sum(proxy.connections.values()) <= 2, proxy.connections
