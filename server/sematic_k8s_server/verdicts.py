"""Which of two records of an artifact stored without its bytes in its record is true: the one its stored bytes
verify. Any client may record an artifact, and the first record of an id stays (insert if absent); one written
ahead under an id easy to compute, with another format, type or size, would make the value read back as corrupt
in every resolution. When a written record conflicts with the recorded one (:meth:`SqlStore.write` reports it),
the server reads the bytes from its own configured storage (never one a record names) and keeps the record whose
format hashes them to the id and whose size is theirs. Bytes not stored yet decide nothing: the recorded one
stays, and the next conflicting write checks again."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sematic_k8s import serialization
from sematic_k8s.storage.base import Storage, artifact_key, read_part
from sematic_k8s.store.sql import SqlStore

log = logging.getLogger("sematic_k8s_server")
# the most of an artifact's bytes the server reads whole, to verify them: to serve them, or to settle its records
WHOLE_READ_BYTES = 256 << 20


def verifies(artifact_id: str, fmt: Any, size: Any, data: bytes) -> bool:
    """Whether ``data`` are the bytes of artifact ``artifact_id`` recorded with ``fmt`` and ``size``."""
    if size != len(data) or not isinstance(fmt, str):
        return False
    try:
        serialization.verify(artifact_id, fmt, data)
    except ValueError:
        return False
    return True


def settle(store: SqlStore, storage: Storage, artifact_id: str, written: Iterable[dict[str, Any]],
           lock: Any) -> bool:
    """Replace the recorded artifact by the first of its ``written`` records that its stored bytes verify, when
    they do not verify the recorded one (``lock``: held while replacing, the server's write lock). Whether it
    did."""
    recorded = store.get_artifact(artifact_id)
    if recorded is None or recorded.inline is not None:
        return False
    written = list(written)
    claimed = max([s for s in [recorded.size, *(w.get("size") for w in written)] if isinstance(s, int)], default=0)
    # bytes larger than every record says verify none of them: no more is read than the largest says, nor than the
    # server reads whole (a record's size is a client's: one saying 1 TB decides nothing, the stored bytes do)
    limit = min(claimed, WHOLE_READ_BYTES)
    try:
        part = read_part(storage, artifact_key(artifact_id), 0, limit + 1)
        data = part.data
    except KeyError:
        return False  # not stored yet: the recorded one stays until a conflicting write finds them
    except Exception as e:  # noqa: BLE001 - storage down: the next conflicting write checks again
        log.warning("artifact %s: its records conflict and its bytes could not be read: %s", artifact_id, e)
        return False
    if part.size > limit:
        if part.size <= claimed:
            log.warning("artifact %s: its records conflict, and its stored bytes (%s) are more than the server reads "
                        "to check them: the recorded one stays", artifact_id, part.size)
        return False
    if verifies(artifact_id, recorded.format, recorded.size, data):
        return False
    true = next((w for w in written if verifies(artifact_id, w.get("format"), w.get("size"), data)), None)
    if true is None:
        return False
    with lock:
        replaced = store.replace_artifact(recorded, true)
    if replaced:
        log.warning("artifact %s was recorded as %r (%r, %s bytes), which its stored bytes refute: recorded as "
                    "%r (%r, %r bytes) instead", artifact_id, recorded.type_name, recorded.format, recorded.size,
                    true.get("type_name"), true.get("format"), true.get("size"))
    return replaced
