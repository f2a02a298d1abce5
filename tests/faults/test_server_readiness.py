"""The chart's probes against a real server process over a PostgreSQL that stops and starts (``pg_ctl``): readiness
(``/api/v1/ready``) follows the database, liveness (``/api/v1/health``) does not, so Kubernetes takes a server that
waits for its database out of its Service without restarting it; a server started before its database waits for it.
The server's log says each in plain words: one line per change, no credentials, no SQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s.store.wire import batch_to_json, dumps
from serving import free_port, wait_for

PASSWORD = "s3cret-pw"  # in the URL the server is given (the cluster trusts any): never in its log


@pytest.fixture
def cluster():
    from pgcluster import own_cluster

    with own_cluster() as cluster:
        yield cluster


def start_server(tmp_path, db_url: str) -> tuple[subprocess.Popen[bytes], str, object]:
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sematic_k8s_server.cli", "server", "--local", "--port",
                                 str(port), "--home", str(tmp_path), "--db-url", db_url], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=os.environ.copy())
    return proc, f"http://127.0.0.1:{port}", log


def status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=10).status_code
    except httpx.TransportError:
        return None


def a_write() -> bytes:
    """A resolution and its root run, as the body of ``POST /api/v1/store/write``."""
    root = uuid.uuid4().hex
    batch = Batch()
    batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:f", state="resolved", created_at=utcnow()))
    batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path="m:f", func_name="f", state="resolved",
                            created_at=utcnow()))
    return dumps(batch_to_json(batch))


def with_password(cluster, name: str) -> str:
    from pgcluster import create_database

    return create_database(cluster.url, name).replace("postgres@", f"postgres:{PASSWORD}@")


def test_readiness_follows_the_database_and_liveness_does_not(tmp_path, cluster) -> None:
    db_url = with_password(cluster, "probes")
    proc, url, log = start_server(tmp_path, db_url)
    try:
        wait_for(lambda: status(f"{url}/api/v1/health") == 200, 60, what="the server")
        assert status(f"{url}/api/v1/ready") == 200
        cluster.stop("fast")
        answer = httpx.post(f"{url}/api/v1/store/write", content=a_write(), timeout=30,  # a client's write meanwhile
                            headers={"Content-Type": "application/json"})
        assert answer.status_code == 503, answer.text
        for _ in range(4):  # probes, as the kubelet sends them
            ready = httpx.get(f"{url}/api/v1/ready", timeout=10)
            assert ready.status_code == 503, ready.text
            assert ready.json()["detail"].startswith("not ready: the metadata database does not answer: "), ready.text
            host = db_url.rpartition("@")[2].partition("/")[0]  # an unauthenticated answer names no host or user
            assert all(part not in ready.text for part in (*host.split(":"), "postgres")), ready.text
            assert status(f"{url}/api/v1/health") == 200  # alive: not to be restarted for its database
            time.sleep(1)
        cluster.start()
        wait_for(lambda: status(f"{url}/api/v1/ready") == 200, 30, what="ready again")
        wait_for(lambda: "listener is connected again" in log.read_text(), 30, what="live events again")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert PASSWORD not in text
    assert "Traceback" not in text and "[SQL:" not in text and "[parameters:" not in text, text
    assert text.count("not ready: the metadata database does not answer") == 1, text  # on the change, not each probe
    assert "ready again" in text
    assert text.count("live events: the PostgreSQL listener failed") == 1, text  # not once a second
    assert "live events: the PostgreSQL listener is connected again" in text


def test_a_server_started_before_its_database_waits_for_it(tmp_path, cluster) -> None:
    db_url = with_password(cluster, "later")
    cluster.stop("fast")
    proc, url, log = start_server(tmp_path, db_url)
    waiting, _, waiting_log = start_server(tmp_path, db_url)  # one stopped while it waits
    try:
        for p, lg in ((proc, log), (waiting, waiting_log)):
            wait_for(lambda lg=lg, p=p: "Waiting for the metadata database" in lg.read_text() or p.poll() is not None,
                     60, what="the server waiting")
            assert p.poll() is None, lg.read_text()
        assert status(f"{url}/api/v1/health") is None  # not serving yet: the startup probe waits
        waiting.send_signal(signal.SIGTERM)
        assert waiting.wait(15) == 0
        cluster.start()
        wait_for(lambda: status(f"{url}/api/v1/ready") == 200, 60, what="the server ready")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        for p in (proc, waiting):
            if p.poll() is None:
                p.kill()
    text = log.read_text()
    assert PASSWORD not in text and "Traceback" not in text, text
    assert text.count("Waiting for the metadata database") == 1, text
