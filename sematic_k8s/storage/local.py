"""Artifact storage in a local directory.

A log appended to with ids (:func:`~sematic_k8s.storage.base.append_id`) keeps them beside it, in a hidden file of
its own (``logs/.<run id>.log.appends``: a line ``<id> <offset> <length>`` per append, written before its bytes),
so the log's bytes stay plain for every reader. Appends to one log hold an exclusive ``flock`` on it.

A write goes through a temporary file beside its key (``.<name>.<pid>.<thread>.tmp``), renamed over it when whole. A
writer killed between (kill -9, the OOM killer, a node lost) leaves that file: the first write of a process into a
directory (again each :data:`PARTIAL_AGE` seconds) removes the temporary files there older than :data:`PARTIAL_AGE`,
an hour, no write's that still runs (a write keeps its file's time fresh; one held that long fails at its rename).

Every call says a failure of its file system as the storage's error (:meth:`LocalStorage.failed`): a full disk as
:class:`~sematic_k8s.errors.DiskFull`, any other (a directory it may not read, a file in place of a directory, an I/O
error) as :class:`~sematic_k8s.errors.StorageError` naming the path and what to do; never a bare OSError, and never an
answer of "absent" for a key it could not look at.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sematic_k8s.errors import DiskFull, StorageError, StorageLinkRefused, disk_full
from sematic_k8s.storage.base import APPEND_ID, Part, check_append_id, part_bounds

log = logging.getLogger("sematic_k8s")
# seconds after which a write's temporary file is taken for a killed writer's and removed (see the module)
PARTIAL_AGE = 3600.0


class LocalStorage:
    """Keys are relative paths under ``root``; writes are atomic (temp file + rename). A write that finds the disk
    full raises :class:`~sematic_k8s.errors.DiskFull` and leaves nothing of itself: no temp file, no partial
    value under its key, no part of a log line."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self.failed("make", self.root, e) from None
        self._dirs: dict[Path, float] = {}  # a directory written into -> when its partial files were last cleared

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

    def failed(self, op: str, path: Path, e: OSError) -> DiskFull | StorageError:
        """The error of ``e``, met by the ``op`` of ``path``: DiskFull for a full disk (or quota), else a StorageError
        naming the path, what the file system said, and what to do."""
        if disk_full(e):
            return DiskFull.at(self.root, e)
        if e.errno == errno.EISDIR:  # a directory where a key's file goes (made by hand, a bad copy)
            fix = f"move that directory out of {self.root} (nothing of it was changed)"
            return StorageError(f"local storage could not {op} {path}: a directory is there, not a file: {fix}; then "
                                "try again", fix)
        if e.errno == errno.ELOOP:
            link = next((p for p in (path, *path.parents) if p.is_symlink()), path)
            fix = f"remove the link {link} (or make it name a file or directory that is no link back)"
            return StorageError(f"local storage could not {op} {path}: {link} is a symbolic link that loops (ELOOP): "
                                f"{fix}; then try again", fix)
        said = e.strerror or str(e)
        name = errno.errorcode.get(e.errno or 0)
        at = f" at {e.filename}" if e.filename and os.fspath(e.filename) != os.fspath(path) else ""
        fix = (f"make {self.root} and everything under it readable and writable by this process (uid {os.geteuid()}), "
               "each of its directories a directory, its disk healthy")
        return StorageError(f"local storage could not {op} {path}: {said}{f' ({name})' if name else ''}{at}: {fix}; "
                            "then try again", fix)

    def _parent(self, path: Path) -> None:
        """Make ``path``'s directory; at its first write (again each :data:`PARTIAL_AGE`), clear its partial files."""
        now = time.monotonic()
        cleared = self._dirs.get(path.parent)
        if cleared is None or now - cleared >= PARTIAL_AGE:
            path.parent.mkdir(parents=True, exist_ok=True)
            clear_partial(path.parent)
            self._dirs[path.parent] = now

    def put(self, key: str, data: bytes, *, repair: bool = False) -> None:
        """Write ``data`` at ``key`` unless a file is there; with ``repair``, also when the file there holds
        other bytes (see :class:`~sematic_k8s.storage.base.Storage`)."""
        path = self._path(key)
        there = self._there(path)
        if there and path.is_dir():
            raise self.failed("write", path, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path)))
        try:
            if there and (not repair or (path.stat().st_size == len(data) and path.read_bytes() == data)):
                return
        except OSError as e:
            raise self.failed("read", path, e) from None
        if there:
            log.warning("%s is corrupt (other bytes than its content id says): rewriting it", path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self._parent(path)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)  # what it took of the disk is given back
            raise self.failed("write", path, e) from None

    def _open(self, key: str) -> int:
        """A descriptor of ``key``'s file, to read, not followed if it is a symbolic link (the directories above it
        are: a storage may keep ``artifacts`` on another disk): KeyError when absent, :class:`StorageLinkRefused`
        for a link."""
        path = self._path(key)
        try:
            return os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise KeyError(key) from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StorageLinkRefused(key) from None
            raise self.failed("read", path, e) from None

    def get(self, key: str) -> bytes:
        fd = self._open(key)
        try:
            with os.fdopen(fd, "rb") as f:
                return f.read()
        except OSError as e:
            raise self.failed("read", self._path(key), e) from None

    def _stat(self, path: Path) -> os.stat_result | None:
        """The file at ``path``'s stat, None only when it is absent (ENOENT); the storage's error when it cannot be
        looked at (``Path.exists`` answers False for a file in place of a directory, ENOTDIR: taken for gone)."""
        try:
            return os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self.failed("look at", path, e) from None

    def _there(self, path: Path) -> bool:
        """Whether a file is at ``path`` (:meth:`_stat`)."""
        return self._stat(path) is not None

    def exists(self, key: str) -> bool:
        return self._there(self._path(key))

    def size(self, key: str) -> int | None:
        """The number of bytes at ``key`` (one stat, as :meth:`exists`); None when absent."""
        found = self._stat(self._path(key))
        return None if found is None else found.st_size

    def delete(self, key: str) -> None:
        """Remove the file at ``key`` (a symbolic link there: the link alone); gone already is fine."""
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise self.failed("delete", path, e) from None

    def keys(self, prefix: str) -> list[str]:
        """The keys under the folder ``prefix`` (its files, at any depth; not a write's temporary file); none when it
        is absent. A directory it cannot list is the storage's error (``rglob`` skipped it, its keys silently left
        out). The folder is reached through links, as every key's path is, but a linked directory inside it is not
        listed (as ``rglob`` did not): the keys listed are deleted by the sweeps of stored tasks, and whoever may write
        the storage's directory could link any directory there (its files deleted), or the folder itself, twice (a
        listing without end)."""
        folder = self._path(prefix.rstrip("/"))

        def unlisted(e: OSError) -> None:
            if not isinstance(e, FileNotFoundError):  # absent, or gone while listed: no keys there
                raise self.failed("list", Path(e.filename or folder), e)

        found = []
        for top, _, files in os.walk(folder, onerror=unlisted):
            for name in files:
                path = Path(top, name)
                if not partial(name) and path.is_file():
                    found.append(path.relative_to(self.root).as_posix())
        return sorted(found)

    def read_part(self, key: str, start: int, limit: int) -> Part:
        """:func:`~sematic_k8s.storage.base.read_part`: only those bytes are read from the file."""
        fd = self._open(key)
        try:
            with os.fdopen(fd, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                begin, end = part_bounds(start, limit, size)
                f.seek(begin)
                return Part(begin, f.read(end - begin), size)
        except OSError as e:
            raise self.failed("read", self._path(key), e) from None

    def append(self, key: str, data: bytes, *, append_id: str | None = None) -> None:
        """One ``O_APPEND`` write, under an exclusive lock on the log. With ``append_id``: done once, also when
        another process made it before (a restarted driver): the id and where its bytes go are recorded first
        (see the module), so a writer killed before its bytes landed leaves an id that counts for nothing."""
        if append_id is not None:
            check_append_id(append_id)
        path = self._path(key)
        try:
            self._parent(path)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released when closed (or its process dies)
                ids = _Appends(path, fd)
                if append_id is None or ids.add(append_id, len(data)):
                    _write_all(fd, data)
            finally:
                os.close(fd)
        except OSError as e:
            raise self.failed("append to", path, e) from None


def partial(name: str) -> bool:
    """Whether a file's ``name`` is a write's temporary file (see the module)."""
    return name.startswith(".") and name.endswith(".tmp")


def clear_partial(folder: Path, age: float | None = None) -> list[str]:
    """Remove the writes' temporary files in ``folder`` (not below) last written more than ``age`` seconds ago
    (:data:`PARTIAL_AGE`): a killed writer's; their names. A file it cannot look at or remove is left (said at
    debug: the write that follows says its own trouble)."""
    oldest = time.time() - (PARTIAL_AGE if age is None else age)
    gone = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if partial(entry.name) and entry.is_file(follow_symlinks=False) \
                            and entry.stat(follow_symlinks=False).st_mtime < oldest:
                        os.unlink(entry.path)
                        gone.append(entry.name)
                except FileNotFoundError:  # renamed meanwhile (a write that ended), or removed by another
                    continue
    except OSError as e:
        log.debug("could not clear the partial writes in %s: %s", folder, e)
    if gone:
        log.info("removed %d partial write(s) older than %g s in %s (their writers were killed): %s", len(gone),
                 PARTIAL_AGE if age is None else age, folder, ", ".join(gone))
    return gone


def _write_all(fd: int, data: bytes) -> None:
    """Append ``data`` whole, or nothing of it: the log reads as it did."""
    start = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        os.ftruncate(fd, start)
        raise


class _Appends:
    """The ids a log's appends were made with, kept in a hidden file beside it (lines ``<id> <offset> <length>``),
    read by a writer holding the log's lock. An id counts once the log holds its bytes (offset + length <= the
    log's size): the last one's writer may have died before (or while) writing them, and its id is forgotten
    (with any part of its bytes)."""

    def __init__(self, log: Path, fd: int) -> None:
        self.path = log.with_name(f".{log.name}.appends")
        self.fd = fd
        self.landed: set[str] = set()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        size = os.fstat(fd).st_size
        kept: list[bytes] = []
        void: int | None = None  # where the bytes of an append that did not finish start
        for line in raw.split(b"\n")[:-1]:  # a last line without its newline: its writer died writing it
            parts = line.decode(errors="replace").split(" ")
            if len(parts) == 3 and APPEND_ID.fullmatch(parts[0]) and parts[1].isdigit() and parts[2].isdigit():
                offset, length = int(parts[1]), int(parts[2])
                if offset + length <= size:
                    kept.append(line + b"\n")
                    self.landed.add(parts[0])
                elif void is None or offset < void:
                    void = offset
        if void is not None and void < size:
            os.ftruncate(fd, void)  # a part of the bytes of an append that did not finish
        if len(kept) != raw.count(b"\n") or not raw.endswith(b"\n"):
            self._rewrite(b"".join(kept))

    def add(self, append_id: str, length: int) -> bool:
        """Record ``append_id`` for ``length`` bytes about to be appended; False when it landed already."""
        if append_id in self.landed:
            return False
        with open(self.path, "ab") as f:
            f.write(f"{append_id} {os.fstat(self.fd).st_size} {length}\n".encode())
        return True

    def _rewrite(self, content: bytes) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_bytes(content)
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
