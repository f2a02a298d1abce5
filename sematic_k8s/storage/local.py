"""Artifact storage in a local directory."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sematic_k8s.errors import DiskFull, disk_full

log = logging.getLogger("sematic_k8s")


class LocalStorage:
    """Keys are relative paths under ``root``; writes are atomic (temp file + rename). A write that finds the disk
    full raises :class:`~sematic_k8s.errors.DiskFull` and leaves nothing of itself: no temp file, no partial
    value under its key, no part of a log line."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._dirs: set[Path] = set()

    @classmethod
    def from_url(cls, url: str, **_: Any) -> LocalStorage:
        """The storage of a ``file:///path`` URL (options for remote storages, such as ``retry_window``,
        do not apply)."""
        return cls(urlparse(url).path)

    @property
    def url(self) -> str:
        return self.root.resolve().as_uri()

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"storage key {key!r} is not a plain relative path")
        return self.root.joinpath(*parts)

    def _parent(self, path: Path) -> None:
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)

    def put(self, key: str, data: bytes, *, repair: bool = False) -> None:
        """Write ``data`` at ``key`` unless a file is there; with ``repair``, also when the file there holds
        other bytes (see :class:`~sematic_k8s.storage.base.Storage`)."""
        path = self._path(key)
        if path.exists():
            if not repair or (path.stat().st_size == len(data) and path.read_bytes() == data):
                return
            log.warning("%s is corrupt (other bytes than its content id says): rewriting it", path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self._parent(path)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)  # what it took of the disk is given back
            if disk_full(e):
                raise DiskFull.at(self.root, e) from None
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def append(self, key: str, data: bytes) -> None:
        """One ``O_APPEND`` write: nothing is retried, so nothing is repeated (S3's appends need ids for that)."""
        path = self._path(key)
        try:
            self._parent(path)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                start = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                except OSError:
                    os.ftruncate(fd, start)  # no part of ``data``: the log reads as it did
                    raise
            finally:
                os.close(fd)
        except OSError as e:
            if disk_full(e):
                raise DiskFull.at(self.root, e) from None
            raise
