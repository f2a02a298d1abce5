"""What a resolution writes: the records of its next batch (one store transaction per flush), and the
bytes of its artifacts, each value serialized and stored once. Shared by the planner and the loop.

With an ``inline_limit`` (the embedded resolver, whose funcs run in its own process), an artifact of at most
that many bytes is kept inline with its record in the store, not in a file of its own: one row in the
batch's transaction instead of a file written (and fsynced by the disk) per small value."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sematic_k8s import graph, limits, serialization
from sematic_k8s.errors import ValueRefused
from sematic_k8s.serialization import Value
from sematic_k8s.storage.base import Storage, artifact_key, artifact_loader, inline_loader, put_artifact
from sematic_k8s.store.base import Store
from sematic_k8s.store.records import Batch, Formats, utcnow

INLINE_LIMIT = limits.INLINE_BYTES  # bytes: the embedded resolver keeps artifacts up to this size inline with their
# records


class Recorder:
    """The next batch of records, the artifacts this resolution already knows, and what it noted on its runs."""

    def __init__(self, store: Store, storage: Storage, *, inline_limit: int = 0) -> None:
        self.store, self.storage = store, storage
        self.inline_limit = inline_limit
        self.batch = Batch()
        self.fence: dict[str, int] = {}  # resolution id -> the driver epoch this process took it over with
        self.known_artifacts: set[str] = set()
        self.written: set[str] = set()  # artifacts whose bytes this resolution computed and stored
        self.notes: dict[str, dict[str, Any]] = {}  # run id -> what was noted on it (its column is written whole)
        self.canceled: set[str] = set()  # resolutions whose failed end a write held, recorded canceled (Store.write)
        self.load = artifact_loader(storage, self._inline_bytes)

    def _inline_bytes(self, artifact_id: str) -> bytes | None:
        rec = self.store.get_artifact(artifact_id)
        return rec.inline if rec is not None else None

    def value(self, value: Any, returned_by: str | None = None) -> Value:
        """Serialize a value once, store its bytes (inline when small enough), and record its artifact. A value
        computed again is stored again although known (a rerun knows what the runs it re-executes recorded): bytes
        there that are corrupt are rewritten. ``returned_by``: the func whose output it is (named if it does not load
        back, :class:`~sematic_k8s.errors.Unloadable`)."""
        s = serialization.serialize(value, returned_by)
        if s.id not in self.written:
            if len(s.payload) <= self.inline_limit:
                rec = {**s.record(), "inline": s.payload}
            else:
                rec = put_artifact(self.storage, s)
            rec["created_at"] = utcnow()
            self.batch.artifacts[s.id] = rec
            self.written.add(s.id)
            self.known_artifacts.add(s.id)
        return Value(s.id, s.format, s.type_name, value)

    def materialize(self, structure: Any) -> Value:
        """A Value for an input or output structure of the graph (its leaves Values): reused as is, or built and
        serialized once (:meth:`value`)."""
        if isinstance(structure, Value):
            return structure
        return self.value(graph.map_leaves(structure, lambda v: v.value))

    def stored_value(self, artifact_id: str, fmt: str | None = None, type_name: str = "",
                     inline: bytes | None = None) -> Value:
        """A Value for a recorded artifact (``inline``: its bytes, when its record holds them); its bytes are
        read and verified on first use."""
        if fmt is None:
            rec = self.store.get_artifact(artifact_id)
            if rec is None:
                raise LookupError(f"artifact {artifact_id} is not recorded")
            fmt, type_name, inline = rec.format, rec.type_name, rec.inline
        self.known_artifacts.add(artifact_id)
        if inline is not None:
            if self.inline_limit:
                return Value(artifact_id, fmt, type_name, load=inline_loader(inline))
            self._spill(artifact_id, fmt, inline)
        return Value(artifact_id, fmt, type_name, load=self.load)

    def stored_values(self, formats: dict[str, Formats]) -> dict[str, Value]:
        """:meth:`stored_value` of many recorded artifacts (``formats`` as :meth:`formats` gives them). With an inline
        limit, the small JSON ones whose bytes the records hold are verified and decoded together, now (a rerun's
        thousands of reused outputs); one that does not verify is left to fail, naming itself, where it is used."""
        out: dict[str, Value] = {}
        eager: list[tuple[str, str, bytes]] = []
        for artifact_id, (fmt, type_name, inline, _) in formats.items():
            if inline is not None and self.inline_limit and fmt == serialization.JSON:
                if serialization.content_id(fmt, inline) == artifact_id:
                    eager.append((artifact_id, type_name, inline))
                    continue
            out[artifact_id] = self.stored_value(artifact_id, fmt, type_name, inline)
        try:
            decoded: list[Any] | None = serialization.deserialize_json_many([payload for _, _, payload in eager])
        except ValueRefused:  # one names a class this rerun may not load: each fails, naming itself, where it is used
            decoded = None
        for i, (artifact_id, type_name, payload) in enumerate(eager):
            out[artifact_id] = (Value(artifact_id, serialization.JSON, type_name, load=inline_loader(payload))
                                if decoded is None else Value(artifact_id, serialization.JSON, type_name, decoded[i]))
        self.known_artifacts.update(formats)
        return out

    def formats(self, ids: Iterable[str]) -> dict[str, Formats]:
        """``{id: (format, type_name, inline bytes, size)}`` of recorded artifacts, for :meth:`stored_value` (and the
        check of stored bytes, by size): the store's light read of them (no summaries), SQL and HTTP alike."""
        return self.store.artifact_formats(ids)

    def _spill(self, artifact_id: str, fmt: str, inline: bytes) -> None:
        """Copy an inline artifact's bytes to storage, where workers in other processes read their inputs
        (a value recorded inline by an embedded resolution, reused here by a cache hit or a rerun)."""
        try:
            serialization.verify(artifact_id, fmt, inline)
        except ValueError:
            return  # corrupt: never copied; reading it fails, naming it
        self.storage.put(artifact_key(artifact_id), inline, repair=True)

    def stored_artifact(self, artifact: dict[str, Any]) -> Value:
        """A Value for an artifact a worker stored (and described); recorded unless known already."""
        if artifact["id"] not in self.known_artifacts:
            self.batch.artifacts[artifact["id"]] = {**artifact, "created_at": utcnow()}
        return self.stored_value(artifact["id"], artifact["format"], artifact["type_name"])

    def note(self, run_id: str, **notes: Any) -> dict[str, Any]:
        """A run's notes with ``notes`` added: what to record (the whole dict, so nothing noted earlier is lost)."""
        merged = self.notes.setdefault(run_id, {})
        merged.update(notes)
        return dict(merged)

    def discard(self) -> None:
        """Drop what is not written yet (its resolution was ended by another process: it may not be)."""
        self.batch = Batch()

    def write(self) -> None:
        """Write the batch to the store; it is kept (and what follows joins it) until a write succeeds, so a
        store that gave up on an outage loses nothing (writes are idempotent: sending it again is harmless)."""
        if self.batch:
            self.batch.fence.update(self.fence)
            self.store.write(self.batch, canceled=self.canceled)
            self.batch = Batch()
