"""Local artifact storage: atomic, content-addressed puts, keys that cannot escape the root, log appends made
once per id by concurrent processes and after a writer killed mid-write, and file-system failures said as the storage's
error, never a bare OSError nor an answer of "absent"."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sematic_k8s.errors import StorageError
from sematic_k8s.storage.base import append_id, read_part, unmatched
from sematic_k8s.storage.local import LocalStorage
from unprivileged import unprivileged


def test_put_get_exists_append(tmp_path):
    s = LocalStorage(tmp_path)
    s.put("artifacts/ab/abc", b"1")
    s.put("artifacts/ab/abc", b"2")  # content-addressed: an existing key is never overwritten
    assert s.get("artifacts/ab/abc") == b"1" and s.exists("artifacts/ab/abc")
    assert not list(tmp_path.rglob("*.tmp"))
    s.append("logs/r.log", b"a")
    s.append("logs/r.log", b"b")
    assert s.get("logs/r.log") == b"ab"
    with pytest.raises(KeyError):
        s.get("artifacts/none")


CALLS = {
    "exists": lambda s, k: s.exists(k), "get": lambda s, k: s.get(k), "read_part": lambda s, k: read_part(s, k, 0, 10),
    "put": lambda s, k: s.put(k, b"x"), "put repair": lambda s, k: s.put(k, b"x", repair=True),
    "append": lambda s, k: s.append(k, b"x"), "delete": lambda s, k: s.delete(k),
    "keys": lambda s, k: s.keys(k.rpartition("/")[0] + "/"), "size": lambda s, k: s.size(k),
    "unmatched": lambda s, k: unmatched(s, {k: 1}),
}
DO = "and everything under it readable and writable by this process"


@pytest.mark.parametrize("call", CALLS)
def test_a_file_in_place_of_a_storage_directory_is_the_storages_error_for_every_call(tmp_path, call):
    """ENOTDIR, for real: ``artifacts/cd`` a file. Was: ``exists`` False (an artifact taken for gone), ``keys`` none,
    the others a bare NotADirectoryError/FileExistsError."""
    s = LocalStorage(tmp_path / "root")
    (tmp_path / "root" / "artifacts").mkdir()
    (tmp_path / "root" / "artifacts" / "cd").write_bytes(b"not a directory")
    with pytest.raises(StorageError) as e:
        CALLS[call](s, "artifacts/cd/cdef")
    assert type(e.value) is StorageError and "\n" not in str(e.value), repr(e.value)
    said = str(e.value).partition(": make ")[0]  # what the file system said, where (EEXIST: a directory made there)
    assert said.endswith(("/cd: Not a directory (ENOTDIR)", "/cd/cdef: Not a directory (ENOTDIR)",
                          f"/cd/cdef: File exists (EEXIST) at {tmp_path}/root/artifacts/cd")), said
    assert f" {tmp_path}/root/artifacts/cd" in said, said
    assert f"make {tmp_path}/root {DO}" in str(e.value), str(e.value)


@pytest.mark.parametrize("call", CALLS)
def test_a_storage_directory_this_process_may_not_read_is_the_storages_error_for_every_call(call):
    """EACCES, for real: ``artifacts/ab`` chmod 000, the calls made as a user other than root. Was: a bare
    PermissionError (``keys``: the directory silently skipped, its keys left out)."""
    home = Path(tempfile.mkdtemp())
    try:
        home.chmod(0o777)
        s = LocalStorage(home / "root")
        s.put("artifacts/ab/abcd", b"1")
        for d in (home / "root", home / "root" / "artifacts"):
            d.chmod(0o777)
        (home / "root" / "artifacts" / "ab").chmod(0)
        with unprivileged(), pytest.raises(StorageError) as e:
            CALLS[call](s, "artifacts/ab/abcd")
        assert type(e.value) is StorageError, repr(e.value)
        said = str(e.value)
        assert f"{home}/root/artifacts/ab" in said and "Permission denied (EACCES)" in said, said
        assert f"make {home}/root {DO}" in said, said
    finally:
        (home / "root" / "artifacts" / "ab").chmod(0o755)
        shutil.rmtree(home)


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../x", "a//b", "./a"])
def test_keys_cannot_escape_the_root(tmp_path, key):
    with pytest.raises(ValueError, match="not a plain relative path"):
        LocalStorage(tmp_path / "root").put(key, b"x")


def test_keys_are_listed_through_no_linked_directory_so_none_is_deleted_outside_the_root(tmp_path):
    """A folder's keys (what the sweeps of stored tasks list, then delete: the executor's at a resolution's end, the
    server's for a driver killed for good) are its files, never those of a directory a symbolic link in it names:
    whoever may write the storage's directory could name any directory there, whose files the sweep would delete
    (a file it links is listed, its delete removes the link alone); a link to the folder itself lists nothing twice
    and does not fail the listing. The folder itself is reached through links, as every key is (a storage may keep
    some on another disk)."""
    storage = LocalStorage(tmp_path / "root")
    storage.put("tasks/r/own", b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"not the storage's")
    (tmp_path / "root" / "tasks" / "r" / "linked").symlink_to(outside)
    (tmp_path / "root" / "tasks" / "r" / "file").symlink_to(outside / "victim")
    (tmp_path / "root" / "tasks" / "r" / "loop").symlink_to(".")
    assert storage.keys("tasks/r/") == ["tasks/r/file", "tasks/r/own"]
    for key in storage.keys("tasks/"):
        storage.delete(key)
    assert (outside / "victim").read_bytes() == b"not the storage's"
    assert storage.keys("tasks/") == []


APPENDER = """
import signal, sys
from sematic_k8s.storage.local import LocalStorage
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it: past the file size limit, the kernel kills
LocalStorage(sys.argv[1]).append("logs/r.log", sys.argv[2].encode() * int(sys.argv[3]), append_id=sys.argv[4])
"""


def appender(root: Path, text: str, times: int, append_id: str, file_limit: int | None = None) -> subprocess.Popen:
    """A process appending ``text * times`` to logs/r.log under ``root`` with ``append_id``; with ``file_limit``,
    killed by the kernel (SIGXFSZ) when a file it writes would grow past that many bytes."""
    def limit() -> None:
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
    return subprocess.Popen([sys.executable, "-c", APPENDER, str(root), text, str(times), append_id],
                            preexec_fn=limit, stderr=subprocess.PIPE)


def test_an_append_with_an_id_is_made_once_by_many_processes_and_the_log_stays_plain(tmp_path):
    s = LocalStorage(tmp_path)
    s.append("logs/r.log", b"start\n")
    shared = append_id("shared")
    procs = [appender(tmp_path, "same\n", 1, shared) for _ in range(6)]
    procs += [appender(tmp_path, f"own {i}\n", 1, append_id("own", i)) for i in range(6)]
    for p in procs:
        assert p.wait(60) == 0, p.stderr.read() if p.stderr else ""
    lines = s.get("logs/r.log").decode().splitlines()
    assert lines[0] == "start" and sorted(lines[1:]) == sorted(["same"] + [f"own {i}" for i in range(6)])
    s.append("logs/r.log", b"same\n", append_id=shared)  # made before, by another process: skipped
    assert s.get("logs/r.log").decode().count("same") == 1
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [".r.log.appends", "r.log"]  # ids beside it


def test_an_append_whose_writer_was_killed_mid_write_is_made_whole_once_by_the_next(tmp_path):
    """The first writer is killed by the kernel (SIGXFSZ past its file size limit) after part of its bytes
    reached the log: that part is taken back and its id forgotten, so the same append made again by another
    process lands whole, once; appends after it are made as usual."""
    s = LocalStorage(tmp_path)
    s.append("logs/r.log", b"start\n", append_id=append_id("start"))
    killed = appender(tmp_path, "0123456789", 1000, append_id("big"), file_limit=4096)
    assert killed.wait(60) == -signal.SIGXFSZ
    assert len(s.get("logs/r.log")) == 4096  # its bytes in part
    s.append("logs/r.log", b"0123456789" * 1000, append_id=append_id("big"))
    s.append("logs/r.log", b"0123456789" * 1000, append_id=append_id("big"))
    s.append("logs/r.log", b"end\n")
    assert s.get("logs/r.log") == b"start\n" + b"0123456789" * 1000 + b"end\n"


WRITER = """
import sys
from sematic_k8s.storage.local import LocalStorage
LocalStorage(sys.argv[1]).put(sys.argv[2], b"x" * int(sys.argv[3]))
"""
BIG = 512 * 2**20  # bytes: a write long enough to be caught with its temporary file there


def caught_writing(root: Path, key: str, sig: int) -> tuple[subprocess.Popen, Path]:
    """A process putting BIG bytes at ``key`` under ``root``, sent ``sig`` once its temporary file is there; the
    process and that file."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), key, str(BIG)], stderr=subprocess.PIPE)
    folder, name = root.joinpath(*key.split("/")[:-1]), key.rsplit("/", 1)[-1]
    while not (found := list(folder.glob(f".{name}.*.tmp")) if folder.is_dir() else []):
        assert proc.poll() is None, f"the writer ended before its temporary file was seen: {proc.stderr.read()!r}"
        time.sleep(0.001)
    proc.send_signal(sig)
    return proc, found[0]


