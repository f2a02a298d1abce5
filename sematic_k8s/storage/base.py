"""The one interface every artifact storage implements (local directory here; S3 later)."""

from __future__ import annotations

from typing import Protocol


class Storage(Protocol):
    """Bytes by key. Artifact keys are content-addressed, so a put of an existing key is a no-op."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes:
        """The bytes at ``key``; KeyError when absent."""

    def exists(self, key: str) -> bool: ...

    def append(self, key: str, data: bytes) -> None:
        """Append to a (log) object, creating it if needed."""


def artifact_key(artifact_id: str) -> str:
    return f"artifacts/{artifact_id[:2]}/{artifact_id}"


def log_key(run_id: str) -> str:
    return f"logs/{run_id}.log"
