"""A worker's view of S3 storage through presigned URLs: no botocore, no credentials.

The executor that launches a worker in a container or a pod (the DockerExecutor, the KubernetesExecutor, which
hold an S3 client already; a pod's URLs go in a Secret of its Job's own, as a Job's spec is readable by whoever may
read Jobs) presigns
the exact requests the worker needs, with a short expiry, and puts them in its
:class:`~sematic_k8s.specs.TaskSpec` (``urls``): a GET for each input artifact and a PUT for the outcome
document (:func:`~sematic_k8s.specs.outcome_key`), plus a PUT for a staging object
(:func:`~sematic_k8s.specs.staged_key`) where a large output goes. The worker's output value and its logs
travel in the outcome document (small values, base64) or the staging object (large ones); the executor checks
them against their content id and stores them itself (:func:`sematic_k8s.executors.remote.adopt_outcome`).

Requests go through :mod:`http.client`; an answer is judged by its status and S3's error ``Code``
(:mod:`.s3_answers`). Refused and dropped connections, timeouts and transient answers (408, 429, 5xx, 400
``RequestTimeout``, ``SlowDown``, 409 ``OperationAborted``) are retried for the retry window
($SEMATIC_K8S_RETRY_WINDOW), then raise :class:`~sematic_k8s.errors.StorageError` (the worker exits 75 and the
driver runs the attempt again, with fresh URLs), as does at once an expired URL (403 "Request has expired",
``ExpiredToken``) or another 403. A URL whose keys S3 refuses (403 ``InvalidAccessKeyId``,
``SignatureDoesNotMatch``, ``AccessDenied`` not for an expiry: its keys rotated away or revoked) raises
:class:`~sematic_k8s.errors.StorageKeysRefused` at once, naming S3's code and the access key it was signed with: the
driver runs the attempt once more with URLs presigned afresh, and ends the resolution if those are refused too; S3's
400 ``ExpiredToken`` (temporary credentials that ran out) and a 4xx without S3's ``Code`` (a proxy's page) but 405,
411 and 413 are a StorageError as an expiry is. Any other 4xx (a bucket deleted: 404 ``NoSuchBucket``; 400
``EntityTooLarge``, 405, 411, 413, ...) raises :class:`~sematic_k8s.errors.PresignedRequestRefused` at once, naming
the object, S3's code and message and what to do: the resolution ends on it. A GET's other 404 (``NoSuchKey``) is an
object not there (:class:`~.base.KeyGone`, naming it). URLs' queries are never logged nor said: messages name the
storage key, or the object's address (the URL without its query).
"""

from __future__ import annotations

import http.client
from urllib.parse import parse_qs, urlsplit

from sematic_k8s.errors import PresignedRequestRefused, StorageError, StorageKeysRefused
from sematic_k8s.retries import RetryLater, retrying
from sematic_k8s.storage import s3_answers
from sematic_k8s.storage.base import KeyGone

TIMEOUT = 60.0  # seconds for a connection or a read
_SECRET_PARAMS = ("X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Credential", "Signature", "AWSAccessKeyId")
_TRANSIENT = (OSError, http.client.HTTPException)  # refused, dropped, timed out (socket.timeout is an OSError)