def test_a_killed_writers_partial_file_is_removed_by_a_later_write_there_never_a_running_writes(tmp_path):
    """A writer killed (kill -9) between its temporary file and its rename leaves that file. A later write into its
    directory (here the same key, by another process's storage) removes it once it is older than an hour; a write
    still running there (stopped: its file young) keeps its file, and lands whole. Was: left for good."""
    root = tmp_path / "storage"
    killed, left = caught_writing(root, "artifacts/ab/ab01", signal.SIGKILL)
    assert killed.wait(60) == -signal.SIGKILL and left.exists()
    hours_ago = time.time() - 2 * 3600  # as an hour later: how old the file's last write is
    os.utime(left, (hours_ago, hours_ago))
    running, young = caught_writing(root, "artifacts/ab/ab02", signal.SIGSTOP)
    try:
        s = LocalStorage(root)
        s.put("artifacts/ab/ab01", b"again")
        assert not left.exists() and young.exists()
        assert s.get("artifacts/ab/ab01") == b"again"
    finally:
        running.send_signal(signal.SIGCONT)
    assert running.wait(60) == 0, running.stderr.read() if running.stderr else ""
    assert s.size("artifacts/ab/ab02") == BIG
    assert sorted(p.name for p in (root / "artifacts" / "ab").iterdir()) == ["ab01", "ab02"]


