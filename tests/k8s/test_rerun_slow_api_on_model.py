"""A server's rerun with the Kubernetes launcher while the Kubernetes API is slow: the cluster model behind a proxy
that holds the driver Job's create unanswered (``ThrottlingProxy``, ``HELD``: passed on, and answered, only once the
proxy passes), over real HTTP. The rerun request is answered 202 with the claim's id once the launch went on for
``ANSWER_WINDOW``, the claim noted "launching the driver: ... the Kubernetes API is slow to answer"; then the driver's
Job is made and the note cleared, or, canceled meanwhile, no driver Job is left, or, refused then, the claim is
recorded failed in the launcher's words, or, the server (a process of its own) stopped meanwhile, the call under way
is ended and the claim recorded failed in the stop's words. Was: the request was held until the API answered (here:
never, the client timing out with no id to cancel)."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from kube_model import Cluster, NodeSpec, Script
from model_workers import driver_job_of
from outages import HoldingTLSPort, ThrottlingProxy, unaccepting_port, unanswering_port
from s3server import fresh_bucket
from sematic_k8s.k8s.client import CONNECT_TIMEOUT, Backoff
from sematic_k8s.k8s.manifests import driver_job_name
from sematic_k8s.store.records import ResolutionRecord
from sematic_k8s_server import auth
from sematic_k8s_server.config import RerunConfig, ServerConfig
from sematic_k8s_server.db import open_store
from serving import Served, claim_of, record_resolution, serve, server_process, wait_for

NS = "sk-runs"
IMAGE = "127.0.0.1:5000/pipelines/team@sha256:" + "ab" * 32
STORAGE = "s3://sk-slow-api/artifacts"
JOB_CREATE = f"POST /apis/batch/v1/namespaces/{NS}/jobs".encode()


def holding_proxy(cluster: Cluster) -> ThrottlingProxy:
    """A proxy to the cluster model (acting as its admin) holding the driver Job's create until it passes."""
    return ThrottlingProxy(int(cluster.proxy().rpartition(":")[2]), lambda head: head.startswith(JOB_CREATE), 1,
                           status=-2)


@contextlib.contextmanager
def slow_api_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                   ) -> Iterator[tuple[Served, httpx.Client, Cluster, ThrottlingProxy, str]]:
    """A server whose reruns start driver Jobs on the cluster model, reached through a proxy holding the driver Job's
    create; a rerun asked of it and answered 202: (the server, a client of it, the cluster, the proxy, the rerun's id)
    while the create is still held."""
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=lambda pod, c: Script(forever=True),
                 namespaces=[NS]) as cluster:
        proxy = holding_proxy(cluster)
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", proxy.url)  # the server's identity: an admin of the cluster
        config = RerunConfig(launcher="kubernetes", image_repositories=("127.0.0.1:5000/pipelines",),
                             storage_url=STORAGE, executor_settings={"namespace": NS})
        try:
            with serve(tmp_path, config=ServerConfig(reruns=config)) as s, s.client() as c:
                root = record_resolution(s.url, s.key, kind="cloud", image=IMAGE, storage_url=STORAGE)
                r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})  # 30 s at most (the client's timeout)
                assert r.status_code == 202, r.text
                new_id = r.json()["resolution_id"]
                # the 202 comes once the answer window passed, maybe before the launch's earlier calls (loaded node)
                wait_for(lambda: proxy.held == 1, 60, what="the driver Job's create held (the API slow)")
                yield s, c, cluster, proxy, new_id
        finally:
            proxy.passing()
            proxy.close()


def test_a_rerun_whose_kubernetes_api_is_slow_is_answered_and_noted_then_starts_its_driver(tmp_path, monkeypatch):
    """Answered 202 while the Job's create is held, the claim ``created`` and noted so; once the API answers, the
    driver's Job is made and the note cleared."""
    with slow_api_rerun(tmp_path, monkeypatch) as (_, c, cluster, proxy, new_id):
        res = claim_of(c, new_id)
        assert res["state"] == "created", res
        assert res["settings"]["waiting"] == (f"launching the driver: its Job {driver_job_name(new_id)} in namespace "
                                              f"{NS}; the Kubernetes API is slow to answer"), res
        assert driver_job_of(cluster, NS, new_id) is None
        proxy.passing()
        wait_for(lambda: "waiting" not in claim_of(c, new_id)["settings"], 60, what="the claim's note cleared")
        assert driver_job_of(cluster, NS, new_id) is not None
        assert claim_of(c, new_id)["state"] == "created"  # its driver (a simulated container) records nothing


