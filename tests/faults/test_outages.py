"""Clients ride out outages (DESIGN.md "Faults"): a server killed and started again, a proxy that drops every
connection, an S3 server stopped for a while; answers asking to retry later; and infrastructure failures that
outlast the retry window, recorded as such and retried, never pinned on a func."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import fault_pipelines as fp
import sematic_k8s as sk
from outages import DroppingProxy, ServerProcess, ThrottlingProxy, TimingOutGateway, private_s3, running
from s3server import fresh_bucket
from sematic_k8s import errors, serialization
from sematic_k8s.executors.remote import Ended, _died
from sematic_k8s.executors.scripted import ScriptedExecutor
from sematic_k8s.resolvers import loop as loop_module
from sematic_k8s.resolvers.loop import ResolutionLoop
from sematic_k8s.settings import DRIVER_ENV, STORAGE_ENV, TASK_ENV
from sematic_k8s.specs import (
    WORKER_EXIT_INFRASTRUCTURE,
    DriverSpec,
    ResolutionSettings,
    TaskSpec,
    outcome_key,
    staged_key,
)
from sematic_k8s.storage.base import artifact_key, log_key, put_artifact
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_from_url
from sematic_k8s.store import sql_store
from sematic_k8s.store.http import GATEWAY_TIMEOUT_TRIES, HttpStore
from sematic_k8s.store.sql import SqlStore
from serving import serve, wait_for

HERE = Path(__file__).parent
OUTAGE = 3.0  # seconds a service stays down


def resolve_in_thread(future: sk.Future, resolver: sk.LocalResolver) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = future.resolve(resolver)
        except BaseException as e:  # noqa: BLE001
            outcome["error"] = e
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def all_recorded(store: SqlStore, root_id: str) -> None:
    """The resolution and every one of its runs resolved, none with an error."""
    res = store.get_resolution(root_id)
    assert res.state == "resolved" and res.error is None, res
    runs = store.runs_of_root(root_id)
    assert {r.state for r in runs} == {"resolved"} and not [r for r in runs if r.error], runs
    assert len(runs) == 5  # gated, wait_for and three adds


def test_the_server_killed_and_restarted_mid_resolution_loses_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    server = ServerProcess(tmp_path)
    with running(server):
        gate = tmp_path / "gate"
        f = fp.gated(3, str(gate))
        thread, outcome = resolve_in_thread(f, sk.LocalResolver(home=tmp_path, server=server.url, max_parallelism=2))
        wait_for(lambda: Path(f"{gate}.started").exists() or outcome, 60, what="the gated step")
        server.kill()
        gate.touch()  # the gated step and the last addition finish while the server is down
        time.sleep(OUTAGE)
        server.start()  # same port, same database
        thread.join(120)
        assert outcome.get("value") == 3 + 1 + 2, outcome
        all_recorded(SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}"), f.id)


def test_postgresql_stopped_under_the_server_mid_resolution_loses_nothing(tmp_path, monkeypatch):
    """The server's own database goes away (``pg_ctl stop``, then ``-m immediate``: a crash) while a resolution
    records through the server, and comes back after a while: the server answers 503 meanwhile, its clients
    retry, its pool's dead connections are replaced, and the resolution finishes with every step recorded."""
    from pgcluster import create_database, own_cluster

    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    with own_cluster() as cluster:
        db_url = create_database(cluster.url, "outage")
        server = ServerProcess(tmp_path, db_url=db_url)
        with running(server):
            for mode, steps in (("fast", 3), ("immediate", 4)):
                gate = tmp_path / f"gate-{mode}"
                f = fp.gated(steps, str(gate))
                resolver = sk.LocalResolver(home=tmp_path, server=server.url, max_parallelism=2)
                thread, outcome = resolve_in_thread(f, resolver)
                wait_for(lambda gate=gate, outcome=outcome: Path(f"{gate}.started").exists() or outcome, 60,
                         what="the gated step")
                cluster.stop(mode)
                gate.touch()  # the gated step and the last addition finish while the database is down
                time.sleep(OUTAGE)
                cluster.start()  # same port, same data
                thread.join(120)
                assert outcome.get("value") == steps + 1 + 2, outcome
                store = SqlStore(db_url, create=False)
                all_recorded(store, f.id)
                store.close()
            assert "503" in server.log.read_text()  # it did answer while the database was down


