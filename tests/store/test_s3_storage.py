"""S3 artifact storage against a real S3 API server (moto's server in-process, or $AWS_ENDPOINT_URL_S3)."""

from __future__ import annotations

import collections
import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from s3server import s3_endpoint

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

import sematic_k8s as sk  # noqa: E402
from sematic_k8s.executors.inline import InlineExecutor  # noqa: E402
from sematic_k8s.storage.base import Part, append_id, artifact_key, delete, keys, log_key, read_part  # noqa: E402
from sematic_k8s.storage.local import LocalStorage  # noqa: E402
from sematic_k8s.storage.s3 import MiB, S3CredentialsError, S3Storage, S3StorageError  # noqa: E402
from sematic_k8s.storage.urls import storage_from_url, storage_url  # noqa: E402
from sematic_k8s.store import sql_store  # noqa: E402

SMALL_THRESHOLD = 5 * MiB + 1  # S3's minimum part size is 5 MiB


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A real S3 API on 127.0.0.1: an already-running server at $AWS_ENDPOINT_URL_S3, else moto's, in-process."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "SEMATIC_K8S_S3_ENDPOINT", "AWS_ENDPOINT_URL",
                     "SEMATIC_K8S_S3_BUCKET", "SEMATIC_K8S_S3_PREFIX", "SEMATIC_K8S_S3_REGION"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID", "test"))
        mp.setenv("AWS_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "test"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        with s3_endpoint() as url:
            yield url


@pytest.fixture(scope="module")
def client(endpoint: str) -> Any:
    """A plain boto3 client, to look at the bucket behind the storage's back."""
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


@pytest.fixture
def bucket(client: Any) -> str:
    """A fresh bucket per test, so tests never see each other's objects (even on a shared server)."""
    name = f"sk-test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def storage(endpoint: str, bucket: str) -> S3Storage:
    return S3Storage(bucket, "pfx", endpoint_url=endpoint)


def akey(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return artifact_key(digest)


# -- the Storage protocol -------------------------------------------------------------------------


def test_put_get_exists(storage: S3Storage, client: Any, bucket: str) -> None:
    key = akey(b"hello")
    assert not storage.exists(key)
    storage.put(key, b"hello")
    assert storage.exists(key) and storage.get(key) == b"hello"
    head = client.head_object(Bucket=bucket, Key=f"pfx/{key}")
    assert head["Metadata"] == {"sha256": hashlib.sha256(b"hello").hexdigest()}
    assert "-" not in head["ETag"]  # a single PUT below the threshold
    storage.put("empty", b"")
    assert storage.get("empty") == b""


def test_put_is_idempotent_and_never_overwrites(storage: S3Storage, client: Any, bucket: str) -> None:
    key = akey(b"first")
    storage.put(key, b"first")
    etag = client.head_object(Bucket=bucket, Key=f"pfx/{key}")["ETag"]
    storage.put(key, b"second")  # content-addressed: an existing key is skipped
    assert storage.get(key) == b"first"
    assert client.head_object(Bucket=bucket, Key=f"pfx/{key}")["ETag"] == etag


def test_delete_removes_an_object_and_a_missing_one_is_fine(storage: S3Storage, client: Any, bucket: str,
                                                             tmp_path) -> None:
    """S3 and a local directory delete (the stored copies of workers' tasks); a storage without delete is told."""
    from sematic_k8s.storage.presigned import PresignedStorage

    for s in (storage, LocalStorage(tmp_path)):
        s.put("tasks/r/1/a.json", b"{}")
        assert s.exists("tasks/r/1/a.json")
        assert delete(s, "tasks/r/1/a.json") and not s.exists("tasks/r/1/a.json")
        assert delete(s, "tasks/r/1/a.json")  # gone already
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix="pfx/tasks/")
    assert not (tmp_path / "tasks" / "r" / "1" / "a.json").exists()
    assert not delete(PresignedStorage({}), "tasks/r/1/a.json")


def test_keys_lists_a_folder_at_any_depth_past_one_page(storage: S3Storage, client: Any, bucket: str,
                                                        tmp_path) -> None:
    """S3 and a local directory list the keys under a folder (the stored copies of a resolution's tasks, found by its
    next driver), every page of them, and nothing beside it; a storage that cannot list says None."""
    from sematic_k8s.storage.presigned import PresignedStorage

    wanted = sorted(f"tasks/r/run{i:04d}/1/{i}.json" for i in range(1005))  # S3 pages hold 1,000 keys
    for s in (storage, LocalStorage(tmp_path)):
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(s.put, [*wanted, "tasks/r2/x/1/a.json", "tasks/rx.json"], [b"{}"] * (len(wanted) + 2)))
        assert sorted(keys(s, "tasks/r/") or []) == wanted
        assert keys(s, "tasks/none/") == []
    assert keys(PresignedStorage({}), "tasks/r/") is None


