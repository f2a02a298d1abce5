"""Presigned URLs S3 refuses (403) while the driver's own requests pass: a worker process given them (as containers
and pods are), in front of a real S3 API (moto) behind a real HTTP front that answers S3's 403 to every
query-signed request, as S3 does to URLs signed with keys rotated away or revoked since, or under a bucket policy
denying presigned requests (``s3:authType`` REST-QUERY-STRING), while header-signed ones (the driver's) pass."""

from __future__ import annotations

import http.client
import http.server
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from s3_front import relay
from s3server import s3_endpoint

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

import sematic_k8s as sk  # noqa: E402
from presigned_pipeline import big, fails_once  # noqa: E402
from sematic_k8s.errors import StorageKeysRefused  # noqa: E402
from sematic_k8s.executors.inline import InlineExecutor  # noqa: E402
from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor  # noqa: E402
from sematic_k8s.executors.process import ProcessExecutor  # noqa: E402
from sematic_k8s.resolvers import loop  # noqa: E402
from sematic_k8s.storage.s3 import S3Storage  # noqa: E402
from sematic_k8s.store import sql_store  # noqa: E402

REFUSAL = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key "
           b"Id you provided does not exist in our records.</Message></Error>")


EXPIRED = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>Request has expired"
           b"</Message><Expires>2026-01-01T00:00:00Z</Expires></Error>")
TOKEN_EXPIRED = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code><Message>The provided token "
                 b"has expired.</Message></Error>")


@pytest.fixture
def script() -> dict[int, bytes | None]:
    """attempt number -> the 403 body the front answers that attempt's presigned requests (None: it forwards
    them); empty: every one is answered REFUSAL."""
    return {}


@pytest.fixture
def refusing_front(monkeypatch: pytest.MonkeyPatch, script: dict[int, bytes | None]) -> Iterator[tuple[str, list[str]]]:
    """(endpoint, the keys of the requests it refused): an HTTP front on S3 (moto) answering 403
    InvalidAccessKeyId to query-signed requests (signed with the access key "test", the one rotated away),
    forwarding the others; with a ``script``, by attempt (one more than the outcome PUTs it was sent: an attempt's
    GETs come before its outcome's PUT)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    refused: list[str] = []
    outcomes: list[str] = []
    with s3_endpoint() as s3:
        backend = urlsplit(s3).netloc

        class Front(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                presigned = "X-Amz-Credential=test" in self.path or "AWSAccessKeyId=test&" in self.path
                answer = script.get(len(outcomes) + 1) if script else REFUSAL
                if presigned and self.command == "PUT" and "/outcomes/" in self.path:
                    outcomes.append(self.path.split("?")[0])
                scripted = None
                if presigned and answer is not None:
                    refused.append(self.path.split("?")[0])
                    scripted = (403, answer)
                relay(self, backend, scripted)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _any  # noqa: N815 - http.server's names

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Front)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}", refused
        finally:
            server.shutdown()
            server.server_close()


class PresigningProcessExecutor(ProcessExecutor):
    """Worker processes given presigned URLs, as containers and pods are."""

    presigns = True


def _resolver(endpoint: str, tmp_path: Any) -> tuple[Any, Any]:
    """(a resolver whose remote funcs run in worker processes given URLs presigned through ``endpoint``, its
    store). The bucket's name has no "_" (moto routes no query-signed request for such a bucket)."""
    s3 = S3Storage(f"sk-refused-{uuid.uuid4().hex[:8]}", "pfx", endpoint_url=endpoint, region="us-east-1")
    s3.client.create_bucket(Bucket=s3.bucket)
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")

    class Resolver(sk.LocalResolver):
        def _parts(self) -> Any:
            return self.store, s3, InlineOrRemoteExecutor(InlineExecutor(1), PresigningProcessExecutor(s3, s3.url))

    return Resolver(home=tmp_path), store


def test_presigned_urls_s3_refuses_are_presigned_once_more_then_said_as_such(
        refusing_front: tuple[str, list[str]], tmp_path: Any) -> None:
    """S3 answers a worker's presigned GET 403 InvalidAccessKeyId (its keys rotated away or revoked) while the
    driver's own requests pass. The attempt is run once more with URLs presigned afresh, and, refused again, the
    resolution ends at once saying S3 refused the URLs presigned with that access key, that the keys were rotated
    or revoked, and to give the driver current keys. Was: the worker exited 75, recorded as StorageUnreachable
    ("could not reach artifact storage"), and the attempt ran again with URLs signed by the same keys until its 3
    infrastructure retries were spent (4 attempts; in a cluster a pod start each)."""
    endpoint, refused = refusing_front
    resolver, store = _resolver(endpoint, tmp_path)
    f = big(10)
    with pytest.raises(StorageKeysRefused) as ended:
        f.resolve(resolver)
    words = str(ended.value)
    assert words.startswith("S3 refused the URLs presigned with the storage keys of access key test (its driver's) "
                            "(HTTP 403, InvalidAccessKeyId to the PUT of 'outcomes/"), words
    assert ("): the keys were rotated or revoked: give the driver current keys (the storage Secret), then continue "
            f"the resolution: rerun_from={f.id!r}") in words, words
    # two attempts, each refused its input's GET then its outcome's PUT: the first's, then one with URLs presigned
    # afresh; no more
    assert [p.rsplit("/", 1)[1] for p in refused if "/outcomes/" in p] == ["1.json", "2.json"], refused
    (run,) = store.runs_of_root(f.id)
    assert run.state == "canceled" and run.error["type"] == "StorageKeysRefused", run.error  # as a full disk ends it
    assert "the keys were rotated or revoked" in run.error["message"]