def test_a_rerun_canceled_while_its_kubernetes_api_is_slow_leaves_no_driver_job(tmp_path, monkeypatch, caplog):
    """Canceled through the server while the Job's create is held: canceled at once; once the API answers, the Job
    it made is deleted again and the launch ends without a driver (the server's log), the claim as the cancel left
    it (not failed, not noted)."""
    caplog.set_level(logging.INFO, logger="sematic_k8s_server")
    with slow_api_rerun(tmp_path, monkeypatch) as (_, c, cluster, proxy, new_id):
        r = c.post(f"/api/v1/resolutions/{new_id}/cancel")
        assert r.status_code == 202 and r.json()["state"] == "canceled", r.text
        proxy.passing()
        ended = wait_for(lambda: [m for m in caplog.messages if m.startswith(f"rerun {new_id}: ") and any(
            w in m for w in ("driver started", "driver not started", "launcher failed"))], 60,
                         what="the end of the rerun's launch (the server's log)")
        assert ended == [f"rerun {new_id}: driver not started: resolution {new_id} ended while its driver waited "
                         "for a slow Kubernetes API: the driver is not started"], ended
        assert cluster.calls(verb="create", resource="jobs"), "the held create never reached the API server"
        wait_for(lambda: driver_job_of(cluster, NS, new_id) is None, 30, what="the driver Job deleted")
        res = claim_of(c, new_id)
        assert res["state"] == "canceled" and res["error"] == "canceled before its driver recorded it", res


def test_a_rerun_refused_after_its_slow_kubernetes_api_answered_is_recorded_failed(tmp_path, monkeypatch):
    """The Job's create, held past the answer, is then refused (an admission webhook's 403): the claim is recorded
    failed in the launcher's words, as a refusal within the window is the request's 502."""
    with slow_api_rerun(tmp_path, monkeypatch) as (_, c, cluster, proxy, new_id):
        denial = 'admission webhook "policy.example.com" denied the request: no driver Jobs in sk-runs'
        cluster.fail(403, verb="create", resource="jobs", message=denial)
        proxy.passing()
        res = wait_for(lambda: (r := claim_of(c, new_id))["state"] != "created" and r, 60,
                       what="the claim's end")
        assert res["state"] == "failed", res
        assert res["error"] == (f"could not start the rerun's driver with the kubernetes launcher: RuntimeError: "
                                f"could not create the driver Job {driver_job_name(new_id)} in namespace {NS} (403): "
                                f"{denial}"), res
        assert driver_job_of(cluster, NS, new_id) is None


@contextlib.contextmanager
def proxied(proxy_of: Callable[[Cluster], ThrottlingProxy]) -> Iterator[ThrottlingProxy]:
    """``proxy_of(cluster)``, a proxy to the cluster model (passing, then closed, at the end)."""
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=lambda pod, c: Script(forever=True),
                 namespaces=[NS]) as cluster:
        proxy = proxy_of(cluster)
        try:
            yield proxy
        finally:
            proxy.passing()
            proxy.close()


