"""What a resolution writes: the records of its next batch (one store transaction per flush), and the
bytes of its artifacts, each value serialized and stored once. Shared by the planner and the loop."""

from __future__ import annotations

from typing import Any

from sematic_k8s import serialization
from sematic_k8s.serialization import Value
from sematic_k8s.storage.base import Storage, artifact_loader, put_artifact
from sematic_k8s.store.base import Store
from sematic_k8s.store.records import Batch, utcnow


class Recorder:
    """The next batch of records, and the artifacts this resolution already knows."""

    def __init__(self, store: Store, storage: Storage) -> None:
        self.store, self.storage = store, storage
        self.batch = Batch()
        self.known_artifacts: set[str] = set()
        self.load = artifact_loader(storage)

    def value(self, value: Any) -> Value:
        """Serialize a value once, store its bytes, and record its artifact."""
        s = serialization.serialize(value)
        if s.id not in self.known_artifacts:
            self.batch.artifacts[s.id] = {**put_artifact(self.storage, s), "created_at": utcnow()}
            self.known_artifacts.add(s.id)
        return Value(s.id, s.format, s.type_name, value)

    def stored_value(self, artifact_id: str, fmt: str | None = None, type_name: str = "") -> Value:
        """A Value for a recorded artifact; its bytes are read and verified on first use."""
        if fmt is None:
            rec = self.store.get_artifact(artifact_id)
            if rec is None:
                raise LookupError(f"artifact {artifact_id} is not recorded")
            fmt, type_name = rec.format, rec.type_name
        self.known_artifacts.add(artifact_id)
        return Value(artifact_id, fmt, type_name, load=self.load)

    def stored_artifact(self, artifact: dict[str, Any]) -> Value:
        """A Value for an artifact a worker stored (and described); recorded unless known already."""
        if artifact["id"] not in self.known_artifacts:
            self.batch.artifacts[artifact["id"]] = {**artifact, "created_at": utcnow()}
        return self.stored_value(artifact["id"], artifact["format"], artifact["type_name"])

    def write(self) -> None:
        """Write the batch to the store; it is kept (and what follows joins it) until a write succeeds, so a
        store that gave up on an outage loses nothing (writes are idempotent: sending it again is harmless)."""
        if self.batch:
            self.store.write(self.batch)
            self.batch = Batch()
