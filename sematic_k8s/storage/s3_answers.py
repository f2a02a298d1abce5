"""What an S3 error answer (its HTTP status, its body's ``Code`` and ``Message``) says: worth retrying, or refused
for good and what to do then. One table for the driver's S3 client (:mod:`.s3`) and a worker's presigned requests
(:mod:`.presigned`); no botocore here (a worker has none).

Transient (retried for the retry window): 408, 429 and 500/502/503/504 whatever the code, and the codes S3 lists
as ones to retry (``RequestTimeout``, a 400; ``SlowDown``; ``InternalError``; the throttling ones; 409
``OperationAborted``, "try again"): botocore's standard retries retry the same. Any other 4xx of a presigned request
in S3's words (its error ``Code``) is refused for good (the same request meets it each time): a bucket deleted (404
``NoSuchBucket``), a body too large (400 ``EntityTooLarge``, a proxy's 413), a query S3 cannot take (400
``AuthorizationQueryParametersError``: signed for another region), a request of a form it does not take (400
``InvalidArgument``/``InvalidRequest``, 405, 411, 501 ``NotImplemented``); but not an expiry: S3 answers a URL
signed with temporary credentials that ran out 400 ``ExpiredToken`` (or ``TokenRefreshRequired``), which URLs
presigned afresh pass, as its 403 expiry. A 4xx without S3's ``Code`` (a proxy's HTML page, an empty body) but 405,
411 and 413 says nothing of S3's: not refused for good either (the attempt is run again, as before). A GET's 404 but
``NoSuchBucket`` is an object that is not there; the 403s are the keys' or an expiry's (:mod:`.presigned`).
"""

from __future__ import annotations

TRANSIENT_CODES = frozenset({"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown",
                             "RequestTimeout", "Throttling", "ThrottlingException", "RequestLimitExceeded", "429",
                             "TooManyRequests", "OperationAborted"})
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})  # whatever the code: 429 is R2's and GCS's "1 write per
# key a second"; 408 a proxy's (or S3's) "the request was not sent in time"
EXPIRED_CODES = frozenset({"ExpiredToken", "TokenRefreshRequired"})  # S3's 400s (or 403s) of temporary credentials
# that ran out: URLs presigned afresh, with the driver's current ones, pass
FOR_GOOD_STATUSES = frozenset({405, 411, 413, 501})  # whoever says them (S3 or a proxy), whatever the body
SIZE_FIX = ("return a smaller value from the func (S3 takes at most 5 GiB in one PUT, a proxy before it may take "
            "less), or raise that proxy's limit")
REGION_FIX = ("set the storage's region to the bucket's (region= in the storage URL, or AWS_REGION), which the "
              "driver presigns for")
FORM_FIX = "make the storage's endpoint (and any proxy before it) take presigned GETs and PUTs as S3 does"


def transient(status: int | None, code: str) -> bool:
    """Whether S3's answer (``status``, its error ``code``; "" if none) may pass if the request is made again."""
    return status in TRANSIENT_STATUSES or code in TRANSIENT_CODES


def refused_for_good(status: int, code: str) -> bool:
    """Whether a presigned request's answer, not :func:`transient`, a 403 nor a GET's 404 of an object not there,
    refuses it each time it is made: any other 4xx in S3's words (``code``) but an expiry's (:data:`EXPIRED_CODES`),
    and 405, 411, 413 and 501 (a header S3 does not implement) whatever the body."""
    if status in FOR_GOOD_STATUSES:
        return True
    return 400 <= status < 500 and status != 403 and bool(code) and code not in EXPIRED_CODES


def fix(status: int, code: str, bucket: str) -> str:
    """What to do about a request refused for good (:func:`refused_for_good`) in ``bucket`` ("" if unknown). No
    ": " in it (an error's words end with their fix, after the last one)."""
    if code == "NoSuchBucket":
        return f"create bucket {bucket or '(the storage URL names)'} there, or point the storage at one that exists"
    if code == "EntityTooLarge" or status == 413:
        return SIZE_FIX
    if code == "AuthorizationQueryParametersError":
        return REGION_FIX
    return FORM_FIX