@contextlib.contextmanager
def server_launching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube_host: str, kubeconfig: str = ""
                     ) -> Iterator[tuple[subprocess.Popen[bytes], float, list[ResolutionRecord]]]:
    """A server process (``sematic-k8s server``, the Kubernetes launcher, its calls' deadline 10 minutes:
    ``SEMATIC_K8S_KUBE_TIMEOUT``) whose Kubernetes API is ``kube_host`` (empty: ``kubeconfig``'s), a rerun asked of it
    and answered 202: (the process, when the rerun was asked (``time.monotonic``), a list that holds its record once
    the process ended)."""
    _, bucket = fresh_bucket(monkeypatch, "sk-stop-cut")
    storage = f"s3://{bucket}/artifacts"
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    key = auth.create_key(store.engine, "tests")
    store.close()
    recorded: list[ResolutionRecord] = []
    env = {"SEMATIC_K8S_KUBE_HOST": kube_host, "SEMATIC_K8S_KUBE_TIMEOUT": "600", "SEMATIC_K8S_STORAGE": storage}
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    with server_process(tmp_path, "--rerun-launcher", "kubernetes", "--rerun-namespace", NS,
                        "--rerun-image-repository", "127.0.0.1:5000/pipelines",
                        "--self-url", f"http://sematic-k8s.{NS}.svc:8000", env=env) as (proc, url):
        root = record_resolution(url, key, kind="cloud", image=IMAGE, storage_url=storage)
        asked = time.monotonic()
        r = httpx.post(f"{url}/api/v1/resolutions/{root}/rerun", json={}, headers={"X-API-Key": key}, timeout=30)
        assert r.status_code == 202, r.text
        new_id = r.json()["resolution_id"]
        yield proc, asked, recorded
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        res = store.get_resolution(new_id)
    finally:
        store.close()
    assert res is not None
    recorded.append(res)


def stopped_before(proc: subprocess.Popen[bytes], until: float, what: str) -> None:
    """SIGTERM to ``proc``: it exits 0 before ``until`` (``time.monotonic``), when ``what`` would have ended."""
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(max(until - time.monotonic(), 0.0)) == 0
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the server waited out {what} before stopping") from None


def stopped_in_the_stops_words(res: ResolutionRecord) -> None:
    assert res.state == "failed", res
    assert res.error == (f"the server stopped while its driver's launch waited for the create of its driver Job "
                         f"{driver_job_name(res.id)} in namespace {NS} (it may have been made: its driver, if it "
                         "starts, finds its resolution ended and stops): re-run it"), res.error


def test_a_server_stopped_while_its_kubernetes_api_holds_a_reruns_job_create_ends_it_and_records_it_failed(
        tmp_path, monkeypatch):
    """The driver Job's create held by the proxy; SIGTERM once it holds it: the call under way is ended and not tried
    again, the process exits 0 (waited for a minute, far below the held call's deadline), and the claim reads failed
    in plain words saying the Job may have been made. Was: its shutdown waited ``CLOSE_WAIT`` (10 s) for the launch
    and closed the store, the claim left ``created`` (later failed as one whose driver never recorded it), and the
    process exited only once the call's 3 tries ended (30 minutes here)."""
    with proxied(holding_proxy) as proxy, server_launching(tmp_path, monkeypatch, proxy.url) as (proc, _, recorded):
        wait_for(lambda: proxy.held == 1, 30, what="the driver Job's create held by the proxy")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    stopped_in_the_stops_words(recorded[0])


UNAVAILABLE = json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": "the server is currently unable to handle the request",
                          "reason": "ServiceUnavailable", "code": 503})


def refusing_proxy(cluster: Cluster) -> ThrottlingProxy:
    """A proxy to the cluster model answering every create of the driver Job 503, to be tried again in an hour
    (``Retry-After``: the launch pauses :attr:`Backoff.cap` before its next try)."""
    return ThrottlingProxy(int(cluster.proxy().rpartition(":")[2]), lambda head: head.startswith(JOB_CREATE),
                           Backoff().attempts, status=503, headers={"Retry-After": "3600"}, json=UNAVAILABLE)


def test_a_server_stopped_while_a_reruns_job_create_pauses_before_its_next_try_ends_the_pause(tmp_path, monkeypatch):
    """The driver Job's create answered 503 (``Retry-After``: an hour), the launch in its pause before the next try
    (:attr:`Backoff.cap`, 10 s); SIGTERM then: the pause ends at once, the process exits 0 before the pause would
    have ended, and the claim reads failed in the stop's words. Was: the pause was slept out (the next try then
    refused at once): the server's stop waited for it."""
    with proxied(refusing_proxy) as proxy, server_launching(tmp_path, monkeypatch, proxy.url) as (proc, asked,
                                                                                                 recorded):
        wait_for(lambda: proxy.throttled == 1, 30, what="the driver Job's create answered 503")
        # the pause began after the 503, answered after the rerun was asked
        stopped_before(proc, asked + Backoff().cap, "its launch's pause")
        assert proxy.throttled == 1, "the create was tried again"
    stopped_in_the_stops_words(recorded[0])


