"""Who wrote an outcome document: its worker's signature (DESIGN.md "Faults", FAULTS.md's "a key holder of the
artifact bucket overwrites a running attempt's outcome" row).

Whoever can write to the artifact bucket (another user's driver holds bucket-wide keys) could write an attempt's
outcome document, naming a value of its choice whose bytes hash to the content id they name. So a driver that asks
for a signature gives each worker attempt a key that never goes through the bucket: HMAC-SHA256 of its resolution
secret over ``"<run id>/<attempt>"``. The secret is the driver's credential for the server (a driver's resolution
token, from its file or Secret: a restarted driver of the same resolution has it too; a ``--local`` server's reruns
get one as a keyed server's do, and the CloudResolver mints one in either mode); a driver without a server, writing
its database directly, derives them from a random secret that database keeps (:data:`KEPT_SECRET`, made once on first
need: a restarted driver has it too; whoever holds only bucket keys does not), handed to its executor by the driver.
Only a driver given no credential (started by hand through a ``--local`` server), and an executor made outside a
driver, keep a random one in this process's memory: a restarted one cannot verify what an earlier one's workers
signed, and runs those attempts again. The worker signs its outcome
document (its canonical JSON, in its :data:`SIGNATURE` field); the driver verifies the document it read, as parsed,
before it adopts anything of it.

A worker process runs this very code. A container's or a pod's runs its image's: a driver asks it for a signature
only where the image says, by its :data:`~sematic_k8s.labels.SIGNS_OUTCOMES_LABEL` (written when it was built), that
its worker signs (:func:`image_signs`): an image built before would refuse a task with a field it does not know.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from sematic_k8s import settings
from sematic_k8s.errors import RegistryAuthError
from sematic_k8s.labels import SIGNS_OUTCOMES_LABEL
from sematic_k8s.registry import UNANSWERED, image_labels, split_reference

SIGNATURE = "signature"  # the outcome document's field that holds its signature
KEPT_SECRET = "outcome-keys"  # the name of the secret a driver's database keeps for it (Store.kept_secret)
_memory: bytes | None = None  # this process's secret where it has no credential for the server
log = logging.getLogger("sematic_k8s")
# an image's labels not read from its registry: refused, not answered, not there, not JSON
UNREADABLE: tuple[type[Exception], ...] = (RegistryAuthError, ValueError, *UNANSWERED)


def resolution_secret(kept: Callable[[], bytes | None] | None = None) -> bytes:
    """The secret a driver derives its workers' keys from: its server credential (a resolution token survives the
    driver's restart), else ``kept()``, the secret its database keeps (:data:`KEPT_SECRET`: the driver's store's,
    which survives it too; None from a store that keeps none for it), else a random one, the same for this process's
    life."""
    global _memory
    credential = settings.api_key()
    if credential:
        return b"sematic-k8s outcome keys\0" + credential.encode()
    secret = kept() if kept is not None else None
    if secret is not None:
        return secret
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
    said = document[SIGNATURE]
    rest = {k: v for k, v in document.items() if k != SIGNATURE}
    if not said.isascii() or not hmac.compare_digest(_mac(key, rest).encode(), said.encode()):
        return "signed by another key, or changed since"
    return ""


def _mac(key: str, document: dict[str, Any]) -> str:
    """``key``'s HMAC over ``document`` as its reader parses it back (keys that are not strings, such as a preview's
    ints, become JSON's strings first: the worker signs what the driver will read), in canonical JSON."""
    as_read = json.loads(json.dumps(document))
    canonical = json.dumps(as_read, sort_keys=True, separators=(",", ":"))
    return hmac.new(bytes.fromhex(key), canonical.encode(), hashlib.sha256).hexdigest()


def image_signs(image: str, on_engine: Callable[[], dict[str, str] | None] | None = None) -> bool | None:
    """Whether the worker of ``image`` (by digest) signs its outcome document: its label, read from the engine that
    runs it (``on_engine()``: its labels, None when the engine does not have it) else from its registry; None when
    its labels cannot be read now (its registry refuses this driver, or does not answer: said, and its workers'
    outcomes adopted unsigned until they can be). A multi-platform index (no one config to read) is said too, and
    taken for an image that does not sign."""
    labels = on_engine() if on_engine is not None else None
    if labels is None:
        try:
            labels = image_labels(*split_reference(image))
        except UNREADABLE as e:
            log.warning("image %s: its registry did not give this driver its labels (%s): its workers' outcome "
                        "documents are adopted unsigned until it does (asked again in a minute); let the driver read "
                        "that registry anonymously to have them signed", image, e)
            return None
        if labels is None:
            log.warning("image %s is a multi-platform index: its label saying its workers sign is not read; their "
                        "outcome documents are adopted unsigned (give the driver a single-platform image's digest "
                        "to have them signed)", image)
    return (labels or {}).get(SIGNS_OUTCOMES_LABEL) == "1"
