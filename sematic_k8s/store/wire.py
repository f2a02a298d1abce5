"""Records and batches as JSON, the form they travel in between the HTTP store and the server (both use it):
datetimes as ISO 8601 UTC strings, inline artifact bytes as base64 (checked against their content id on the way
in), a batch in parts applied in order."""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as dt
import json
from typing import Any, TypeVar

from sematic_k8s import serialization
from sematic_k8s.store.records import ArtifactRecord, Batch, check_resolution_updates, check_sequence

DATETIME_FIELDS = frozenset({"created_at", "started_at", "ended_at", "heartbeat_at"})
# a batch's parts in the order one transaction applies them: each part lands after what it may reference
_BATCH_SECTIONS = ("new_resolutions", "artifacts", "new_runs", "run_updates", "resolution_updates")
R = TypeVar("R")


def _default(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, bytes):  # an artifact's inline bytes
        return base64.b64encode(v).decode()
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, default=_default, separators=(",", ":")).encode()


def parse_datetime(v: Any) -> dt.datetime | None:
    """An ISO 8601 string (``...Z`` or with an offset, or naive UTC) -> a naive UTC datetime."""
    if v is None or isinstance(v, dt.datetime):
        return v
    parsed = dt.datetime.fromisoformat(v)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return parsed


def _with_datetimes(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: parse_datetime(v) if k in DATETIME_FIELDS else v for k, v in fields.items()}


def batch_to_json(batch: Batch) -> dict[str, Any]:
    if batch.clones:
        raise ValueError("run clones are copied inside a SQL store; the HTTP store takes whole runs")
    doc = {f.name: copy.deepcopy(getattr(batch, f.name)) for f in dataclasses.fields(batch)
           if f.name not in ("clones", "hits", "in_order")}  # dataclasses.asdict, without them (in_order: the client's)
    doc["new_runs"].update((run_id, hit.fields()) for run_id, hit in batch.hits.items())  # the server: new runs
    return doc


def halves(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A batch's JSON form as two batches, the first applied before the second (:data:`_BATCH_SECTIONS`' order);
    None when it holds a single record."""
    items: list[tuple[str, Any]] = [(name, item) for name in _BATCH_SECTIONS
                                    for item in (doc.get(name) or [] if name == "new_resolutions"
                                                 else (doc.get(name) or {}).items())]
    if len(items) < 2:
        return None

    def part(chunk: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {name: [] if name == "new_resolutions" else {} for name in _BATCH_SECTIONS}
        out["fence"] = doc.get("fence") or {}  # every part is checked as the whole batch would be (and numbered)
        for name, item in chunk:
            if name == "new_resolutions":
                out[name].append(item)
            else:
                out[name][item[0]] = item[1]
        return out

    middle = len(items) // 2
    return part(items[:middle]), part(items[middle:])


def batch_from_json(doc: dict[str, Any]) -> Batch:
    """A Batch from its JSON form, with datetime fields parsed back. ValueError for a sequence without its fence
    (:func:`~sematic_k8s.store.records.check_sequence`), or a resolution's tags, note, labels_version or driver_epoch
    set (:func:`~sematic_k8s.store.records.check_resolution_updates`)."""
    fence, sequence = dict(doc.get("fence") or {}), dict(doc.get("sequence") or {})
    check_sequence(fence, sequence)
    check_resolution_updates(doc.get("resolution_updates") or {})
    return Batch(
        new_runs={k: _with_datetimes(v) for k, v in (doc.get("new_runs") or {}).items()},
        run_updates={k: _with_datetimes(v) for k, v in (doc.get("run_updates") or {}).items()},
        new_resolutions=[_with_datetimes(r) for r in doc.get("new_resolutions") or []],
        resolution_updates={k: _with_datetimes(v) for k, v in (doc.get("resolution_updates") or {}).items()},
        artifacts={k: _artifact_from_json(k, v) for k, v in (doc.get("artifacts") or {}).items()},
        fence=fence,
        sequence=sequence,
    )


def _artifact_from_json(artifact_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    """An artifact of a batch: inline bytes decoded from base64 and checked against the content id and its
    size (the writer is a client: bytes that do not hash to the id, or a size they refute, are refused, never
    recorded)."""
    fields = _with_datetimes(doc)
    inline = fields.get("inline")
    if inline is not None:
        if not isinstance(inline, str):
            raise ValueError(f"artifact {artifact_id}: inline must be base64 text")
        fields["inline"] = base64.b64decode(inline, validate=True)
        serialization.verify(str(fields.get("id", artifact_id)), str(fields.get("format")), fields["inline"])
        if fields.get("size") != len(fields["inline"]):  # a size its bytes refute would replace a true record
            raise ValueError(f"artifact {artifact_id}: its size says {fields.get('size')!r} bytes, its inline bytes "
                             f"are {len(fields['inline'])}: send their length")
    return fields


def record_from_json(cls: type[R], doc: dict[str, Any]) -> R:
    """A RunRecord / ResolutionRecord / ArtifactRecord from its ``to_dict()`` form (extra keys ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    fields = {k: parse_datetime(v) if k in DATETIME_FIELDS else v for k, v in doc.items() if k in names}
    inline = doc.get("inline")
    if cls is ArtifactRecord and isinstance(inline, str):
        fields["inline"] = base64.b64decode(inline)
    return cls(**fields)
