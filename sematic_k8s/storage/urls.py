"""Pick an artifact storage from one URL: ``file:///path`` or ``s3://bucket/prefix``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from sematic_k8s.storage.base import Storage
from sematic_k8s.storage.local import LocalStorage


def storage_url(storage: Storage) -> str:
    """The URL that :func:`storage_from_url` turns back into ``storage``."""
    if isinstance(storage, LocalStorage):
        return Path(storage.root).resolve().as_uri()
    url = getattr(storage, "url", None)
    if not url:
        raise ValueError(f"{type(storage).__name__} has no URL for workers to reach it")
    return url


def storage_from_url(url: str) -> Storage:
    """A Storage for ``url``; a clear error for anything else."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(parsed.path)
    if parsed.scheme == "s3":
        from sematic_k8s.storage.s3 import S3Storage

        return S3Storage.from_url(url)
    raise ValueError(f"unsupported storage URL {url!r}: use file:///path or s3://bucket/prefix")