def test_a_malformed_append_id_is_refused_in_words(tmp_path):
    with pytest.raises(ValueError, match=r"append id 'run 1' is not 12 lowercase hex digits: make it with "):
        LocalStorage(tmp_path).append("logs/r.log", b"x", append_id="run 1")
    assert not (tmp_path / "logs" / "r.log").exists()


def test_a_key_that_is_a_symbolic_link_loop_is_said_as_a_link_to_remove(tmp_path):
    """ELOOP, for real: the key a link to itself. Was: ``exists`` (and a put's look) said it as a permission or
    directory problem ("make ... readable and writable ..., each of its directories a directory")."""
    s = LocalStorage(tmp_path / "root")
    s.put("artifacts/ab/abcd", b"1")
    loop = tmp_path / "root" / "artifacts" / "ab" / "loop"
    loop.symlink_to(loop)
    for call in ("exists", "put"):
        with pytest.raises(StorageError) as e:
            CALLS[call](s, "artifacts/ab/loop")
        said = str(e.value)
        assert f"{loop} is a symbolic link that loops (ELOOP): remove the link {loop}" in said, said
        assert DO not in said and e.value.fix.startswith(f"remove the link {loop}"), said
    assert loop.is_symlink() and s.get("artifacts/ab/abcd") == b"1"


@pytest.mark.parametrize("repair", [False, True])
def test_a_put_at_a_key_that_is_a_directory_is_the_storages_error_and_leaves_the_directory(tmp_path, repair):
    """A directory where a key's file goes (made by hand, a bad copy). Was: ``put`` returned as if the key held its
    bytes already, writing nothing, silently (a later ``get``: a bare IsADirectoryError)."""
    s = LocalStorage(tmp_path / "root")
    there = tmp_path / "root" / "artifacts" / "ab" / "abcd"
    there.mkdir(parents=True)
    (there / "kept").write_bytes(b"mine")
    with pytest.raises(StorageError) as e:
        s.put("artifacts/ab/abcd", b"1", repair=repair)
    said = str(e.value)
    assert said == (f"local storage could not write {there}: a directory is there, not a file: move that directory "
                    f"out of {tmp_path}/root (nothing of it was changed); then try again"), said
    assert (there / "kept").read_bytes() == b"mine" and e.value.fix.startswith("move that directory")
