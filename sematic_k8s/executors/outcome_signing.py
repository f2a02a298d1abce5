"""Who wrote an outcome document: its worker's signature (DESIGN.md "Faults", FAULTS.md's "a key holder of the
artifact bucket overwrites a running attempt's outcome" row).

Whoever can write to the artifact bucket (another user's driver holds bucket-wide keys) could write an attempt's
outcome document, naming a value of its choice whose bytes hash to the content id they name. So a driver that asks
for a signature gives each worker attempt a key that never goes through the bucket: HMAC-SHA256 of its resolution
secret over ``"<run id>/<attempt>"``. The secret is the driver's credential for the server (a driver's resolution
token, from its Secret: a restarted driver of the same resolution has it too), else a random one kept in this
process's memory (a resolver without a server: a restarted one cannot verify what an earlier one's workers signed, and
runs those attempts again). The worker signs its outcome document (its canonical JSON, in its :data:`SIGNATURE`
field); the driver verifies the document it read, as parsed, before it adopts anything of it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

from sematic_k8s import settings

SIGNATURE = "signature"  # the outcome document's field that holds its signature
_memory: bytes | None = None  # this process's secret where it has no credential for the server


def resolution_secret() -> bytes:
    """The secret a driver derives its workers' keys from: its server credential (a resolution token survives the
    driver's restart), else a random one, the same for this process's life."""
    global _memory
    credential = settings.api_key()
    if credential:
        return b"sematic-k8s outcome keys\0" + credential.encode()
    if _memory is None:
        _memory = secrets.token_bytes(32)
    return _memory


def attempt_key(secret: bytes, run_id: str, attempt: int) -> str:
    """The key (hex) one worker attempt signs its outcome with: nothing else can be derived from it."""
    return hmac.new(secret, f"{run_id}/{attempt}".encode(), hashlib.sha256).hexdigest()


def signed(key: str, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with its :data:`SIGNATURE`: ``key``'s HMAC over its canonical JSON (keys sorted, no spaces)."""
    return {**document, SIGNATURE: _mac(key, document)}


def unverified(key: str, document: Any) -> str:  # noqa: ANN401 - a client-written document, checked here
    """Why ``document`` (as read back) is not one ``key`` signed, in a few words; "" when it is."""
    if not isinstance(document, dict) or not isinstance(document.get(SIGNATURE), str):
        return "unsigned"
    rest = {k: v for k, v in document.items() if k != SIGNATURE}
    if not hmac.compare_digest(_mac(key, rest).encode(), document[SIGNATURE].encode()):
        return "signed by another key, or changed since"
    return ""


def _mac(key: str, document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hmac.new(bytes.fromhex(key), canonical.encode(), hashlib.sha256).hexdigest()