def test_urls_refused_are_presigned_once_more_with_the_drivers_current_keys_and_the_run_resolves(
        refusing_front: tuple[str, list[str]], tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver got current keys after it presigned the first attempt's URLs with the old ones (refreshed
    credentials, a restarted driver): the once-more attempt's URLs, presigned with them, pass, and the run
    resolves (held before the change too, as a retry: this keeps the once-more attempt presigning afresh)."""
    endpoint, refused = refusing_front
    s3 = S3Storage(f"sk-refused-{tmp_path.name[-8:].lower()}", "pfx", endpoint_url=endpoint, region="us-east-1")
    s3.client.create_bucket(Bucket=s3.bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "current")
    current = S3Storage(s3.bucket, "pfx", endpoint_url=endpoint, region="us-east-1").client
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")

    class Rotated(PresigningProcessExecutor):
        def presigned(self, spec: Any, task: Any) -> Any:
            spec = super().presigned(spec, task)
            s3.client = current  # the driver's keys are current ones from now on: the URLs just made are not
            return spec

    class Resolver(sk.LocalResolver):
        def _parts(self) -> Any:
            return self.store, s3, InlineOrRemoteExecutor(InlineExecutor(1), Rotated(s3, s3.url))

    f = big(10)
    assert f.resolve(Resolver(home=tmp_path)) == b"z" * 10
    assert [p.rsplit("/", 1)[1] for p in refused if "/outcomes/" in p] == ["1.json"], refused
    (run,) = store.runs_of_root(f.id)
    assert run.state == "resolved" and run.attempts == 2, run


@pytest.mark.parametrize("script", [{1: EXPIRED, 2: EXPIRED}, {1: TOKEN_EXPIRED, 2: TOKEN_EXPIRED}],
                         ids=["request-has-expired", "expired-token"])
def test_expired_urls_are_run_again_with_fresh_ones_not_said_as_keys_rotated(
        refusing_front: tuple[str, list[str]], tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 answers a worker's presigned URLs 403 for an expiry (AccessDenied "Request has expired": a pod that
    waited longer than its URLs' life; ExpiredToken: the STS credentials they were signed with ran out) on two
    attempts running: each is a storage error the attempt is run again for, with URLs presigned afresh, and the
    third attempt's pass. Was: StorageKeysRefused, the resolution ended on the second saying the keys were rotated
    or revoked."""
    monkeypatch.setattr(loop, "INFRA_RETRY_DELAY", 0.05)
    endpoint, refused = refusing_front
    resolver, store = _resolver(endpoint, tmp_path)
    f = big(10)
    assert f.resolve(resolver) == b"z" * 10
    assert [p.rsplit("/", 1)[1] for p in refused if "/outcomes/" in p] == ["1.json", "2.json"], refused
    (run,) = store.runs_of_root(f.id)
    assert run.state == "resolved" and run.attempts == 3, run


@pytest.mark.parametrize("script", [{1: EXPIRED, 2: EXPIRED, 3: EXPIRED, 4: REFUSAL}])
def test_refused_keys_are_presigned_once_more_with_the_infrastructure_retries_spent(
        refusing_front: tuple[str, list[str]], tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three expired attempts spend the run's 3 infrastructure retries; the fourth's URLs are refused
    (InvalidAccessKeyId): it is still run once more with URLs presigned afresh, and passes. Was: the refusal with
    no infrastructure retry left failed the run."""
    monkeypatch.setattr(loop, "INFRA_RETRY_DELAY", 0.05)
    endpoint, refused = refusing_front
    resolver, store = _resolver(endpoint, tmp_path)
    f = big(10)
    assert f.resolve(resolver) == b"z" * 10
    (run,) = store.runs_of_root(f.id)
    assert run.state == "resolved" and run.attempts == 5, run


@pytest.mark.parametrize("script", [{1: REFUSAL, 2: None, 3: REFUSAL}])
def test_a_refusal_after_an_attempt_whose_urls_passed_is_run_once_more_too(
        refusing_front: tuple[str, list[str]], tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attempt 1's URLs are refused (InvalidAccessKeyId); attempt 2's pass, its func raises and is retried
    (retries=1); attempt 3's are refused again (the keys rotated once more): a refusal after URLs that passed is
    a first one, run once more, and attempt 4 resolves. Was: the run's first refusal was kept for good, and the
    resolution ended on attempt 3's."""
    monkeypatch.setattr(loop, "INFRA_RETRY_DELAY", 0.05)
    endpoint, refused = refusing_front
    resolver, store = _resolver(endpoint, tmp_path)
    f = fails_once(str(tmp_path / "marker"))
    assert f.resolve(resolver) == "passed"
    assert [p.rsplit("/", 1)[1] for p in refused if "/outcomes/" in p] == ["1.json", "3.json"], refused
    (run,) = store.runs_of_root(f.id)
    assert run.state == "resolved" and run.attempts == 4, run
