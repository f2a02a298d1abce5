"""Artifact storage in an S3 bucket (AWS, MinIO, moto or any S3 API), through botocore (and boto3's managed
transfer for multipart uploads).

Every object we write carries the sha256 of its bytes in its metadata (``x-amz-meta-sha256``) and
every read checks it; a repairing put over an object whose bytes differ from the new ones (a corrupt
artifact) rewrites it. Calls ride out an outage of S3: botocore's own retries, inside a window
($SEMATIC_K8S_RETRY_WINDOW) in which refused and dropped connections, timeouts, 5xx and 429 answers are retried
with backoff. Values above ``multipart_threshold`` are uploaded in parts by boto3's managed
transfer. S3 has no append: :meth:`S3Storage.append` (used for run logs) reads the object, adds the
bytes and writes it back, conditioned on the ETag it read where the server supports conditional
writes, so a lost update is retried rather than silent. Each append has an id (random, or the caller's for an
append another process may make again), kept in the object's metadata (``x-amz-meta-appends``), so an append
retried after its answer was lost, or made again by a restarted driver, is not repeated.

Configuration comes from arguments or the environment:

- ``SEMATIC_K8S_S3_BUCKET`` / ``SEMATIC_K8S_S3_PREFIX`` (read by :meth:`S3Storage.from_env`)
- ``SEMATIC_K8S_S3_ENDPOINT``, else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``: a non-AWS
  endpoint (MinIO, moto); path-style addressing is used whenever an endpoint is set
- ``SEMATIC_K8S_S3_REGION``, else ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` (``us-east-1`` with an endpoint)
- credentials: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``), each else from the file
  ``SEMATIC_K8S_<name>_FILE`` names (a Docker driver's), else boto3's usual chain (``AWS_PROFILE``, roles)
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlparse

try:
    import botocore.exceptions
    import botocore.loaders
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError("S3 storage needs boto3: pip install 'sematic-k8s[s3]'") from e

from sematic_k8s import settings
from sematic_k8s.errors import S3CredentialsError, S3StorageError
from sematic_k8s.retries import RetriesStopped, check_stopped, retrying
from sematic_k8s.storage import s3_answers
from sematic_k8s.storage.base import APPEND_ID, Part, check_append_id

log = logging.getLogger("sematic_k8s")

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's smallest allowed part (all but the last)
SHA256_META = "sha256"  # stored as the x-amz-meta-sha256 header
BUCKET_ENV = settings.S3_BUCKET_ENV
PREFIX_ENV = settings.S3_KEY_PREFIX_ENV
ENDPOINT_ENVS = (settings.S3_ENDPOINT_ENV, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_ENVS = (settings.S3_REGION_ENV, "AWS_REGION", "AWS_DEFAULT_REGION")
APPEND_ATTEMPTS = 8
APPENDS_META = "appends"  # x-amz-meta-appends: the ids of an appended object's last appends, oldest first
APPEND_IDS_KEPT = 32  # a retry follows its lost answer at once: its id is there unless 32 others landed since

_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                     "TokenRefreshRequired", "AccessDenied", "AllAccessDisabled", "Forbidden", "403"}
# credentials S3 no longer takes (rotated, deactivated, expired), named by a call's own answer (a GET's or a PUT's;
# a HEAD has no body to name one): said as such, not as the bucket check's bare 403
_STALE_KEY_CODES = {"InvalidAccessKeyId": "S3 does not know this access key: rotated, deactivated or deleted",
                    "SignatureDoesNotMatch": "the secret key is not this access key's: rotated",
                    "ExpiredToken": "the session token expired", "TokenRefreshRequired": "the session token expired",
                    "InvalidToken": "the session token is not valid"}
_MISSING_KEY_CODES = {"NoSuchKey", "404", "NotFound"}
_CONFLICT_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
BOTO_RETRIES = {"mode": "standard", "max_attempts": 5}  # botocore's own, inside the retry window


class _S3Loader(botocore.loaders.Loader):
    """botocore's data loader, told that the service asked for is S3: by itself it lists every service's
    files (thousands of ``stat`` calls, a fifth of a worker's start-up) to check that S3 is one of them."""

    def list_available_services(self, type_name: str) -> list[str]:
        return ["s3"]


def _client(**kwargs: Any) -> Any:  # noqa: ANN401 - a botocore S3 client
    """An S3 client of a new botocore session: with the keys :func:`settings.storage_keys` finds (``AWS_*``, or the
    files a Docker driver is given them in), else credentials found now by the usual chain (profiles, roles).
    boto3 itself, a third of a worker's start-up, is imported only for multipart uploads."""
    session = botocore.session.get_session()
    paths = session.get_config_variable("data_path")
    session.register_component("data_loader", _S3Loader(extra_search_paths=paths.split(os.pathsep) if paths else []))
    keys = settings.storage_keys()
    if "AWS_ACCESS_KEY_ID" in keys or "AWS_SECRET_ACCESS_KEY" in keys:  # one without the other: botocore says so
        kwargs.update(aws_access_key_id=keys.get("AWS_ACCESS_KEY_ID"),
                      aws_secret_access_key=keys.get("AWS_SECRET_ACCESS_KEY"),
                      aws_session_token=keys.get("AWS_SESSION_TOKEN"))
    return session.create_client("s3", **kwargs)

T = TypeVar("T")


def _first_env(names: tuple[str, ...]) -> str | None:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _boto_error(e: Exception) -> Exception:
    """The botocore error behind ``e`` (s3transfer wraps failed part uploads)."""
    if isinstance(e, (ClientError, BotoCoreError)):
        return e
    cause = e.__cause__ or e.__context__
    return cause if isinstance(cause, (ClientError, BotoCoreError)) else e


def transient(exc: BaseException) -> bool:
    """Whether a failed S3 call may succeed later: no connection, a dropped or timed-out one, a 5xx, a 429 (too many
    requests: S3 APIs that limit writes to one key answer it to a log's appends)."""
    if not isinstance(exc, Exception):
        return False
    e = _boto_error(exc)
    if isinstance(e, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)):
        return True
    if not isinstance(e, ClientError):
        return False
    return s3_answers.transient(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"), _code(e))


def _stop_retrying(caught_exception: Exception | None = None, response: Any = None, **_: Any) -> None:
    """botocore's own retries of a failed try (before its pause) end in :class:`~sematic_k8s.retries.RetriesStopped`
    once this thread's retries are stopped (:func:`~sematic_k8s.retries.stopped_by`)."""
    if caught_exception is not None or (response is not None and response[0].status_code >= 400):
        check_stopped()


def _content_range(resp: dict[str, Any], got: int) -> tuple[int, int]:
    """(first byte, object size) of a ranged GET's answer (``Content-Range: bytes 0-99/1234``); a server that
    ignored the range sent the whole object."""
    unit, _, spec = (resp.get("ContentRange") or "").partition(" ")
    span, _, total = spec.partition("/")
    if unit != "bytes" or not total.isdigit():
        return 0, got
    return int(span.partition("-")[0] or 0), int(total)


def _append_ids(meta: dict[str, str]) -> list[str]:
    """The ids of the last appends an object's metadata records (well-formed ones only: it is client-written)."""
    return [i for i in meta.get(APPENDS_META, "").split(",") if APPEND_ID.fullmatch(i)][-APPEND_IDS_KEPT:]


def _appended_meta(body: bytes, ids: list[str], append_id: str) -> dict[str, str]:
    """The metadata of an appended object: its sha256, and its last append ids, ending with ``append_id``."""
    return {SHA256_META: _sha256(body), APPENDS_META: ",".join([*ids, append_id][-APPEND_IDS_KEPT:])}


def _same_bytes(head: dict[str, Any], data: bytes) -> bool:
    """Whether the object HEAD describes holds exactly ``data``: its ETag is S3's MD5 of the bytes it has
    (single-part uploads); for multipart ones, their length and recorded sha256."""
    etag = str(head.get("ETag", "")).strip('"')
    if etag and "-" not in etag:
        return etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
    return (head.get("ContentLength") == len(data)
            and head.get("Metadata", {}).get(SHA256_META) == _sha256(data))


class S3Storage:
    """Bytes by key under ``s3://bucket/prefix/``; implements the :class:`~.base.Storage` protocol.

    ``client`` (a boto3 S3 client) overrides ``endpoint_url`` and ``region``. Values larger than
    ``multipart_threshold`` bytes are uploaded in parts of ``max(multipart_threshold, 5 MiB)``.
    ``retry_window``: seconds to ride out an outage (default $SEMATIC_K8S_RETRY_WINDOW, read per call).
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, client: Any = None, multipart_threshold: int = 8 * MiB,
                 retry_window: float | None = None) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"S3 bucket name {bucket!r} is not valid: give just the bucket, e.g. 'my-artifacts'")
        if not isinstance(multipart_threshold, int) or multipart_threshold < 1:
            raise ValueError(f"multipart_threshold must be a positive number of bytes, got {multipart_threshold!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.multipart_threshold = multipart_threshold
        self.retry_window = retry_window
        if client is None:
            endpoint_url = endpoint_url or _first_env(ENDPOINT_ENVS)
            region = region or _first_env(REGION_ENVS) or ("us-east-1" if endpoint_url else None)
            style = "path" if endpoint_url else "auto"
            client = _client(
                endpoint_url=endpoint_url, region_name=region,
                config=Config(s3={"addressing_style": style}, connect_timeout=10, read_timeout=60,
                              retries=dict(BOTO_RETRIES)))  # a copy: botocore rewrites the dict it is given
            client.meta.events.register_first("needs-retry.s3", _stop_retrying)
        self.endpoint_url = endpoint_url
        self.region = region
        self.client = client
        self._bucket_checked = False
        self._conditional_writes = True
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

    # -- construction from settings ----------------------------------------------------------------

    @classmethod
    def from_env(cls, **overrides: Any) -> S3Storage:
        """A storage configured by ``SEMATIC_K8S_S3_BUCKET``, ``SEMATIC_K8S_S3_PREFIX`` and the endpoint env."""
        bucket = overrides.pop("bucket", None) or os.environ.get(BUCKET_ENV)
        if not bucket:
            raise ValueError(f"no S3 bucket configured: set {BUCKET_ENV} (and optionally {PREFIX_ENV}, "
                             f"{ENDPOINT_ENVS[0]} or {ENDPOINT_ENVS[1]})")
        prefix = overrides.pop("prefix", None)
        return cls(bucket, os.environ.get(PREFIX_ENV, "") if prefix is None else prefix, **overrides)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> S3Storage:
        """The storage for ``s3://bucket/prefix[?endpoint=URL&region=R]`` (the inverse of :attr:`url`)."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an S3 storage URL: {url!r} (expected s3://bucket/prefix)")
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        settings: dict[str, Any] = {"endpoint_url": query.get("endpoint"), "region": query.get("region")}
        settings.update(overrides)
        return cls(parsed.netloc, parsed.path, **settings)

    @property
    def url(self) -> str:
        """``s3://bucket/prefix``, plus the endpoint and region when they were configured explicitly."""
        query = {k: v for k, v in (("endpoint", self.endpoint_url), ("region", self.region)) if v}
        return f"s3://{self.bucket}/{self.prefix}" + (f"?{urlencode(query)}" if query else "")

    @property
    def where(self) -> str:
        """The endpoint, for messages."""
        return str(getattr(self.client.meta, "endpoint_url", None) or self.endpoint_url or "AWS")

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r})"

    # -- the Storage protocol ----------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, repair: bool = False) -> None:
        """Store ``data`` at ``key`` unless an object is already there; with ``repair``, also when the object
        there holds other bytes (see :class:`~sematic_k8s.storage.base.Storage`). A new small value is one
        request: a write conditioned on the key being free."""
        full = self._key(key)
        meta = {SHA256_META: _sha256(data)}
        if len(data) <= self.multipart_threshold and self._conditional_writes:
            written = self._put_if_absent(key, full, data, meta)
            if written or (written is not None and not repair):
                return
        head = self._head(key, full)
        if head is not None:
            if not repair or _same_bytes(head, data):
                return
            log.warning("%s is corrupt (other bytes than its content id says): rewriting it", self._where(key))
        if len(data) > self.multipart_threshold:
            from boto3.s3.inject import upload_fileobj
            from boto3.s3.transfer import TransferConfig

            transfer = TransferConfig(multipart_threshold=self.multipart_threshold + 1,
                                      multipart_chunksize=max(self.multipart_threshold, MIN_PART_SIZE))
            self._call("upload", key, lambda: upload_fileobj(
                self.client, io.BytesIO(data), self.bucket, full, ExtraArgs={"Metadata": meta}, Config=transfer))
        else:
            self._call("put", key, lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=data,
                                                                  Metadata=meta))

    def _put_if_absent(self, key: str, full: str, data: bytes, meta: dict[str, str],
                       op: str = "put") -> bool | None:
        """Write ``data`` unless the key holds an object: True when written, False when an object is there,
        None when the server does not do conditional writes (then the caller looks first); failures name ``op``."""
        try:
            self._retried(lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=data, Metadata=meta,
                                                         IfNoneMatch="*"))
            return True
        except ClientError as e:
            if _code(e) in _CONFLICT_CODES:
                return False
            if _code(e) in {"NotImplemented", "501"}:
                self._conditional_writes = False
                return None
            raise self._failure(op, key, e) from e
        except BotoCoreError as e:
            raise self._failure(op, key, e) from e

    def get(self, key: str) -> bytes:
        """The bytes at ``key``, checked against their recorded sha256; KeyError when absent."""
        data, _, _ = self._read(key, self._key(key))
        if data is None:
            raise KeyError(key)
        return data

    def exists(self, key: str) -> bool:
        return self._head(key, self._key(key)) is not None

    def size(self, key: str) -> int | None:
        """The number of bytes at ``key`` (its HEAD's ``Content-Length``: one HEAD, as :meth:`exists`); None when
        absent."""
        head = self._head(key, self._key(key))
        return None if head is None else int(head["ContentLength"])

    def delete(self, key: str) -> None:
        """Delete the object at ``key`` (S3 answers a missing one as deleted), retried for the retry window."""
        full = self._key(key)
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=full))

    def keys(self, prefix: str) -> list[str]:
        """The keys under the folder ``prefix`` (every page of them), listed again whole if S3 fails transiently,
        for the retry window."""
        folder = prefix.rstrip("/")
        full = self._key(folder) + "/"

        def listed() -> list[str]:
            found: list[str] = []
            more: dict[str, str] = {}
            while True:
                page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=full, **more)
                found += [o["Key"] for o in page.get("Contents", [])]
                if not page.get("IsTruncated"):
                    return found
                more = {"ContinuationToken": page["NextContinuationToken"]}
        cut = len(self.prefix) + 1 if self.prefix else 0
        return [k[cut:] for k in self._call("list", folder, listed)]

    def read_part(self, key: str, start: int, limit: int) -> Part:
        """:func:`~sematic_k8s.storage.base.read_part` with one ranged GET (a HEAD too when ``start`` is at or past
        the end). A part that is the whole object is checked against its sha256; a smaller one cannot be (a log's
        part, shown as it is)."""
        full = self._key(key)
        if limit <= 0:
            raise ValueError(f"limit {limit}: read at least one byte")
        wanted = f"bytes=-{min(-start, limit)}" if start < 0 else f"bytes={start}-{start + limit - 1}"

        def get() -> tuple[dict[str, Any], bytes]:
            resp = self.client.get_object(Bucket=self.bucket, Key=full, Range=wanted)
            return resp, resp["Body"].read()  # a connection dropped mid-body is retried as a whole

        try:
            resp, data = self._retried(get)
        except ClientError as e:
            if _code(e) in _MISSING_KEY_CODES:
                self.check()
                raise KeyError(key) from None
            if _code(e) not in ("InvalidRange", "416"):
                raise self._failure("get", key, e) from e
            head = self._head(key, full)  # asked from its end on: nothing there yet
            if head is None:
                raise KeyError(key) from None
            return Part(head["ContentLength"], b"", head["ContentLength"])
        except BotoCoreError as e:
            raise self._failure("get", key, e) from e
        begin, size = _content_range(resp, len(data))
        if begin == 0 and len(data) == size:
            self._check_sha256(key, data, resp.get("Metadata", {}))
        return Part(begin, data, size)

    def append(self, key: str, data: bytes, *, append_id: str | None = None) -> None:
        """Append to a (log) object by read-modify-write, creating it if needed.

        Each call rewrites the whole object, so this is for logs, not for large growing values. It is
        correct for one writer per key (calls on this instance are serialised per key); against servers
        that honour conditional writes (AWS, MinIO, moto) a concurrent writer's update is detected by
        ETag and the append retried instead of being lost.

        Once only: each call has an id (``append_id``, else a random one), and the object's metadata keeps
        the ids of its last appends. A write that S3 carried out but whose answer was lost (a dropped
        connection, a proxy's 5xx) is sent again, its condition then fails, and the append finds its id in
        the object it reads again: done, its bytes are not added a second time. The same with a caller's id
        that another process appended with before (a restarted driver). The bytes stay plain log text.
        """
        full = self._key(key)
        append_id = secrets.token_hex(6) if append_id is None else check_append_id(append_id)
        with self._key_lock(full):
            if self._conditional_writes and self._put_if_absent(
                    key, full, data, _appended_meta(data, [], append_id), op="append") is True:
                return  # the first append: one request, no read
            for _ in range(APPEND_ATTEMPTS):
                old, etag, meta = self._read(key, full)
                ids = _append_ids(meta)
                if append_id in ids:
                    return  # an earlier try of this append landed; its answer was lost
                body = (old or b"") + data
                cond: dict[str, str] = {}
                if self._conditional_writes:
                    cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
                try:
                    args = {"Bucket": self.bucket, "Key": full, "Body": body,
                            "Metadata": _appended_meta(body, ids, append_id), **cond}
                    self._retried(lambda args=args: self.client.put_object(**args))  # type: ignore[misc]
                    return
                except ClientError as e:
                    if _code(e) in _CONFLICT_CODES:
                        continue  # someone else wrote in between: read again
                    if _code(e) in {"NotImplemented", "501"} and cond:
                        self._conditional_writes = False  # an S3 API without conditional writes
                        continue
                    raise self._failure("append", key, e) from e
                except BotoCoreError as e:
                    raise self._failure("append", key, e) from e
            raise S3StorageError(f"append to {self._where(key)} kept conflicting with another writer "
                                 f"({APPEND_ATTEMPTS} attempts): logs support one writer per key")

    def presign(self, method: str, key: str, expires: float) -> str:
        """A URL that lets its holder ``GET`` or ``PUT`` (with Content-Type application/octet-stream) the object
        at ``key`` for ``expires`` seconds, without credentials: what worker containers are given
        (made here, no request sent). A secret until it expires: never logged."""
        op = {"GET": "get_object", "PUT": "put_object"}[method]
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        if method == "PUT":
            params["ContentType"] = "application/octet-stream"
        return str(self.client.generate_presigned_url(op, Params=params, ExpiresIn=int(min(expires, 7 * 86400))))

    # -- helpers -----------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise a clear S3StorageError unless the bucket exists and the credentials may use it."""
        if self._bucket_checked:
            return
        try:
            self._retried(lambda: self.client.head_bucket(Bucket=self.bucket))
        except ClientError as e:
            code = _code(e)
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise self._no_bucket() from e
            if code in {"301", "PermanentRedirect"}:
                actual = e.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
                fix = "set region= or AWS_REGION"
                raise S3StorageError(f"S3 bucket {self.bucket!r} is in region {actual or '(another)'}, not "
                                     f"{self.client.meta.region_name}: {fix}", fix) from e
            raise self._error("access", None, e) from e
        except BotoCoreError as e:
            raise self._error("access", None, e) from e
        self._bucket_checked = True

    def _key(self, key: str) -> str:
        parts = key.split("/")
        if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"storage key {key!r} is not a plain relative path")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _where(self, key: str | None) -> str:
        path = self.bucket + (f"/{self._key(key)}" if key is not None else "")
        return f"s3://{path} at {self.where}"

    def _head(self, key: str, full: str) -> dict[str, Any] | None:
        """The object's HEAD response, or None when absent."""
        try:
            return self._retried(lambda: self.client.head_object(Bucket=self.bucket, Key=full))
        except ClientError as e:
            if _code(e) in _MISSING_KEY_CODES:
                self.check()  # a HEAD's 404 does not say whether the key or the bucket is missing
                return None
            raise self._failure("head", key, e) from e
        except BotoCoreError as e:
            raise self._failure("head", key, e) from e

    def _read(self, key: str, full: str) -> tuple[bytes | None, str | None, dict[str, str]]:
        """(bytes, ETag, metadata) of the object, its bytes verified against its sha256; (None, None, {}) when
        absent."""
        def get() -> tuple[dict[str, Any], bytes]:
            resp = self.client.get_object(Bucket=self.bucket, Key=full)
            return resp, resp["Body"].read()  # a connection dropped mid-body is retried as a whole

        try:
            resp, data = self._retried(get)
        except ClientError as e:
            if _code(e) in _MISSING_KEY_CODES:
                self.check()  # a 404 without a code (some S3 APIs) may be the bucket's
                return None, None, {}
            raise self._failure("get", key, e) from e
        except BotoCoreError as e:
            raise self._failure("get", key, e) from e
        meta = resp.get("Metadata", {})
        self._check_sha256(key, data, meta)
        return data, resp.get("ETag"), meta

    def _check_sha256(self, key: str, data: bytes, meta: dict[str, str]) -> None:
        """ValueError when ``data`` (an object's whole bytes) do not have the sha256 its metadata recorded."""
        expected = meta.get(SHA256_META)
        if expected is not None and _sha256(data) != expected:
            raise ValueError(f"storage key {key!r} is corrupt: {self._where(key)} has sha256 {_sha256(data)} "
                             f"but was written with sha256 {expected}")

    def _retried(self, fn: Callable[[], T]) -> T:
        """``fn()``, retried while S3 fails transiently, for the retry window."""
        for attempt in retrying(f"S3 at {self.where}", transient, self.retry_window):
            with attempt:
                return fn()
        raise AssertionError("unreachable: retrying() returns or raises")  # pragma: no cover

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return self._retried(fn)
        except RetriesStopped:
            raise  # not S3's failure: the thread's owner closed
        except (ClientError, BotoCoreError) as e:
            raise self._failure(op, key, e) from e
        except Exception as e:  # s3transfer wraps failed part uploads
            cause = _boto_error(e)
            if cause is not e:
                raise self._failure(op, key, cause) from e
            raise

    def _failure(self, op: str, key: str | None, e: Exception) -> S3StorageError:
        """The error for a failed call: the bucket's own problem (missing, another region, refused) when
        :meth:`check` finds one (the bucket is checked only when a call fails), else the call's."""
        if isinstance(e, ClientError) and not transient(e) and _code(e) not in _STALE_KEY_CODES:
            self.check()  # S3 answered (an outage is not the bucket's), naming no key of ours as the problem
        return self._error(op, key, e)

    def _no_bucket(self) -> S3StorageError:
        """The error of a bucket that does not exist: a refusal, with its fix (no wait brings it)."""
        return S3StorageError(f"S3 bucket {self.bucket!r} does not exist at {self.where}",
                              f"create bucket {self.bucket} there, or point the storage at one that exists")

    def _error(self, op: str, key: str | None, e: Exception) -> S3StorageError:
        """A readable error for a failed boto3 call."""
        if isinstance(e, (NoCredentialsError, PartialCredentialsError)):
            return S3CredentialsError(f"no usable AWS credentials to {op} {self._where(key)} ({e}): set "
                                      "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or use an IAM role")
        if isinstance(e, EndpointConnectionError):
            return S3StorageError(f"cannot reach S3 at {self.where} to {op} {self._where(key)}: {e}")
        if isinstance(e, ClientError):
            code = _code(e)
            message = e.response.get("Error", {}).get("Message") or str(e)
            if code == "NoSuchBucket":
                return self._no_bucket()
            if code in _STALE_KEY_CODES:
                return S3CredentialsError(f"S3 refused to {op} {self._where(key)}: {code} ({_STALE_KEY_CODES[code]}; "
                                          f"S3 says: {message}): set AWS_ACCESS_KEY_ID and "
                                          "AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN) to current credentials (in a "
                                          "cluster: the storage Secret) and run again")
            if code in _CREDENTIAL_CODES:
                return S3CredentialsError(f"S3 refused to {op} {self._where(key)}: {code}: {message} "
                                          "(check the AWS credentials and the bucket's policy)")
            return S3StorageError(f"S3 {op} of {self._where(key)} failed: {code}: {message}")
        return S3StorageError(f"S3 {op} of {self._where(key)} failed: {e}")

    @contextmanager
    def _key_lock(self, full: str) -> Iterator[None]:
        with self._lock:
            lock = self._key_locks.setdefault(full, threading.Lock())
        with lock:
            yield
