"""Pick an artifact storage from one URL: ``file:///path`` or ``s3://bucket/prefix`` (see backends.STORAGES)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from sematic_k8s import backends
from sematic_k8s.storage.base import Storage


def storage_url(storage: Storage) -> str:
    """The URL that :func:`storage_from_url` turns back into ``storage``."""
    url = getattr(storage, "url", None)
    if not url:
        raise ValueError(f"{type(storage).__name__} has no URL for workers to reach it")
    return url


def storage_from_url(url: str, **options: Any) -> Storage:
    """A Storage for ``url`` (``options`` for its class, e.g. ``retry_window``); a clear error for anything
    else."""
    try:
        storage_class = backends.load(backends.STORAGES, urlparse(url).scheme)
    except LookupError:
        raise ValueError(f"unsupported storage URL {url!r}: use file:///path or s3://bucket/prefix") from None
    return storage_class.from_url(url, **options)