def test_missing_key_is_a_key_error(storage: S3Storage) -> None:
    with pytest.raises(KeyError):
        storage.get(akey(b"nothing"))
    assert not storage.exists("logs/none.log")


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../x", "a//b", "./a"])
def test_keys_must_be_plain_relative_paths(storage: S3Storage, key: str) -> None:
    with pytest.raises(ValueError, match="not a plain relative path"):
        storage.put(key, b"x")


def test_large_values_are_uploaded_in_parts(endpoint: str, bucket: str, client: Any) -> None:
    s = S3Storage(bucket, endpoint_url=endpoint, multipart_threshold=SMALL_THRESHOLD)
    data = hashlib.sha256(b"seed").digest() * (12 * MiB // 32)
    key = akey(data)
    s.put(key, data)
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3")  # 5 MiB+1, 5 MiB+1, the rest
    assert head["ContentLength"] == 12 * MiB
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert s.get(key) == data
    exact = data[:SMALL_THRESHOLD]  # at the threshold: one PUT
    s.put(akey(exact), exact)
    assert "-" not in client.head_object(Bucket=bucket, Key=akey(exact))["ETag"]


def test_get_detects_bytes_changed_behind_its_back(storage: S3Storage, client: Any, bucket: str) -> None:
    key = akey(b"the real value")
    storage.put(key, b"the real value")
    meta = client.head_object(Bucket=bucket, Key=f"pfx/{key}")["Metadata"]
    client.put_object(Bucket=bucket, Key=f"pfx/{key}", Body=b"something else", Metadata=meta)
    with pytest.raises(ValueError, match=f"storage key '{key}' is corrupt"):
        storage.get(key)


def test_append_creates_and_extends(storage: S3Storage, client: Any, bucket: str) -> None:
    key = log_key("run1")
    storage.append(key, b"line 1\n")
    storage.append(key, b"line 2\n")
    assert storage.get(key) == b"line 1\nline 2\n"
    assert client.head_object(Bucket=bucket, Key="pfx/logs/run1.log")["Metadata"]["sha256"] == \
        hashlib.sha256(b"line 1\nline 2\n").hexdigest()


def test_append_from_many_threads_of_one_writer(storage: S3Storage) -> None:
    key = log_key("threads")
    threads = [threading.Thread(target=storage.append, args=(key, f"{i}\n".encode())) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(storage.get(key).decode().split()) == sorted(str(i) for i in range(12))


@pytest.mark.parametrize("conditional", [True, False], ids=["conditional-writes", "no-conditional-writes"])
def test_an_append_with_an_id_made_again_by_another_writer_is_skipped(endpoint: str, bucket: str, client: Any,
                                                                      conditional: bool) -> None:
    """The same append (one id: see ``append_id``) made again by another writer, as a restarted driver's would be:
    added once, the object's bytes plain text; a malformed id is refused in words."""
    first, again = (S3Storage(bucket, "pfx", endpoint_url=endpoint) for _ in range(2))
    again._conditional_writes = conditional  # as found out on an S3 API without them (501 NotImplemented)
    key, mine = log_key("run1"), append_id("attempt logs", "run1", 1)
    first.append(key, b"line 1\n", append_id=mine)
    again.append(key, b"line 1\n", append_id=mine)
    again.append(key, b"line 2\n")
    again.append(key, b"line 1 said otherwise\n", append_id=mine)  # an id stands for the append, whatever it says
    assert first.get(key) == b"line 1\nline 2\n"
    assert client.head_object(Bucket=bucket, Key=f"pfx/{key}")["Metadata"]["appends"].startswith(mine + ",")
    with pytest.raises(ValueError, match="append id 'run1-1' is not 12 lowercase hex digits"):
        first.append(key, b"x", append_id="run1-1")


class Interleaved(S3Storage):
    """Lets another writer append once between this storage's look at the object and its write: before its
    first conditional create of a new log (``hook="create"``), or right after its first read (``"read"``)."""

    other: S3Storage
    hook = "read"
    reads = 0
    interleaved = False

    def _interleave(self, key: str, at: str) -> None:
        if at == self.hook and not self.interleaved:
            self.interleaved = True
            self.other.append(key, b"other\n")

    def _put_if_absent(self, key: str, full: str, data: bytes, meta: dict[str, str],
                       op: str = "put") -> bool | None:
        if op == "append":
            self._interleave(key, "create")
        return super()._put_if_absent(key, full, data, meta, op)

    def _read(self, key: str, full: str) -> tuple[bytes | None, str | None, dict[str, str]]:
        result = super()._read(key, full)
        self.reads += 1
        self._interleave(key, "read")
        return result


@pytest.mark.parametrize("existing", [False, True])
def test_append_retries_when_another_writer_got_in_between(endpoint: str, bucket: str, existing: bool) -> None:
    s = Interleaved(bucket, endpoint_url=endpoint)
    s.hook = "read" if existing else "create"
    s.other = S3Storage(bucket, endpoint_url=endpoint)
    if existing:
        s.other.append("logs/x.log", b"start\n")
    s.append("logs/x.log", b"mine\n")
    assert s.interleaved
    # a new log: the conditional create failed, and the append read what the other wrote; an existing one:
    # the conditional write failed once, and was retried on fresh bytes
    assert s.reads == (2 if existing else 1)
    assert s.get("logs/x.log") == (b"start\n" if existing else b"") + b"other\nmine\n"


def test_prefixes_isolate_storages_in_one_bucket(endpoint: str, bucket: str, client: Any) -> None:
    a, b = S3Storage(bucket, "team-a/", endpoint_url=endpoint), S3Storage(bucket, "/team-b", endpoint_url=endpoint)
    a.put("artifacts/x", b"from a")
    b.put("artifacts/x", b"from b")
    a.append("logs/r.log", b"a")
    assert a.get("artifacts/x") == b"from a" and b.get("artifacts/x") == b"from b"
    assert not b.exists("logs/r.log")
    with pytest.raises(KeyError):
        b.get("logs/r.log")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["team-a/artifacts/x", "team-a/logs/r.log", "team-b/artifacts/x"]


# -- errors --------------------------------------------------------------------------------------


def test_missing_bucket_is_a_clear_error(endpoint: str) -> None:
    """A refusal, not an outage: its advice is its fix (was: "continue the resolution once it is back")."""
    s = S3Storage("no-such-bucket-sk", endpoint_url=endpoint)
    for op in (lambda: s.get("k"), lambda: s.exists("k"), lambda: s.put("k", b"x"), lambda: s.append("k", b"x")):
        with pytest.raises(S3StorageError, match=f"S3 bucket 'no-such-bucket-sk' does not exist at {endpoint}") as e:
            op()
        assert e.value.advice("r1").startswith("create bucket no-such-bucket-sk there, or point the storage at one "
                                               "that exists, then continue the resolution: rerun_from='r1'"), e.value


def test_missing_credentials_are_a_clear_error(endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Any) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    s = S3Storage(bucket, endpoint_url=endpoint)
    with pytest.raises(S3CredentialsError, match=f"no usable AWS credentials .* s3://{bucket}/k at {endpoint}.*"
                                                 "AWS_ACCESS_KEY_ID"):
        s.get("k")


def test_refused_credentials_are_a_clear_error(storage: S3Storage, bucket: str) -> None:
    refused = ClientError({"Error": {"Code": "InvalidAccessKeyId", "Message": "The key does not exist."}}, "GetObject")
    err = storage._error("get", "artifacts/x", refused)
    assert isinstance(err, S3CredentialsError)
    assert str(err).startswith(f"S3 refused to get s3://{bucket}/pfx/artifacts/x at {storage.where}: "
                               "InvalidAccessKeyId (S3 does not know this access key: rotated, deactivated or deleted; "
                               "S3 says: The key does not exist.): set AWS_ACCESS_KEY_ID")


def test_constructor_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="bucket name"):
        S3Storage("bucket/with/path", endpoint_url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="multipart_threshold"):
        S3Storage("b", endpoint_url="http://127.0.0.1:1", multipart_threshold=0)


# -- configuration ---------------------------------------------------------------------------------


def test_from_env(endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="SEMATIC_K8S_S3_BUCKET"):
        S3Storage.from_env()
    monkeypatch.setenv("SEMATIC_K8S_S3_BUCKET", bucket)
    monkeypatch.setenv("SEMATIC_K8S_S3_PREFIX", "envp")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    s = S3Storage.from_env()
    assert (s.bucket, s.prefix, s.endpoint_url) == (bucket, "envp", endpoint)
    assert s.client.meta.config.s3["addressing_style"] == "path"
    s.put("k", b"v")
    assert S3Storage(bucket, "envp").get("k") == b"v"  # endpoint from the env in the constructor too
    monkeypatch.setenv("SEMATIC_K8S_S3_ENDPOINT", "http://127.0.0.1:1")  # ours wins over AWS's
    assert S3Storage(bucket).endpoint_url == "http://127.0.0.1:1"


def test_without_endpoint_it_talks_to_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    s = S3Storage("some-bucket")  # no request is made until the first operation
    assert s.endpoint_url is None and "amazonaws.com" in s.where
    assert s.client.meta.config.s3["addressing_style"] == "auto"


def test_urls_round_trip(endpoint: str, bucket: str, tmp_path: Any) -> None:
    s = S3Storage(bucket, "a/b", endpoint_url=endpoint)
    s.put("k", b"v")
    again = S3Storage.from_url(s.url)
    assert (again.bucket, again.prefix, again.endpoint_url) == (bucket, "a/b", endpoint)
    assert again.get("k") == b"v"
    assert storage_url(s) == s.url
    via = storage_from_url(f"s3://{bucket}/a/b")
    assert isinstance(via, S3Storage) and (via.bucket, via.prefix) == (bucket, "a/b")
    local = storage_from_url((tmp_path / "st").as_uri())
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "st"
    with pytest.raises(ValueError, match="not an S3 storage URL"):
        S3Storage.from_url("file:///x")


# -- end to end: the resolution loop with S3 artifacts -----------------------------------------------

CALLS: collections.Counter[str] = collections.Counter()
FLAGS: dict[str, int] = {}


@sk.func
def s3_step(name: str, upstream: int) -> int:
    CALLS[name] += 1
    print(f"step {name} got {upstream}")
    return upstream + FLAGS.get(name, 1)


@sk.func
def s3_blob(n: int) -> bytes:
    CALLS["blob"] += 1
    return hashlib.sha256(b"blob").digest() * (n // 32)


@sk.func
def s3_size(blob: bytes, plus: int) -> int:
    CALLS["size"] += 1
    return len(blob) + plus


@sk.func
def s3_pipeline() -> int:
    a = s3_step("a", 0)
    b = s3_step("b", a)
    c = s3_step("c", b)
    return s3_size(s3_blob(6 * MiB), c)


class RecordingS3Storage(S3Storage):
    """Real S3 storage that remembers which keys were read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[str] = []

    def get(self, key: str) -> bytes:
        self.reads.append(key)
        return super().get(key)


class S3Resolver(sk.LocalResolver):
    """LocalResolver wired to S3 artifact storage: SQLite + S3 + in-process execution, every artifact in the
    bucket (none kept inline with its record), as a cloud resolution stores them."""

    inline_limit = 0

    def __init__(self, s3: S3Storage, **settings: Any) -> None:
        super().__init__(**settings)
        self.s3 = s3

    @property
    def storage(self) -> S3Storage:  # type: ignore[override]
        return self.s3

    def _parts(self) -> tuple[Any, S3Storage, InlineExecutor]:  # type: ignore[override]
        return self.store, self.s3, InlineExecutor(self.max_parallelism)


def test_pipeline_end_to_end_with_s3_artifacts(endpoint: str, bucket: str, client: Any, tmp_path: Any) -> None:
    CALLS.clear()
    FLAGS.clear()
    s3 = RecordingS3Storage(bucket, "runs", endpoint_url=endpoint, multipart_threshold=SMALL_THRESHOLD)
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    first = s3_pipeline()
    assert first.resolve(S3Resolver(s3, home=tmp_path)) == 6 * MiB + 3
    assert CALLS == {"a": 1, "b": 1, "c": 1, "blob": 1, "size": 1}
    assert not list((tmp_path).rglob("artifacts"))  # nothing went to local storage

    runs = store.runs_of_root(first.id)
    assert len(runs) == 6 and all(r.state == "resolved" for r in runs)
    in_bucket = {o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                 for o in page.get("Contents", [])}
    for r in runs:
        assert f"runs/{artifact_key(r.output_id)}" in in_bucket
        for artifact_id in r.inputs.values():
            assert f"runs/{artifact_key(artifact_id)}" in in_bucket
    steps = {store.get_artifact(r.inputs["name"]).summary: r for r in runs if r.func_name == "s3_step"}
    assert steps.keys() == {"a", "b", "c"}
    assert b"step b got 1" in s3.get(log_key(steps["b"].id))
    blob_run = next(r for r in runs if r.func_name == "s3_blob")
    head = client.head_object(Bucket=bucket, Key=f"runs/{artifact_key(blob_run.output_id)}")
    assert head["ContentLength"] > SMALL_THRESHOLD and "-" in head["ETag"]  # multipart, through the loop

    # rerun from b with a patched b: a is reused and b's input is loaded back from S3
    CALLS.clear()
    FLAGS["b"] = 10
    s3.reads.clear()
    again = s3_pipeline()
    assert again.resolve(S3Resolver(s3, home=tmp_path, rerun_from=steps["b"].id)) == 6 * MiB + 12
    assert CALLS == {"b": 1, "c": 1, "size": 1}
    assert artifact_key(steps["a"].output_id) in s3.reads  # b's input, from the bucket
    assert artifact_key(blob_run.output_id) in s3.reads  # the reused 6 MiB blob, for size
    new_steps = {store.get_artifact(r.inputs["name"]).summary: r for r in store.runs_of_root(again.id)
                 if r.func_name == "s3_step"}
    assert new_steps["a"].output_id == steps["a"].output_id
    assert b"step b got 1" in s3.get(log_key(new_steps["b"].id))


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_a_part_of_an_object_is_read_alone(kind: str, storage: S3Storage, client: Any, bucket: str,
                                            tmp_path: Any) -> None:
    """read_part: from an offset, from the end, at or past the end, the whole (checked); S3 asks for a range and
    gets those bytes alone."""
    store: Any = storage if kind == "s3" else LocalStorage(tmp_path)
    data = bytes(range(256)) * 400  # 102,400 bytes
    store.append(log_key("big"), data)
    received: list[int] = []
    if kind == "s3":
        def answered(http_response: Any, **_: Any) -> None:
            received.append(int(http_response.headers["Content-Length"]))
        storage.client.meta.events.register("after-call.s3.GetObject", answered)
    assert read_part(store, log_key("big"), 1000, 10) == Part(1000, data[1000:1010], len(data))
    assert read_part(store, log_key("big"), -300, 10) == Part(len(data) - 10, data[-10:], len(data))
    assert read_part(store, log_key("big"), -300, 1000) == Part(len(data) - 300, data[-300:], len(data))
    assert read_part(store, log_key("big"), len(data), 10) == Part(len(data), b"", len(data))
    assert read_part(store, log_key("big"), 0, 1 << 20) == Part(0, data, len(data))
    with pytest.raises(KeyError):
        read_part(store, log_key("none"), 0, 10)
    if kind == "s3":
        assert received[:3] == [10, 10, 300] and max(received) == len(data)  # the ranges alone came over the wire
        key = akey(b"true bytes")
        storage.put(key, b"true bytes")
        client.put_object(Bucket=bucket, Key=f"pfx/{key}", Body=b"LIES bytes",  # the same length, another sha256
                          Metadata={"sha256": hashlib.sha256(b"true bytes").hexdigest()})
        with pytest.raises(ValueError, match="is corrupt"):
            read_part(storage, key, 0, 100)
        assert read_part(storage, key, 0, 4).data == b"LIES"  # a part is not checked (a log's)
