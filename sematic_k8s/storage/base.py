"""The one interface every artifact storage implements (local directory here; S3 later)."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Protocol, cast

from sematic_k8s import serialization

log = logging.getLogger("sematic_k8s")


class Storage(Protocol):
    """Bytes by key. Artifact keys are content-addressed, so a put of an existing key is a no-op."""

    def put(self, key: str, data: bytes, *, repair: bool = False) -> None:
        """Write ``data`` at ``key`` unless something is there already. With ``repair`` (for a content id the
        caller just computed from ``data``), bytes there that differ from ``data`` are corrupt: rewrite them."""

    def get(self, key: str) -> bytes:
        """The bytes at ``key``; KeyError when absent."""

    def exists(self, key: str) -> bool: ...

    def append(self, key: str, data: bytes, *, append_id: str | None = None) -> None:
        """Append to a (log) object, creating it if needed. Once: a write the storage retries because its answer
        was lost (S3) does not add ``data`` again. ``append_id`` (see :func:`append_id`): an append that another
        process may make again (a restarted driver); one with an id the object has recorded is skipped."""


class Part(NamedTuple):
    """Some bytes of an object: where they start in it, and the object's whole size."""

    start: int
    data: bytes
    size: int


def part_bounds(start: int, limit: int, size: int) -> tuple[int, int]:
    """(first byte, one past the last) of at most ``limit`` bytes of a ``size``-byte object from ``start``
    (negative: its last ``-start`` bytes, at most ``limit`` of them)."""
    begin = max(0, size - min(-start, limit)) if start < 0 else min(start, size)
    return begin, min(size, begin + limit)


def read_part(storage: Storage, key: str, start: int, limit: int) -> Part:
    """At most ``limit`` bytes of the object at ``key`` from byte ``start`` (negative: its last ``-start``), with
    where they start and the object's size (a log followed while it grows, or too large to read whole); KeyError
    when absent. A storage that reads a part alone (a local file, an S3 range) does so; others read the whole."""
    reader = getattr(storage, "read_part", None)
    if reader is not None:
        return cast(Part, reader(key, start, limit))
    data = storage.get(key)
    begin, end = part_bounds(start, limit, len(data))
    return Part(begin, data[begin:end], len(data))


def delete(storage: Storage, key: str) -> bool:
    """Delete the object at ``key`` when the storage can (a local directory, S3: their ``delete``; not every storage
    has one, as not every one presigns); whether it could. Gone already is fine; raises what the storage raises. Only
    for objects no record names (a worker's stored task): artifacts and logs are never deleted."""
    deleter = getattr(storage, "delete", None)
    if deleter is None:
        return False
    deleter(key)
    return True


def keys(storage: Storage, prefix: str) -> list[str] | None:
    """The keys under the folder ``prefix`` (ending in '/') when the storage can list them (a local directory, S3:
    their ``keys``), else None. Raises what the storage raises. For objects no record names (workers' stored tasks,
    found by whoever drives their resolution next)."""
    lister = getattr(storage, "keys", None)
    return None if lister is None else cast(list[str], lister(prefix))


APPEND_ID = re.compile(r"[0-9a-f]{12}")  # what storages record of an append: 12 lowercase hex digits