def test_a_server_stopped_while_a_reruns_kubernetes_api_connect_is_under_way_ends_the_connect(tmp_path, monkeypatch):
    """The Kubernetes API a port that never completes a connect (its listener's accept queue full: its SYNs dropped);
    SIGTERM while the launch's first call connects: the connect ends at once, the process exits 0 before the connect's
    deadline (:data:`CONNECT_TIMEOUT`) would have ended, and the claim reads failed in the stop's words, naming that
    call. Was: the connect went on to its deadline (the next try then refused at once): the server's stop waited
    for it."""
    with unaccepting_port() as port:
        _stopped_while_connecting(tmp_path, monkeypatch, f"http://127.0.0.1:{port}", "its launch's connect")


def test_a_server_stopped_while_a_reruns_kubernetes_api_tls_handshake_is_under_way_ends_the_handshake(
        tmp_path, monkeypatch):
    """The Kubernetes API an https:// address whose listener completes the connect and never answers (its TLS
    handshake stalls, the ClientHello unanswered); SIGTERM while the launch's first call's handshake is under way: the
    handshake ends at once, the process exits 0 before its deadline (:data:`CONNECT_TIMEOUT`) would have ended, and
    the claim reads failed in the stop's words, naming that call. Was: the socket told to the stop was the one the
    handshake's TLS socket took over (detached: shutting it down did nothing), and the handshake went on to its
    deadline: the server's stop waited for it."""
    with unanswering_port() as port:
        _stopped_while_connecting(tmp_path, monkeypatch, f"https://127.0.0.1:{port}", "its launch's TLS handshake")


def _stopped_while_connecting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: str, what: str) -> None:
    """A server launching a rerun through the Kubernetes API at ``api`` stopped (SIGTERM) while its first call
    connects: the process exits before the connect's deadline would have ended (``what`` waited out, if not), and the
    claim reads failed in the stop's words, naming that call."""
    with server_launching(tmp_path, monkeypatch, api) as (proc, asked, recorded):
        stopped_before(proc, asked + CONNECT_TIMEOUT, what)  # begun after the rerun was asked
    res = recorded[0]
    assert res.state == "failed", res
    assert res.error == (f"the server stopped while its driver's launch waited for the Kubernetes API call GET "
                         f"/api/v1/namespaces/{NS}/configmaps/sematic-k8s: re-run it"), res.error


def kubeconfig_of(api: HoldingTLSPort, path: Path) -> str:
    """A kubeconfig (written at ``path``) whose cluster is ``api``, trusted by its CA."""
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "held",
           "clusters": [{"name": "held", "cluster": {"server": api.url, "certificate-authority": api.ca}}],
           "users": [{"name": "held", "user": {"token": "t"}}],
           "contexts": [{"name": "held", "context": {"cluster": "held", "user": "held"}}]}
    path.write_text(json.dumps(doc))  # JSON is YAML
    return str(path)


def test_a_server_stopped_while_a_reruns_kubernetes_api_holds_its_answer_over_tls_ends_the_read(tmp_path, monkeypatch):
    """The Kubernetes API an https:// address (a kubeconfig's, its CA trusted) that completes the handshake, reads
    each request and never answers; SIGTERM once it holds the launch's first call: the read of its answer ends at
    once (the TLS socket, once made, is the one told to the stop), the process exits 0 (waited for a minute, far below
    the call's deadline), and the claim reads failed in the stop's words, naming that call."""
    with HoldingTLSPort(tmp_path / "tls") as api, server_launching(
            tmp_path, monkeypatch, "", kubeconfig_of(api, tmp_path / "kubeconfig")) as (proc, _, recorded):
        wait_for(lambda: api.held == 1, 30, what="the launch's first call held over TLS")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    res = recorded[0]
    assert res.state == "failed", res
    assert res.error == (f"the server stopped while its driver's launch waited for the Kubernetes API call GET "
                         f"/api/v1/namespaces/{NS}/configmaps/sematic-k8s: re-run it"), res.error
