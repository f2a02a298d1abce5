"""Workers without botocore: presigned URLs made by the executor, against a real S3 API (moto) and real
HTTP servers that fail."""

from __future__ import annotations

import http.server
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from s3server import s3_endpoint

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

import sematic_k8s as sk  # noqa: E402
from presigned_pipeline import pipeline  # noqa: E402
from sematic_k8s import serialization  # noqa: E402
from sematic_k8s.errors import StorageError  # noqa: E402
from sematic_k8s.executors.inline import InlineExecutor  # noqa: E402
from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor  # noqa: E402
from sematic_k8s.executors.process import ProcessExecutor  # noqa: E402
from sematic_k8s.executors.remote import adopt_outcome  # noqa: E402
from sematic_k8s.specs import TaskSpec, outcome_key  # noqa: E402
from sematic_k8s.storage.base import artifact_key, log_key  # noqa: E402
from sematic_k8s.storage.presigned import PresignedStorage  # noqa: E402
from sematic_k8s.storage.s3 import S3Storage  # noqa: E402
from sematic_k8s.store import sql_store  # noqa: E402


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A real S3 API on 127.0.0.1: $AWS_ENDPOINT_URL_S3's server, else moto's, in-process."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID", "test"))
        mp.setenv("AWS_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "test"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        with s3_endpoint() as url:
            yield url


@pytest.fixture
def s3(endpoint: str) -> S3Storage:
    bucket = f"sk-presigned-{uuid.uuid4().hex[:10]}"
    storage = S3Storage(bucket, "pfx", endpoint_url=endpoint, region="us-east-1")
    storage.client.create_bucket(Bucket=bucket)
    return storage


class PresigningProcessExecutor(ProcessExecutor):
    """Worker processes given presigned URLs, as containers and pods are."""

    presigns = True


def test_workers_with_presigned_urls_need_no_botocore_and_run_everything(s3, tmp_path):
    """Worker processes given presigned URLs store everything through them, without botocore; each reads its task
    on its stdin (left empty for its func): neither the task nor a URL is in its environment (was: the task, URLs
    and all, in $SEMATIC_K8S_TASK, readable in /proc/PID/environ)."""
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")

    class Resolver(sk.LocalResolver):
        def _parts(self):
            return self.store, s3, InlineOrRemoteExecutor(InlineExecutor(1), PresigningProcessExecutor(s3, s3.url))

    f = pipeline(3)
    probes, length = f.resolve(Resolver(home=tmp_path))
    assert length == 2 * 1024 * 1024  # a value above the outcome document's limit: staged, then stored
    assert [p["x"] for p in probes] == [0, 1, 2]
    assert not any(p["botocore"] for p in probes)
    assert not any(p["environ_has_url"] or p["environ_has_task"] or p["stdin"] for p in probes), probes
    probe_runs = [r for r in store.runs_of_root(f.id) if r.func_name == "probe"]
    assert len(probe_runs) == 3
    for run in probe_runs:  # the logs the workers carried, stored by the executor
        assert b"probing" in s3.get(log_key(run.id))


def test_a_value_that_does_not_match_its_content_id_is_not_stored(s3):
    spec = TaskSpec("r1", "root", "m.f", None, {}, {}, 1)
    good = serialization.serialize(41)
    forged = {"output": good.record(), "payload": "Zm9yZ2Vk", "logs": "hi\n"}  # b"forged"
    doc = adopt_outcome(s3, spec, forged)
    assert "could not be stored" in doc["error"]["message"] and "corrupt" in doc["error"]["message"]
    assert not s3.exists(artifact_key(good.id))
    assert s3.get(log_key("r1")) == b"hi\n"  # the logs are kept all the same


def test_presigned_round_trip_and_missing_keys(s3):
    s3.put("artifacts/ab/in", b"input bytes")
    urls = {"GET artifacts/ab/in": s3.presign("GET", "artifacts/ab/in", 60),
            "GET artifacts/ab/none": s3.presign("GET", "artifacts/ab/none", 60),
            f"PUT {outcome_key('r', 1)}": s3.presign("PUT", outcome_key("r", 1), 60)}
    worker = PresignedStorage(urls, retry_window=1)
    assert worker.get("artifacts/ab/in") == b"input bytes"
    with pytest.raises(KeyError):
        worker.get("artifacts/ab/none")
    worker.put(outcome_key("r", 1), b'{"output": 1}')
    assert s3.get(outcome_key("r", 1)) == b'{"output": 1}'  # not an empty object: sent as octet-stream
    with pytest.raises(KeyError, match="no presigned PUT"):
        worker.put("artifacts/ab/other", b"x")  # only the keys it was given
    spec = TaskSpec("r", "root", "m.f", None, {}, {}, 1, urls=urls)
    assert "X-Amz-Signature" not in repr(spec)


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first two requests, then serves ``body``; 403 on /expired."""

    answered = 0
    body = b"at last"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).answered += 1
        status = 403 if self.path.startswith("/expired") else 503 if type(self).answered <= 2 else 200
        payload = b"<Error><Code>AccessDenied</Code></Error>" if status == 403 else self.body
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flaky_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    _Flaky.answered = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_5xx_answers_are_retried_and_a_refused_url_fails_at_once(flaky_server):
    worker = PresignedStorage({"GET k": f"{flaky_server}/k?X-Amz-Signature=s",
                               "GET old": f"{flaky_server}/expired?X-Amz-Signature=s"}, retry_window=30)
    assert worker.get("k") == b"at last" and _Flaky.answered == 3
    with pytest.raises(StorageError, match="HTTP 403, AccessDenied") as e:
        worker.get("old")
    assert "X-Amz-Signature" not in str(e.value)


def test_unreachable_storage_is_retried_for_the_window_then_a_storage_error():
    import socket

    with socket.socket() as s:  # a port nothing listens on: connections refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = PresignedStorage({"GET k": f"http://127.0.0.1:{port}/k?X-Amz-Signature=secret"}, retry_window=0.5)
    with pytest.raises(StorageError, match="cannot reach storage") as e:
        worker.get("k")
    assert "secret" not in str(e.value)


def test_a_workers_input_urls_last_only_until_it_has_read_them(s3, monkeypatch):
    """A worker reads all its inputs before its func runs: their presigned GETs expire 15 minutes (plus twice the
    retry window) after the launch, whatever the func's timeout; the PUTs of its outcome and staging object last
    the timeout (else a day) as before. Was: the GETs lasted as long as the PUTs, a day for a func without a
    timeout, for whoever reads the worker's environment. The worker still runs with them."""
    import time
    from urllib.parse import parse_qs, urlsplit

    from sematic_k8s.executors.base import Task
    from sematic_k8s.storage.base import artifact_loader, put_artifact

    monkeypatch.setenv("SEMATIC_K8S_RETRY_WINDOW", "30")
    record = put_artifact(s3, serialization.serialize(7))
    value = serialization.Value(record["id"], record["format"], record["type_name"], load=artifact_loader(s3))
    ex = PresigningProcessExecutor(s3, s3.url)
    try:
        from presigned_pipeline import probe

        task = Task(uuid.uuid4().hex, uuid.uuid4().hex, probe, {"x": value})
        ex.submit(task)
        urls = ex.running[task.run_id].urls
        def lasts(url: str) -> float:  # seconds: signature v4 says so, v2 says until when
            query = parse_qs(urlsplit(url).query)
            return float(query["X-Amz-Expires"][0]) if "X-Amz-Expires" in query else \
                float(query["Expires"][0]) - time.time()

        expires = {what.split()[0] + (" input" if "artifacts/" in what else ""): round(lasts(url), -1)
                   for what, url in urls.items()}
        assert expires == {"GET input": 900 + 2 * 30 + 60, "PUT": 24 * 3600 + 2 * 30 + 60}, expires
        [outcome] = _wait(ex)
        summary = outcome.output["summary"]
        assert outcome.error is None and summary["x"] == 7 and not summary["botocore"], summary
    finally:
        ex.close()


def _wait(ex: Any, timeout: float = 60.0) -> list[Any]:
    import time

    deadline, out = time.monotonic() + timeout, []
    while not out and time.monotonic() < deadline:
        out = ex.wait(1.0)
    return out


def test_a_task_handed_over_by_reference_is_fetched_and_checked_and_its_loss_is_the_storages(s3, tmp_path):
    """A task too large to hand over whole (a pod's Secret) is stored under its sha256 and handed over as a TaskRef:
    the worker fetches it through the presigned GET. A copy that is not there, or not the one its key names, is a
    StorageError: ``python -m sematic_k8s.worker`` exits 75 naming it (its attempt is run again), never a crash."""
    import subprocess
    import sys

    from sematic_k8s.executors.remote import load_task, task_ref
    from sematic_k8s.specs import WORKER_EXIT_INFRASTRUCTURE, WORKER_SAYS, TaskRef

    spec = TaskSpec(run_id=uuid.uuid4().hex, root_id="r", func_path="m:f", source_file=None, input_ids={"x": "a" * 64},
                    input_formats={"x": "json"}, attempt=1, urls={"GET artifacts/aa": "http://127.0.0.1:9/x"})
    ref = task_ref(s3, spec)
    assert ref.key.startswith(f"tasks/r/{spec.run_id}/1/") and "Signature" not in repr(ref)
    assert load_task(ref.to_json()) == spec and load_task(spec.to_json()) == spec
    assert task_ref(s3, spec).key == ref.key  # the same task: the same copy, written once
    gone = f"tasks/r/{spec.run_id}/1/{'0' * 64}.json"
    missing = TaskRef(gone, s3.presign("GET", gone, 60))
    with pytest.raises(StorageError, match="is not there"):
        load_task(missing.to_json())
    other = f"tasks/r/{spec.run_id}/1/{'1' * 64}.json"
    s3.put(other, b"{}")
    with pytest.raises(StorageError, match="not the one its key names"):
        load_task(TaskRef(other, s3.presign("GET", other, 60)).to_json())
    handed = tmp_path / "task"
    handed.write_text(missing.to_json())
    env = {**os.environ, "SEMATIC_K8S_TASK_FILE": str(handed), "SEMATIC_K8S_RETRY_WINDOW": "1"}
    done = subprocess.run([sys.executable, "-m", "sematic_k8s.worker"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == WORKER_EXIT_INFRASTRUCTURE, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"{WORKER_SAYS}StorageError: the task stored at")