def append_id(*parts: str | int) -> str:
    """The id of an append that may be made again by another process: the same ``parts``, the same id."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:12]


def check_append_id(value: str) -> str:
    """``value``, if it is an append id; else ValueError saying so."""
    if not isinstance(value, str) or not APPEND_ID.fullmatch(value):
        raise ValueError(f"append id {value!r} is not 12 lowercase hex digits: make it with "
                         "sematic_k8s.storage.base.append_id(...)")
    return value


def artifact_key(artifact_id: str) -> str:
    return f"artifacts/{artifact_id[:2]}/{artifact_id}"


# at most this many ``exists``/``size`` asked at once (S3: a HEAD each): an S3 client's connection pool (botocore's
# max_pool_connections, 10); more at once were connections opened and thrown away, each said by urllib3
MISSING_CHECKS = 10
# the bytes read at once to tell a record of the wrong size from replaced bytes (unmatched: read only then, in parts)
VERIFY_READ_BYTES = 8 << 20
PRESENT = -1  # :func:`unmatched`'s answer of a storage without ``size``: the object is there, its size not known


def unmatched(storage: Storage, recorded: Mapping[str, int | None],
              formats: Mapping[str, str] | None = None) -> dict[str, int | None]:
    """Those of ``recorded`` (key -> the size its record says its object has; None: not recorded) whose object is gone
    from ``storage`` (deleted by hand or by a lifecycle rule: None) or holds another number of bytes than recorded
    (replaced by other bytes: the size it holds), each asked once (S3: a HEAD each; a local file: a stat): the size is
    what that one request answers anyway, so telling replaced bytes costs nothing more (a storage without ``size``
    answers presence alone). The first is asked alone: an outage is ridden out by that one call (the storage's own
    retries, for the retry window: said once, as any call's), not by up to :data:`MISSING_CHECKS` at once, each saying
    it (was: 16 warnings, and as many calls retried against the storage out of reach). Raises what the storage raises
    (out of reach past the retry window, refused): an outage is never an answer of "gone".

    A record is client-written: one recorded ahead by another client with a wrong size must not make true bytes
    unusable. So an object of another size whose artifact's format ``formats`` gives (key -> format) is read once
    (only then: the hot path stays one request a key) and is matched when its bytes hash to its artifact's id (the
    key's last part): the record's size is what is wrong, said once here."""
    sizer = getattr(storage, "size", None)
    ask: Callable[[str], int | None] = (cast(Callable[[str], "int | None"], sizer) if sizer is not None
                                        else lambda key: PRESENT if storage.exists(key) else None)
    asked = sorted(recorded)
    if not asked:
        return {}
    found = [ask(asked[0])]
    rest = asked[1:]
    if len(rest) <= 1:
        found += [ask(key) for key in rest]
    else:
        with ThreadPoolExecutor(min(MISSING_CHECKS, len(rest)), thread_name_prefix="sk-exists") as pool:
            found += pool.map(ask, rest)
    bad = {key: size for key, size in zip(asked, found, strict=True)
           if size is None or (size != PRESENT and (want := recorded[key]) is not None and size != want)}
    return {key: size for key, size in bad.items() if not _record_lies(storage, key, size, recorded[key], formats)}


def _record_lies(storage: Storage, key: str, size: int | None, recorded: int | None,
                 formats: Mapping[str, str] | None) -> bool:
    """Whether the object at ``key``, of ``size`` bytes where its record says ``recorded``, holds its artifact's bytes
    (read once, in parts of :data:`VERIFY_READ_BYTES`: they hash to the id with its format): then the record's size is
    wrong, not the bytes."""
    fmt = (formats or {}).get(key)
    if size is None or size == PRESENT or fmt is None:
        return False
    hasher = serialization.id_hasher(fmt)
    start = 0
    while start < size:
        try:
            part = read_part(storage, key, start, VERIFY_READ_BYTES)
        except KeyError:  # gone since its size was asked: a miss, as told
            return False
        if part.size != size or not part.data:  # replaced meanwhile: a miss, as told
            return False
        hasher.update(part.data)
        start += len(part.data)
    artifact_id = key.rsplit("/", 1)[1]
    if hasher.hexdigest() != artifact_id:
        return False
    log.warning("artifact %s: its record says %s bytes, but its stored bytes (%s) are %s and hash to its id: the "
                "record's size is wrong (written ahead by another client?); using them", artifact_id, recorded,
                location(storage, key), size)
    return True


def location(storage: Storage, key: str) -> str:
    """Where ``key`` is, for messages: ``s3://bucket/prefix/<key>``, ``file:///.../<key>``."""
    url = str(getattr(storage, "url", "") or "storage").split("?")[0].rstrip("/")
    return f"{url}/{key}"


def log_key(run_id: str) -> str:
    return f"logs/{run_id}.log"


def append_attempt_logs(storage: Storage, run_id: str, attempt: int, text: str) -> None:
    """Add what one attempt of a run printed to the run's log, once. Its id is the attempt's, whoever appends:
    the worker (its own capture), its executor (the capture its outcome document carries; the last lines of a
    worker that ended without an outcome, which stand in for a capture that never landed), or a restarted driver
    doing either again. So the first of these to land is the attempt's output in the log and the others add
    nothing (the lines a dying worker printed after its capture are in its run's error)."""
    if text:
        storage.append(log_key(run_id), text.encode(), append_id=append_id("attempt logs", run_id, attempt))


def put_artifact(storage: Storage, s: serialization.Serialized) -> dict[str, Any]:
    """Store a serialized value's bytes under its content id (rewriting corrupt ones); returns its record."""
    storage.put(artifact_key(s.id), s.payload, repair=True)
    return s.record()


class KeyGone(KeyError):
    """A storage's ``get`` of a key whose object is not there, naming where it was (``where``: its address, never
    a presigned URL's query): S3's 404 ``NoSuchKey`` to a worker's presigned GET."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(key)
        self.where = where


class ArtifactMissing(KeyError):
    """A recorded artifact whose bytes are not in storage (a KeyError, as a storage's ``get`` raises); ``where``:
    the object that was deleted, when the storage named it (:class:`KeyGone`)."""

    def __init__(self, artifact_id: str, where: str | None = None) -> None:
        deleted = f": {where} was deleted (by hand or by a lifecycle rule)" if where else ""
        super().__init__(f"artifact {artifact_id} is recorded but its bytes are not in storage{deleted}; "
                         f"{serialization.REPAIR}")

    def __str__(self) -> str:  # the message, not KeyError's quoted repr of it
        return str(self.args[0])


def artifact_loader(storage: Storage, inline: Callable[[str], bytes | None] | None = None
                    ) -> Callable[[serialization.Value], Any]:
    """A Value loader that reads an artifact's bytes from ``storage`` and verifies them. ``inline``: where to
    find the bytes of an artifact kept inline with its record (not in storage), by id."""
    def load(v: serialization.Value) -> Any:
        try:
            payload = storage.get(artifact_key(v.id))
        except KeyError as e:
            found = inline(v.id) if inline is not None else None
            if found is None:
                raise ArtifactMissing(v.id, e.where if isinstance(e, KeyGone) else None) from None
            payload = found
        return serialization.load_recorded(v, payload)
    return load


def inline_loader(payload: bytes) -> Callable[[serialization.Value], Any]:
    """A Value loader for an artifact whose (inline) bytes are at hand: verified, then deserialized."""
    def load(v: serialization.Value) -> Any:
        return serialization.load_recorded(v, payload)
    return load
