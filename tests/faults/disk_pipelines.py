"""Small disks and pipelines whose steps fill the disk of their own home (or of their worker's storage), for
``test_disk_full.py``: the fault comes from a func's side effect in the middle of a resolution, once what resolved
before it is recorded. Each fills only once (a flag file outside the disk says it did), so that the continuation,
after the test freed space, runs through."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import sematic_k8s as sk
from fault_pipelines import add, wait_for

SIZE = 64 * 1024  # bytes of a big value: a file of its own in storage (over the inline limit)
FILLER = "filler"


@contextlib.contextmanager
def tmpfs(where: Path, size: int, owner: str | None = None) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``where`` (root only: the test is skipped otherwise, or when the mount
    is refused), owned by ``owner``; unmounted after (lazily if a file on it is still open)."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is caused by mounting a small tmpfs, which needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs was refused: {mounted.stderr.strip()}")
    try:
        if owner is not None:
            shutil.chown(where, owner)
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(where)], check=True)


def fill_disk(directory: str | os.PathLike[str], name: str = FILLER) -> Path:
    """Write a file in ``directory`` until its disk is full (ENOSPC); the file."""
    path = Path(directory) / name
    with open(path, "ab", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1 << 9):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    return path


def truncate_log(db: str | os.PathLike[str]) -> None:
    """Copy SQLite's write-ahead log back into the database and truncate it to nothing, so that the next commit must
    grow it (as after a checkpoint, once the disk filled): on a full disk, every write then fails."""
    with sqlite3.connect(db, timeout=60) as conn:
        while conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:  # busy: a writer was in the way
            time.sleep(0.05)


def _resolved(db: str, func_name: str) -> bool:
    try:
        with sqlite3.connect(db) as conn:
            return bool(conn.execute("SELECT 1 FROM runs WHERE func_name = ? AND state = 'resolved'",
                                     (func_name,)).fetchone())
    except sqlite3.Error:
        return False


def _fill_once(home: str, flag: str, after: str) -> None:
    """Once ``after`` is recorded as resolved in ``home``'s database, truncate its log and fill its disk (unless
    ``flag`` says it was done)."""
    if os.path.exists(flag):
        return
    Path(flag).touch()
    db = os.path.join(home, "db.sqlite3")
    deadline = time.monotonic() + 60
    while not _resolved(db, after):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{after} was not recorded as resolved in {db} within 60 s")
        time.sleep(0.02)
    truncate_log(db)
    fill_disk(home)


@sk.func
def big(i: int) -> bytes:
    return bytes([i % 256]) * SIZE


@sk.func
def fill_then_big(home: str, flag: str, x: bytes) -> bytes:
    """Fills the disk, then returns a new big value: storing it is the first write to meet the full disk."""
    _fill_once(home, flag, "big")
    return x + b"!" * SIZE


@sk.func
def size(x: bytes) -> int:
    return len(x)


@sk.func
def storage_fills(home: str, flag: str) -> int:
    """``big(1)`` stored and recorded, then the disk full when ``fill_then_big``'s value is stored: 2 * SIZE."""
    return size(fill_then_big(home, flag, big(1)))


@sk.func
def fill_then_small(home: str, flag: str, x: int) -> int:
    """Fills the disk and returns a small value, kept inline: only the database has to find room for it."""
    _fill_once(home, flag, "add")
    return x * 10


@sk.func
def database_fills(home: str, flag: str, gate: str) -> int:
    """``add(1, 1)`` recorded, then the disk full, then a step waiting at ``gate``: the loop's write of what
    happened meanwhile (``fill_then_small`` resolved, the gated step running) meets the full disk. 20 + 1."""
    return add(wait_for(gate, fill_then_small(home, flag, add(1, 1))), 1)


@sk.func(inline=False)
def remote_big(i: int) -> bytes:
    return bytes([i % 256]) * SIZE


@sk.func(inline=False)
def remote_fill_then_big(disk: str, flag: str, x: bytes) -> bytes:
    """In a worker process: fills ``disk`` (unless ``flag`` says it did), then returns a new big value: the
    worker's store of it is the first write to meet the full disk."""
    if not os.path.exists(flag):
        Path(flag).touch()
        fill_disk(disk)
    return x + b"!" * SIZE


@sk.func
def worker_storage_fills(disk: str, flag: str) -> int:
    """``remote_big(1)`` stored by its worker and recorded, then the disk full when the next worker stores its
    value: 2 * SIZE."""
    return size(remote_fill_then_big(disk, flag, remote_big(1)))
