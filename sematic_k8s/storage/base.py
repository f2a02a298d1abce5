"""The one interface every artifact storage implements (local directory here; S3 later)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from sematic_k8s import serialization


class Storage(Protocol):
    """Bytes by key. Artifact keys are content-addressed, so a put of an existing key is a no-op."""

    def put(self, key: str, data: bytes, *, repair: bool = False) -> None:
        """Write ``data`` at ``key`` unless something is there already. With ``repair`` (for a content id the
        caller just computed from ``data``), bytes there that differ from ``data`` are corrupt: rewrite them."""

    def get(self, key: str) -> bytes:
        """The bytes at ``key``; KeyError when absent."""

    def exists(self, key: str) -> bool: ...

    def append(self, key: str, data: bytes) -> None:
        """Append to a (log) object, creating it if needed. Once: a write the storage retries because its answer
        was lost (S3) does not add ``data`` again."""


def artifact_key(artifact_id: str) -> str:
    return f"artifacts/{artifact_id[:2]}/{artifact_id}"


def log_key(run_id: str) -> str:
    return f"logs/{run_id}.log"


def put_artifact(storage: Storage, s: serialization.Serialized) -> dict[str, Any]:
    """Store a serialized value's bytes under its content id (rewriting corrupt ones); returns its record."""
    storage.put(artifact_key(s.id), s.payload, repair=True)
    return s.record()


class ArtifactMissing(KeyError):
    """A recorded artifact whose bytes are not in storage (a KeyError, as a storage's ``get`` raises)."""

    def __init__(self, artifact_id: str) -> None:
        super().__init__(f"artifact {artifact_id} is recorded but its bytes are not in storage; {serialization.REPAIR}")

    def __str__(self) -> str:  # the message, not KeyError's quoted repr of it
        return str(self.args[0])


def artifact_loader(storage: Storage, inline: Callable[[str], bytes | None] | None = None
                    ) -> Callable[[serialization.Value], Any]:
    """A Value loader that reads an artifact's bytes from ``storage`` and verifies them. ``inline``: where to
    find the bytes of an artifact kept inline with its record (not in storage), by id."""
    def load(v: serialization.Value) -> Any:
        try:
            payload = storage.get(artifact_key(v.id))
        except KeyError:
            found = inline(v.id) if inline is not None else None
            if found is None:
                raise ArtifactMissing(v.id) from None
            payload = found
        serialization.verify(v.id, v.format, payload)
        return serialization.deserialize(v.format, payload)
    return load


def inline_loader(payload: bytes) -> Callable[[serialization.Value], Any]:
    """A Value loader for an artifact whose (inline) bytes are at hand: verified, then deserialized."""
    def load(v: serialization.Value) -> Any:
        serialization.verify(v.id, v.format, payload)
        return serialization.deserialize(v.format, payload)
    return load
