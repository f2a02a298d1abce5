"""Presigned URLs S3 refuses (403) while the driver's own requests pass: a worker process given them (as containers
and pods are), in front of a real S3 API (moto) behind a real HTTP front that answers S3's 403 to every
query-signed request, as S3 does to URLs signed with keys rotated away or revoked since, or under a bucket policy
denying presigned requests (``s3:authType`` REST-QUERY-STRING), while header-signed ones (the driver's) pass."""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from s3server import s3_endpoint

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

import sematic_k8s as sk  # noqa: E402
from presigned_pipeline import big  # noqa: E402
from sematic_k8s.errors import StorageKeysRefused  # noqa: E402
from sematic_k8s.executors.inline import InlineExecutor  # noqa: E402
from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor  # noqa: E402
from sematic_k8s.executors.process import ProcessExecutor  # noqa: E402
from sematic_k8s.storage.s3 import S3Storage  # noqa: E402
from sematic_k8s.store import sql_store  # noqa: E402

REFUSAL = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key "
           b"Id you provided does not exist in our records.</Message></Error>")


@pytest.fixture
def refusing_front(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """(endpoint, the keys of the requests it refused): an HTTP front on S3 (moto) answering 403
    InvalidAccessKeyId to query-signed requests (signed with the access key "test", the one rotated away),
    forwarding the others."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    refused: list[str] = []
    with s3_endpoint() as s3:
        backend = urlsplit(s3).netloc

        class Front(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "X-Amz-Credential=test" in self.path or "AWSAccessKeyId=test&" in self.path:
                    refused.append(self.path.split("?")[0])
                    status, headers, payload = 403, [("Content-Type", "application/xml")], REFUSAL
                else:
                    conn = http.client.HTTPConnection(backend, timeout=60)
                    conn.request(self.command, self.path, body=body or None,
                                 headers={k: v for k, v in self.headers.items() if k.lower() != "connection"})
                    resp = conn.getresponse()
                    status, payload = resp.status, resp.read()
                    headers = [(k, v) for k, v in resp.getheaders()
                               if k.lower() not in ("content-length", "connection", "transfer-encoding")]
                    conn.close()
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

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


def test_presigned_urls_s3_refuses_are_presigned_once_more_then_said_as_such(
        refusing_front: tuple[str, list[str]], tmp_path: Any) -> None:
    """S3 answers a worker's presigned GET 403 InvalidAccessKeyId (its keys rotated away or revoked) while the
    driver's own requests pass. The attempt is run once more with URLs presigned afresh, and, refused again, the
    resolution ends at once saying S3 refused the URLs presigned with that access key, that the keys were rotated
    or revoked, and to give the driver current keys. Was: the worker exited 75, recorded as StorageUnreachable
    ("could not reach artifact storage"), and the attempt ran again with URLs signed by the same keys until its 3
    infrastructure retries were spent (4 attempts; in a cluster a pod start each)."""
    endpoint, refused = refusing_front
    s3 = S3Storage(f"sk-refused-{tmp_path.name[-8:].lower()}", "pfx", endpoint_url=endpoint, region="us-east-1")
    s3.client.create_bucket(Bucket=s3.bucket)
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")

    class Resolver(sk.LocalResolver):
        def _parts(self) -> Any:
            return self.store, s3, InlineOrRemoteExecutor(InlineExecutor(1), PresigningProcessExecutor(s3, s3.url))

    f = big(10)
    with pytest.raises(StorageKeysRefused) as ended:
        f.resolve(Resolver(home=tmp_path))
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