class PresignedStorage:
    """Bytes by key, for the keys a :class:`~sematic_k8s.specs.TaskSpec`'s ``urls`` name ("GET key" / "PUT
    key" -> URL). Only :meth:`get` and :meth:`put` of those keys; anything else is a programming error."""

    def __init__(self, urls: dict[str, str], retry_window: float | None = None) -> None:
        self.urls = urls
        self.retry_window = retry_window
        self._connections: dict[tuple[str, str], http.client.HTTPConnection] = {}

    def get(self, key: str) -> bytes:
        """The bytes at ``key``; KeyError when absent."""
        status, body = self._request("GET", key, None)
        if status == 404:
            raise KeyGone(key, _address(self.urls[f"GET {key}"]))
        return body

    def put(self, key: str, data: bytes, *, repair: bool = False) -> None:
        """Write ``data`` at ``key`` (a key of this attempt's own: the outcome or the staging object)."""
        self._request("PUT", key, data)

    def exists(self, key: str) -> bool:
        raise KeyError(f"no presigned HEAD for storage key {key!r}")

    def append(self, key: str, data: bytes, *, append_id: str | None = None) -> None:
        raise KeyError(f"no presigned append for storage key {key!r}: logs travel in the outcome document")

    def _request(self, method: str, key: str, data: bytes | None) -> tuple[int, bytes]:
        url = self.urls.get(f"{method} {key}")
        if url is None:
            raise KeyError(f"no presigned {method} for storage key {key!r}")
        try:
            return self._once(method, key, url, data)  # the usual case: tenacity is imported only to retry
        except (*_TRANSIENT, RetryLater):
            pass
        try:
            for attempt in retrying(f"storage ({method} {key})", _TRANSIENT, self.retry_window):
                with attempt:
                    return self._once(method, key, url, data)
        except (*_TRANSIENT, RetryLater) as e:
            raise StorageError(f"cannot reach storage to {method} {key!r}: {type(e).__name__}: {e}") from None
        raise AssertionError("unreachable: retrying() returns or raises")  # pragma: no cover

    def _once(self, method: str, key: str, url: str, data: bytes | None) -> tuple[int, bytes]:
        parts = urlsplit(url)
        conn = self._connection(parts.scheme, parts.netloc)
        headers = {"Content-Type": "application/octet-stream"} if data is not None else {}
        try:
            conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=data, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._connections.pop((parts.scheme, parts.netloc), None)
            raise
        if resp.status < 300:
            return resp.status, body
        text = body[:2000].decode(errors="replace")
        code, message = _element(text, "Code"), _said(_element(text, "Message"), parts.query)
        if s3_answers.transient(resp.status, code):  # 429, 5xx, 400 RequestTimeout: it may pass
            after = resp.getheader("Retry-After")
            raise RetryLater(f"{method} of storage key {key!r}: HTTP {resp.status}" + (f", {code}" if code else ""),
                             float(after) if after and after.isdigit() else None)
        if resp.status == 404 and method == "GET" and code != "NoSuchBucket":
            return 404, b""
        if s3_answers.refused_for_good(resp.status, code):  # the same request meets it each time
            fix = s3_answers.fix(resp.status, code, _element(text, "BucketName"))
            raise PresignedRequestRefused.refusing(method, _address(url), resp.status, code, message, fix)
        if resp.status == 403 and _keys_refused(code, message):  # refused each time, not an outage
            query = parse_qs(parts.query)  # SigV4's credential scope, or SigV2's key
            access_key = (query.get("X-Amz-Credential") or query.get("AWSAccessKeyId") or [""])[0].split("/")[0]
            raise StorageKeysRefused.refusing(method, key, access_key, code)
        # an expired URL or session token among them: the next attempt's URLs, presigned afresh, pass
        said = f", {code}" + (f": {message}" if message else "") if code else ""
        raise StorageError(f"storage refused the {method} of {key!r}: HTTP {resp.status}{said} (the worker's "
                           "presigned URL expired or was not valid: the attempt is run again with new ones)")

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        conn = self._connections.get((scheme, netloc))
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = cls(netloc, timeout=TIMEOUT)
            self._connections[(scheme, netloc)] = conn
        return conn

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()


def _keys_refused(code: str, message: str) -> bool:
    """Whether S3's 403 (its error ``code`` and ``message``) refuses the keys a URL was signed with: an unknown
    access key, a signature they do not match, or access denied other than for an expiry ("Request has expired":
    the URL outlived its expiry, as one of a pod that waited long for a node). ``ExpiredToken`` (temporary
    credentials that ran out) and an expiry are not: the next attempt's URLs, presigned afresh, pass."""
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return True
    return code == "AccessDenied" and "expired" not in message.lower()


def _address(url: str) -> str:
    """Where a presigned URL's object is, for words: the URL without its query (its signature, its credential)
    nor any user info."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _said(message: str, query: str) -> str:
    """S3's error ``message`` on one line, at most 300 characters, without any secret of the URL's ``query``."""
    for name, values in parse_qs(query).items():
        if name in _SECRET_PARAMS:
            for value in values:
                message = message.replace(value, "...")
    words = " ".join(message.split())
    return words if len(words) <= 300 else words[:297] + "..."


def _element(text: str, name: str) -> str:
    """The text of the first ``<name>`` element of an XML error body; "" if none."""
    start, end = text.find(f"<{name}>"), text.find(f"</{name}>")
    return text[start + len(name) + 2:end] if 0 <= start < end else ""

