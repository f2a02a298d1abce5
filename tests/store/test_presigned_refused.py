"""A worker's presigned requests S3 answers with a 4xx other than the 403s of keys and expiry: each judged by its
status and S3's error Code. Caused against a real S3 API (moto): a bucket deleted between presign and use
(404 NoSuchBucket), an input deleted (404 NoSuchKey), a query tampered with (403 SignatureDoesNotMatch); and, for
what moto never answers a presigned request (400 EntityTooLarge, InvalidArgument, AuthorizationQueryParametersError
and RequestTimeout, 405, 411, a proxy's 413), by an HTTP front on it answering S3's own bodies."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from s3_front import Front, s3_error, s3_front
from s3server import s3_endpoint

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

import sematic_k8s as sk  # noqa: E402
from presigned_pipeline import big, length, measured  # noqa: E402
from sematic_k8s import serialization  # noqa: E402
from sematic_k8s.errors import (  # noqa: E402
    PresignedRequestRefused,
    ResolutionFailed,
    StorageError,
    StorageKeysRefused,
)
from sematic_k8s.executors.inline import InlineExecutor  # noqa: E402
from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor  # noqa: E402
from sematic_k8s.executors.process import ProcessExecutor  # noqa: E402
from sematic_k8s.resolvers import loop  # noqa: E402
from sematic_k8s.specs import WORKER_EXIT_INFRASTRUCTURE, WORKER_SAYS, TaskSpec, outcome_key  # noqa: E402
from sematic_k8s.storage.base import artifact_key, put_artifact  # noqa: E402
from sematic_k8s.storage.presigned import PresignedStorage  # noqa: E402
from sematic_k8s.storage.s3 import S3Storage  # noqa: E402
from sematic_k8s.store import sql_store  # noqa: E402

TOO_LARGE = "Your proposed upload exceeds the maximum allowed object size."


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real S3 API on 127.0.0.1 ($AWS_ENDPOINT_URL_S3's, else moto's in-process); retry windows of 2 s, and
    infrastructure retries without a wait (what a refusal was taken for before: an outage)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID", "test"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "test"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("SEMATIC_K8S_RETRY_WINDOW", "2")
    monkeypatch.setattr(loop, "INFRA_RETRY_DELAY", 0.05)
    with s3_endpoint() as url:
        yield url


@pytest.fixture
def front(endpoint: str) -> Iterator[Front]:
    with s3_front(endpoint) as f:
        yield f


def _storage(endpoint: str) -> S3Storage:
    """A new bucket (its name without "_": moto routes no query-signed request for such a bucket)."""
    s3 = S3Storage(f"sk-4xx-{uuid.uuid4().hex[:10]}", "pfx", endpoint_url=endpoint, region="us-east-1")
    s3.client.create_bucket(Bucket=s3.bucket)
    return s3


def _delete_bucket(s3: S3Storage) -> None:
    for item in s3.client.list_objects_v2(Bucket=s3.bucket).get("Contents", []):
        s3.client.delete_object(Bucket=s3.bucket, Key=item["Key"])
    s3.client.delete_bucket(Bucket=s3.bucket)


class PresigningProcessExecutor(ProcessExecutor):
    """Worker processes given presigned URLs, as containers and pods are; ``presigned_then(spec)`` is called with
    each task just presigned, before its worker starts."""

    presigns = True
    presigned_then: Callable[[TaskSpec], None] = staticmethod(lambda spec: None)

    def presigned(self, spec: Any, task: Any) -> Any:
        spec = super().presigned(spec, task)
        self.presigned_then(spec)
        return spec


def _resolver(s3: S3Storage, tmp_path: Any, then: Callable[[TaskSpec], None] | None = None) -> tuple[Any, Any]:
    """(a resolver whose remote funcs run in worker processes given URLs presigned by ``s3``, its store)."""
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    executor = PresigningProcessExecutor(s3, s3.url)
    if then is not None:
        executor.presigned_then = then

    class Resolver(sk.LocalResolver):
        def _parts(self) -> Any:
            return self.store, s3, InlineOrRemoteExecutor(InlineExecutor(1), executor)

    return Resolver(home=tmp_path), store


def test_an_input_deleted_between_presign_and_use_fails_its_run_naming_its_key_as_deleted(endpoint, tmp_path):
    """The artifact a worker reads is deleted (by hand, a lifecycle rule) after its GET was presigned: S3 answers 404
    NoSuchKey, and the run fails at once (one attempt) saying which object was deleted and what repairs it, as a gone
    output is said elsewhere. Was: "is recorded but its bytes are not in storage", naming no object."""
    s3 = _storage(endpoint)

    def delete_inputs(spec: TaskSpec) -> None:
        for artifact_id in spec.input_ids.values():
            s3.client.delete_object(Bucket=s3.bucket, Key=f"pfx/{artifact_key(artifact_id)}")

    resolver, store = _resolver(s3, tmp_path, lambda spec: delete_inputs(spec) if "length" in spec.func_path else None)
    f = measured(10)
    with pytest.raises(ResolutionFailed):
        f.resolve(resolver)
    run = next(r for r in store.runs_of_root(f.id) if r.func_name == "length")
    gone = artifact_key(serialization.serialize(b"z" * 10).id)
    assert run.state == "failed" and run.attempts == 1, run
    assert run.error["type"] == "ArtifactMissing", run.error
    assert (f"is recorded but its bytes are not in storage: {endpoint}/{s3.bucket}/pfx/{gone} was deleted (by hand "
            "or by a lifecycle rule); rerun the run that produced it") in run.error["message"], run.error
    assert "X-Amz" not in run.error["message"]


def test_a_bucket_deleted_between_presign_and_use_is_said_by_the_worker_at_once(endpoint, tmp_path):
    """The bucket is deleted after a worker's URLs were presigned: S3 answers its GET and its PUT 404 NoSuchBucket,
    each refused at once (a retry window of 30 s) naming the object, S3's code and message and what to do. The worker
    (``python -m sematic_k8s.worker``) exits 75 naming its outcome's PUT so refused (its input's GET was, first);
    never a URL's query. Was: its input's GET taken for an artifact gone (ArtifactMissing: "rerun the run that
    produced it"), its outcome's PUT said as an expired URL (the attempt run again)."""
    s3 = _storage(endpoint)
    record = put_artifact(s3, serialization.serialize(b"z" * 10))
    run_id = uuid.uuid4().hex
    spec = TaskSpec(run_id, run_id, length.path, None, {"b": record["id"]}, {"b": record["format"]}, 1,
                    urls={f"GET {artifact_key(record['id'])}": s3.presign("GET", artifact_key(record["id"]), 60),
                          f"PUT {outcome_key(run_id, 1)}": s3.presign("PUT", outcome_key(run_id, 1), 60)})
    _delete_bucket(s3)
    def words(method: str, key: str) -> str:
        return (f"S3 refused the worker's {method} of {endpoint}/{s3.bucket}/pfx/{key} (HTTP 404, NoSuchBucket: The "
                f"specified bucket does not exist), which no retry passes: create bucket {s3.bucket} there, or point "
                "the storage at one that exists")

    worker = PresignedStorage(spec.urls, retry_window=30)
    with pytest.raises(PresignedRequestRefused) as refused:
        worker.get(artifact_key(record["id"]))
    assert str(refused.value) == words("GET", artifact_key(record["id"]))
    with pytest.raises(PresignedRequestRefused) as refused:
        worker.put(outcome_key(run_id, 1), b"{}")
    assert str(refused.value) == words("PUT", outcome_key(run_id, 1))
    handed = tmp_path / "task"
    handed.write_text(spec.to_json())
    env = {**os.environ, "SEMATIC_K8S_TASK_FILE": str(handed), "SEMATIC_K8S_RETRY_WINDOW": "30",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "sematic_k8s.worker"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == WORKER_EXIT_INFRASTRUCTURE, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"{WORKER_SAYS}PresignedRequestRefused: {words('PUT', outcome_key(run_id, 1))}", done.stderr
    assert "X-Amz" not in done.stderr


def test_a_url_whose_query_was_tampered_with_is_refused_as_its_keys_at_once(endpoint):
    """A presigned PUT whose query was changed after signing (a parameter added): S3 answers 403
    SignatureDoesNotMatch, said as the keys S3 refuses (StorageKeysRefused) at once, naming the URL's access key and
    never its query (held before this change too: the 403s of keys were told apart already)."""
    s3 = _storage(endpoint)
    url = s3.presign("PUT", outcome_key("r", 1), 60).replace("type=application%2Foctet-stream", "type=text%2Fplain")
    assert "type=text%2Fplain" in url  # the Content-Type it was signed for, changed
    worker = PresignedStorage({f"PUT {outcome_key('r', 1)}": url}, retry_window=30)
    with pytest.raises(StorageKeysRefused, match=r"HTTP 403, SignatureDoesNotMatch to the PUT of 'outcomes/r/1\.json'"
                       ) as refused:
        worker.put(outcome_key("r", 1), b"{}")
    assert "X-Amz" not in str(refused.value) and "content-type" not in str(refused.value)


REGION = ("Error parsing the X-Amz-Credential parameter; the region 'us-east-1' is wrong; expecting 'eu-west-1'")
SAME_EVERYWHERE = "make the storage's endpoint (and any proxy before it) take presigned GETs and PUTs as S3 does"


@pytest.mark.parametrize(("method", "status", "body", "said", "fix"), [
    ("PUT", 400, s3_error("EntityTooLarge", TOO_LARGE), f"HTTP 400, EntityTooLarge: {TOO_LARGE}",
     "return a smaller value from the func (S3 takes at most 5 GiB in one PUT, a proxy before it may take less), or "
     "raise that proxy's limit"),
    ("PUT", 413, b"<html><body>413 Request Entity Too Large</body></html>", "HTTP 413",
     "return a smaller value from the func (S3 takes at most 5 GiB in one PUT, a proxy before it may take less), or "
     "raise that proxy's limit"),
    ("GET", 400, s3_error("AuthorizationQueryParametersError", REGION),
     f"HTTP 400, AuthorizationQueryParametersError: {REGION}",
     "set the storage's region to the bucket's (region= in the storage URL, or AWS_REGION), which the driver "
     "presigns for"),
    ("GET", 400, s3_error("InvalidArgument", "Invalid Argument"), "HTTP 400, InvalidArgument: Invalid Argument",
     SAME_EVERYWHERE),
    ("PUT", 405, s3_error("MethodNotAllowed", "The specified method is not allowed against this resource."),
     "HTTP 405, MethodNotAllowed: The specified method is not allowed against this resource.", SAME_EVERYWHERE),
    ("PUT", 411, s3_error("MissingContentLength", "You must provide the Content-Length HTTP header."),
     "HTTP 411, MissingContentLength: You must provide the Content-Length HTTP header.", SAME_EVERYWHERE),
], ids=["400-EntityTooLarge", "413", "400-AuthorizationQueryParametersError", "400-InvalidArgument",
        "405-MethodNotAllowed", "411-MissingContentLength"])
def test_a_4xx_no_retry_passes_fails_at_once_naming_the_object_s3s_code_and_what_to_do(
        front, method, status, body, said, fix):
    """S3 (or a proxy before it) answers a worker's presigned request a 4xx that the same request meets each time:
    refused at once (one request, a retry window of 30 s), in one line naming the object, S3's code and message and
    what to do; never the URL's query. Was: a plain StorageError ("the worker's presigned URL expired or was not
    valid"), the attempt run again until its infrastructure retries were spent."""
    s3 = _storage(front.endpoint)
    key = artifact_key("ab" * 32) if method == "GET" else outcome_key("r", 1)
    s3.put(key, b"there") if method == "GET" else None
    front.answers[method] = [(status, body)] * 10  # each time it is asked
    worker = PresignedStorage({f"{method} {key}": s3.presign(method, key, 60)}, retry_window=30)
    with pytest.raises(PresignedRequestRefused) as refused:
        worker.get(key) if method == "GET" else worker.put(key, b"{}")
    assert str(refused.value) == (f"S3 refused the worker's {method} of {front.endpoint}/{s3.bucket}/pfx/{key} "
                                  f"({said}), which no retry passes: {fix}")
    assert front.refused == [f"{method} /{s3.bucket}/pfx/{key}"]  # once: not retried


@pytest.mark.parametrize(("method", "status", "body"), [
    ("PUT", 400, s3_error("EntityTooLarge", TOO_LARGE)),
    ("GET", 400, s3_error("InvalidArgument", "Invalid Argument")),
], ids=["outcome-put", "input-get"])
def test_a_refusal_no_retry_passes_ends_the_resolution_at_once_in_its_words(front, tmp_path, method, status, body):
    """A worker's outcome PUT (it exits 75 naming the refusal) or input GET (its outcome then carries it) refused
    with a 4xx no retry passes: the resolution ends at once, as on a full disk (its run canceled, its error kept),
    saying what S3 answered, what to do, then to continue it. Was: StorageUnreachable ("could not reach artifact
    storage"), the attempt run 4 times, then the run failed with no fix said."""
    s3 = _storage(front.endpoint)
    front.answers[method] = [(status, body)] * 10  # each time it is asked
    resolver, store = _resolver(s3, tmp_path)
    f = big(10)
    with pytest.raises(PresignedRequestRefused) as ended:
        f.resolve(resolver)
    words = str(ended.value)
    assert words.startswith(f"S3 refused the worker's {method} of {front.endpoint}/{s3.bucket}/pfx/"), words
    assert f"which no retry passes: {'return a smaller value' if method == 'PUT' else 'make the storage'}" in words
    assert f", then continue the resolution: rerun_from={f.id!r}" in words, words
    assert len(front.refused) == 1, front.refused  # one attempt
    (run,) = store.runs_of_root(f.id)
    assert run.state == "canceled" and run.attempts == 1, run
    assert run.error["type"] == "PresignedRequestRefused" and "X-Amz" not in run.error["message"], run.error


@pytest.mark.parametrize("body", [
    s3_error("RequestTimeout", "Your socket connection to the server was not read from or written to within the "
             "timeout period. Idle connections will be closed."),
    s3_error("SlowDown", "Please reduce your request rate."),
], ids=["400-RequestTimeout", "503-SlowDown"])
def test_a_transient_answer_is_retried_within_the_window_and_the_attempt_passes(front, tmp_path, body):
    """S3 answers a worker's outcome PUT 400 RequestTimeout (a 4xx S3 says to retry) twice, or 503 SlowDown: the
    worker retries it within its retry window, and its one attempt resolves. Was (RequestTimeout): a plain
    StorageError at once, the attempt run again."""
    s3 = _storage(front.endpoint)
    status = 400 if b"RequestTimeout" in body else 503
    front.answers["PUT"] = [(status, body), (status, body)]
    resolver, store = _resolver(s3, tmp_path)
    f = big(10)
    assert f.resolve(resolver) == b"z" * 10
    (run,) = store.runs_of_root(f.id)
    assert run.state == "resolved" and run.attempts == 1, run
    assert len(front.refused) == 2, front.refused


def test_a_request_timeout_past_the_window_is_storage_out_of_reach_not_a_refusal(front):
    """400 RequestTimeout every time, past a retry window of 1 s: storage out of reach (a plain StorageError: the
    attempt is run again), not a refusal."""
    s3 = _storage(front.endpoint)
    body = s3_error("RequestTimeout", "Your socket connection to the server was not read from or written to.")
    front.answers["PUT"] = [(400, body)] * 1000
    worker = PresignedStorage({"PUT k": s3.presign("PUT", "k", 60)}, retry_window=1)
    with pytest.raises(StorageError, match="cannot reach storage to PUT 'k'") as failed:
        worker.put("k", b"{}")
    assert not isinstance(failed.value, PresignedRequestRefused) and len(front.refused) > 1


TOKEN_EXPIRED = s3_error("ExpiredToken", "The provided token has expired.")


@pytest.mark.parametrize(("status", "body", "attempts"), [
    (400, TOKEN_EXPIRED, 2),
    (400, b"<html><head><title>400 Bad Request</title></head><body>400 Bad Request</body></html>", 2),
    (400, b"", 2),
    (408, b"", 1),
    (409, s3_error("OperationAborted", "A conflicting conditional operation is currently in progress against this "
                   "resource. Try again."), 1),
], ids=["400-ExpiredToken", "400-proxy-html", "400-no-body", "408", "409-OperationAborted"])
def test_an_expiry_a_4xx_not_in_s3s_words_or_one_s3_says_to_retry_does_not_end_the_resolution(
        front, tmp_path, status, body, attempts):
    """S3 answers a presigned URL signed with temporary credentials that ran out (IRSA's, an instance role's) 400
    ExpiredToken: the attempt is run again with URLs presigned afresh, as on its 403 expiry. A proxy's 400 (an HTML
    page, no body) says nothing of S3's: the attempt is run again, as before. 408 (a proxy's request timeout) and 409
    OperationAborted ("try again") are retried within the window, the one attempt passing. Was: each refused for good
    (PresignedRequestRefused), the resolution ended at once with a fix that is not the cause."""
    s3 = _storage(front.endpoint)
    front.answers["PUT"] = [(status, body)]  # the first outcome PUT only
    resolver, store = _resolver(s3, tmp_path)
    f = big(10)
    assert f.resolve(resolver) == b"z" * 10
    (run,) = store.runs_of_root(f.id)
    assert run.state == "resolved" and run.attempts == attempts, run
    assert len(front.refused) == 1, front.refused