def test_a_proxy_dropping_every_connection_for_a_while_loses_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    with serve(tmp_path) as s:
        proxy = DroppingProxy(int(s.url.rsplit(":", 1)[1]))
        try:
            gate = tmp_path / "gate"
            f = fp.gated(5, str(gate))
            resolver = sk.LocalResolver(home=tmp_path, server=proxy.url, api_key=s.key, max_parallelism=2)
            thread, outcome = resolve_in_thread(f, resolver)
            wait_for(lambda: Path(f"{gate}.started").exists() or outcome, 60, what="the gated step")
            proxy.drop()
            gate.touch()
            time.sleep(OUTAGE)
            proxy.drop(False)
            thread.join(120)
            assert outcome.get("value") == 5 + 1 + 2, outcome
            assert proxy.dropped > 0
            all_recorded(s.store, f.id)
        finally:
            proxy.close()


LOST_ANSWERS = {"dropped": b"",
                "proxy-502": b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"}


@pytest.mark.parametrize("conditional", [True, False], ids=["conditional-writes", "no-conditional-writes"])
@pytest.mark.parametrize("existing", [False, True], ids=["new-log", "existing-log"])
@pytest.mark.parametrize("answer", list(LOST_ANSWERS))
def test_an_append_whose_answer_was_lost_is_not_repeated(monkeypatch, answer, existing, conditional):
    """A log append's PUT reaches S3 (CI's server), which stores it, but its answer never comes back: a proxy in
    between closes the connection instead (or answers 502). The storage retries it; every line is in the log once
    (was: the retry's conditional write failed, and the append read its own lines back and added them again)."""
    from sematic_k8s.storage.s3 import S3Storage  # boto3: an extra

    endpoint, bucket = fresh_bucket(monkeypatch, "lost-answer")
    proxy = DroppingProxy(int(endpoint.rsplit(":", 1)[1]))
    try:
        storage = S3Storage(bucket, "p", endpoint_url=proxy.url)
        storage._conditional_writes = conditional  # as found out on an S3 API without them (501 NotImplemented)
        key = log_key("run1")
        if existing:
            storage.append(key, b"line 1\n")
        proxy.lose_answer(f"PUT /{bucket}/p/{key} ".encode(), LOST_ANSWERS[answer])
        storage.append(key, b"line 2\n")
        assert proxy.lost == 1
        storage.append(key, b"line 3\n")
        assert storage.get(key) == (b"line 1\n" if existing else b"") + b"line 2\nline 3\n"
    finally:
        proxy.close()


@pytest.mark.parametrize("code", ["TooManyRequests", ""], ids=["s3-error", "bare-429"])
def test_s3_answering_too_many_requests_for_a_while_is_ridden_out(monkeypatch, code):
    """An S3 API that limits writes to one key (R2 and GCS: one a second) answers 429 Too Many Requests to an
    artifact's put and to a log's append, more times in a row than botocore's own retries of a call: both are retried
    within the retry window and land once (was: S3StorageError "TooManyRequests" once botocore's six attempts were
    used up, as for a refused request; a worker storing its value failed its attempt, and its func was run again).
    The storage's client makes one attempt a call here (botocore's own backoff would take a minute)."""
    import boto3
    from botocore.config import Config

    from sematic_k8s.storage.s3 import S3Storage  # boto3: an extra

    monkeypatch.setenv("SEMATIC_K8S_RETRY_WINDOW", "120")
    endpoint, bucket = fresh_bucket(monkeypatch, "throttled")
    key, log = artifact_key("a" * 64), log_key("run1")
    direct = S3Storage(bucket, "p", endpoint_url=endpoint)
    direct.append(log, b"line 1\n")
    for target, write in ((key, lambda s: s.put(key, b"the value")), (log, lambda s: s.append(log, b"line 2\n"))):
        start = f"PUT /{bucket}/p/{target} ".encode()
        proxy = ThrottlingProxy(int(endpoint.rsplit(":", 1)[1]), lambda head, start=start: head.startswith(start),
                                3, code=code)
        try:
            client = boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1", config=Config(
                s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 0}))
            write(S3Storage(bucket, "p", client=client))
            assert proxy.throttled == 3
        finally:
            proxy.close()
    assert direct.get(key) == b"the value"
    assert direct.get(log) == b"line 1\nline 2\n"


@pytest.mark.parametrize("answer", list(LOST_ANSWERS))
def test_an_append_whose_answer_was_lost_while_another_writer_appended_is_not_repeated(monkeypatch, answer):
    """As above, and another writer appends after S3 stored the lost write, before its retry: the retry finds
    its own append (the other writer kept its id) and stops; both appends are there once, in their order."""
    from sematic_k8s.storage.s3 import S3Storage  # boto3: an extra

    endpoint, bucket = fresh_bucket(monkeypatch, "lost-answer")
    proxy = DroppingProxy(int(endpoint.rsplit(":", 1)[1]))
    try:
        storage, other = S3Storage(bucket, "p", endpoint_url=proxy.url), S3Storage(bucket, "p", endpoint_url=endpoint)
        key = log_key("run1")
        storage.append(key, b"line 1\n")
        proxy.lose_answer(f"PUT /{bucket}/p/{key} ".encode(), LOST_ANSWERS[answer],
                          meanwhile=lambda: other.append(key, b"other\n"))
        storage.append(key, b"line 2\n")
        assert proxy.lost == 1
        assert storage.get(key) == b"line 1\nline 2\nother\n"
    finally:
        proxy.close()


def test_answers_asking_to_retry_later_are_honoured(tmp_path):
    """429 with Retry-After, then 503, then the answer: the store waits as asked and returns the answer."""
    seen: list[float] = []
    answers = [(429, {"Retry-After": "1"}), (503, {}), (200, {})]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            seen.append(time.monotonic())
            status, headers = answers[min(len(seen), len(answers)) - 1]
            body = json.dumps({"cancel_requested": False} if status == 200 else {"detail": "later"}).encode()
            self.send_response(status)
            for k, v in {**headers, "Content-Type": "application/json", "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        store = HttpStore(f"http://127.0.0.1:{httpd.server_address[1]}", retry_window=30)
        assert store.cancel_requested("ab") is False
        assert len(seen) == 3 and seen[1] - seen[0] >= 1.0  # Retry-After: 1 was waited out
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_proxys_gateway_timeouts_for_a_while_are_ridden_out(tmp_path):
    """A gateway before the server answering nginx's 504 page (its upstream not answering in time: a server restarting
    behind it) to more tries than the server's own statement-timeout 504 is sent for (``GATEWAY_TIMEOUT_TRIES``),
    then passing requests on: the read is answered, as a 502's or a 503's outage is ridden out. Was: any 504 counted
    as the server's, the read failed at the third (ServerError, HTTP 504)."""
    with serve(tmp_path) as server:
        gateway = TimingOutGateway(int(server.url.rsplit(":", 1)[1]))
        store = HttpStore(gateway.url, server.key, retry_window=600)
        read: dict[str, object] = {}

        def reading() -> None:
            try:
                read["answer"] = store.list_resolutions()
            except Exception as e:  # noqa: BLE001 - what the test checks
                read["error"] = e

        reader = threading.Thread(target=reading, daemon=True)
        try:
            reader.start()
            wait_for(lambda: gateway.answered > GATEWAY_TIMEOUT_TRIES or not reader.is_alive(), 120,
                     what="the gateway's 504s")
            gateway.timing_out = False
            reader.join(120)
            assert read.get("answer") == [], read
        finally:
            gateway.timing_out = False
            reader.join(120)
            store.close()
            gateway.close()


def driver_env(tmp_path: Path, db: str) -> dict[str, str]:
    env = {**os.environ, "SEMATIC_K8S_DB_URL": db,
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.pop("SEMATIC_K8S_SERVER", None)
    return env


def driver_spec(future: sk.Future, storage_url: str) -> DriverSpec:
    """A driver's task for ``future``: its pickled root in storage, worker processes, its id chosen up front."""
    s = serialization.serialize(future)
    put_artifact(storage_from_url(storage_url), s)
    return DriverSpec(root={"id": s.id, "format": s.format}, storage_url=storage_url, image="none",
                      executor="process", resolution=ResolutionSettings(root_id=future.id, max_parallelism=8))


def test_an_s3_outage_mid_resolution_loses_nothing(tmp_path, monkeypatch):
    """A driver with worker processes, artifacts on a private S3 server that stops while a worker runs (the
    worker stores its output, and the driver reads it, while S3 is down)."""
    with private_s3(monkeypatch) as (s3, storage_url):
        db = f"sqlite:///{tmp_path / 'db.sqlite3'}"
        gate = tmp_path / "gate"
        f = fp.remote_gated(4, str(gate))
        env = {**driver_env(tmp_path, db), DRIVER_ENV: driver_spec(f, storage_url).to_json()}
        driver = subprocess.Popen([sys.executable, "-m", "sematic_k8s.driver"], env=env, stderr=subprocess.PIPE,
                                  text=True)
        try:
            wait_for(lambda: Path(f"{gate}.started").exists() or driver.poll() is not None, 120,
                     what="the gated worker")
            s3.stop()
            gate.touch()
            time.sleep(OUTAGE)
            s3.start()
            _, stderr = driver.communicate(timeout=180)
        finally:
            if driver.poll() is None:
                driver.kill()
        assert driver.returncode == 0, stderr
        store = sql_store(db)
        res = store.get_resolution(f.id)
        assert res.state == "resolved" and store.get_artifact(store.get_run(f.id).output_id).summary == 4 + 1 + 2
        runs = store.runs_of_root(f.id)
        assert {r.state for r in runs} == {"resolved"} and not [r for r in runs if r.error]
        storage = storage_from_url(storage_url)
        for artifact_id in {r.output_id for r in runs}:
            serialization.verify(artifact_id, store.get_artifact(artifact_id).format,
                                 storage.get(artifact_key(artifact_id)))


def test_a_worker_that_cannot_reach_storage_says_so(tmp_path, monkeypatch):
    """Past its retry window a worker exits 75, recorded as StorageUnreachable: an InfrastructureError (retried
    by the loop), never the func's error."""
    with private_s3(monkeypatch) as (s3, storage_url):
        s = serialization.serialize(2)
        put_artifact(storage_from_url(storage_url), s)
        spec = TaskSpec(run_id="ab" * 16, root_id="ab" * 16, func_path=fp.remote_add.path,
                        source_file=fp.remote_add.source_file, input_ids={"a": s.id, "b": s.id},
                        input_formats={"a": s.format, "b": s.format}, attempt=1)
        s3.stop()
        env = {**driver_env(tmp_path, ""), TASK_ENV: spec.to_json(), STORAGE_ENV: storage_url,
               "SEMATIC_K8S_RETRY_WINDOW": "1"}
        done = subprocess.run([sys.executable, "-m", "sematic_k8s.worker"], env=env, capture_output=True, text=True,
                              timeout=120)
        s3.start()
    assert done.returncode == WORKER_EXIT_INFRASTRUCTURE, done.stderr
    assert "cannot reach S3" in done.stderr
    info = _died(Ended(spec.run_id, done.returncode, last_logs=done.stderr))  # its last line names S3StorageError
    assert info["type"] == "StorageUnreachable" and "InfrastructureError" in info["mro"]
    assert "could not reach artifact storage" in info["message"]


def test_a_worker_with_presigned_urls_that_cannot_reach_storage_says_so(tmp_path, monkeypatch):
    """The same for a worker given presigned URLs (containers, pods): retried for the window, exit 75, and the
    URLs (secrets until they expire) nowhere in what it printed."""
    with private_s3(monkeypatch) as (s3, storage_url):
        storage = storage_from_url(storage_url)
        s = serialization.serialize(2)
        put_artifact(storage, s)
        run_id = "cd" * 16
        keys = [("GET", artifact_key(s.id)), ("PUT", outcome_key(run_id, 1)), ("PUT", staged_key(run_id, 1))]
        spec = TaskSpec(run_id=run_id, root_id=run_id, func_path=fp.remote_add.path,
                        source_file=fp.remote_add.source_file, input_ids={"a": s.id, "b": s.id},
                        input_formats={"a": s.format, "b": s.format}, attempt=1,
                        urls={f"{m} {k}": storage.presign(m, k, 600) for m, k in keys})
        s3.stop()
        env = {**driver_env(tmp_path, ""), TASK_ENV: spec.to_json(), "SEMATIC_K8S_RETRY_WINDOW": "1"}
        done = subprocess.run([sys.executable, "-m", "sematic_k8s.worker"], env=env, capture_output=True, text=True,
                              timeout=120)
        s3.start()
    assert done.returncode == WORKER_EXIT_INFRASTRUCTURE, done.stderr
    assert "cannot reach storage" in done.stderr and "Signature" not in done.stderr


@sk.func
def stored(x: int) -> int:
    raise AssertionError("scripted: never executed")


@sk.func
def uses_stored(x: int) -> int:
    return stored(x)


def test_infrastructure_failures_are_retried_beside_the_funcs_own_retries(tmp_path, monkeypatch):
    """A func without retries whose attempts meet infrastructure failures is tried again, and resolves."""
    monkeypatch.setattr(loop_module, "INFRA_RETRY_DELAY", 0.0)
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    ex = ScriptedExecutor({"stored": [errors.S3StorageError("cannot reach S3"), errors.StorageUnreachable(), 7]})
    f = uses_stored(1)
    assert ResolutionLoop(store, LocalStorage(tmp_path / "s"), ex, ResolutionSettings(), kind="local").run(f) == 7
    assert ex.attempts("stored") == [1, 2, 3]
    run = next(r for r in store.runs_of_root(f.id) if r.func_name == "stored")
    assert run.state == "resolved" and run.error is None


def test_an_infrastructure_failure_that_lasts_is_recorded_as_such(tmp_path, monkeypatch):
    monkeypatch.setattr(loop_module, "INFRA_RETRY_DELAY", 0.0)
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    ex = ScriptedExecutor({"stored": [errors.S3StorageError("cannot reach S3 at http://127.0.0.1:1")]})
    f = uses_stored(1)
    with pytest.raises(sk.ResolutionFailed) as info:
        ResolutionLoop(store, LocalStorage(tmp_path / "s"), ex, ResolutionSettings(), kind="local").run(f)
    assert ex.attempts("stored") == [1, 2, 3, 4]  # three more than the func's own (none)
    run = next(r for r in store.runs_of_root(f.id) if r.func_name == "stored")
    assert run.error["type"] == "S3StorageError" and "InfrastructureError" in run.error["mro"]
    assert "S3StorageError: cannot reach S3" in str(info.value)


def test_postgresql_down_past_the_heartbeat_timeout_under_the_server_kills_no_live_resolution(tmp_path, monkeypatch):
    """The server's database stopped for longer than the heartbeat timeout (a restart, a failover), shorter than the
    resolvers' retry window, while a resolution records through the server and its gated step waits: its beats
    cannot land meanwhile (503), but its resolver lives and retries them. Once the database is back, the server
    judges no silence until it has been reachable for the timeout (as after its own start): the resolution is not
    marked dead, its beats land, and it resolves. Was: the server's first sweep after the outage marked it failed
    ("the resolver stopped responding"), its next write refused, a live pipeline ended. (A timeout of 10 s: the beats'
    retries come up to 4 s apart, so a shorter one could pass before the next lands.)"""
    from pgcluster import create_database, own_cluster

    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    timing = {"SEMATIC_K8S_HEARTBEAT_TIMEOUT": "10", "SEMATIC_K8S_HEARTBEAT_INTERVAL": "0.5",
              "SEMATIC_K8S_RETRY_WINDOW": "90"}
    for name, value in timing.items():
        monkeypatch.setenv(name, value)
    with own_cluster() as cluster:
        db_url = create_database(cluster.url, "outage")
        server = ServerProcess(tmp_path, db_url=db_url, env=timing)
        with running(server):
            gate = tmp_path / "gate"
            f = fp.gated(3, str(gate))
            thread, outcome = resolve_in_thread(f, sk.LocalResolver(home=tmp_path, server=server.url,
                                                                    max_parallelism=2))
            wait_for(lambda: Path(f"{gate}.started").exists() or outcome, 60, what="the gated step")
            time.sleep(10.5)  # the server judges silence by now (up for the timeout)
            cluster.stop("fast")
            time.sleep(14)  # past the heartbeat timeout, within the retry window
            cluster.start()
            time.sleep(25)  # more than twice the timeout with the database back: the server sweeps meanwhile
            assert not outcome, outcome
            gate.touch()
            thread.join(120)
            assert outcome.get("value") == 3 + 1 + 2, outcome
            store = SqlStore(db_url, create=False)
            all_recorded(store, f.id)
            store.close()

