"""Funcs that misbehave, run for real on the in-process executor (the resolving thread, ``max_parallelism=2``'s
threads) and in worker processes (the process executor, as a driver uses it): each run fails (or resolves) on its
own, saying what happened, the resolving process goes on, and the rest of the resolution is recorded. What holds
without a test of its own here is listed in docs/FAULTS.md ("Funcs that misbehave")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import sematic_k8s as sk
from sematic_k8s.errors import ResolutionFailed
from sematic_k8s.storage.base import artifact_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store import sql_store


class Unsayable(Exception):
    """An exception whose message cannot be made."""

    def __str__(self) -> str:
        raise RuntimeError("no words")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


def _misbehave(how: str) -> int:
    print("about to misbehave", file=sys.stderr, flush=True)
    if how == "unsayable":
        raise Unsayable()
    if how == "exit":
        sys.exit(0)
    if how == "_exit":
        os._exit(0)
    raise ValueError(how)


@sk.func
def here(how: str) -> int:
    return _misbehave(how)


@sk.func(inline=False)
def worker(how: str) -> int:
    return _misbehave(how)


@sk.func
def fine(x: int) -> int:
    return x + 1


@sk.func
def pipeline(how: str, where: str) -> list[int]:
    return [(worker if where == "worker" else here)(how), fine(1)]


WHERE = [("thread", 1, "here"), ("threads", 2, "here"), ("worker", 1, "worker")]


def _resolve(tmp_path: Path, how: str, where: str, parallelism: int) -> ResolutionFailed:
    from process_resolver import ProcessResolver  # (here: a worker loading this module has no tests/support)
    resolver = ProcessResolver(home=tmp_path, max_parallelism=parallelism)
    with pytest.raises(ResolutionFailed) as raised:
        pipeline(how, where).resolve(resolver)
    return raised.value


def _failed_run(tmp_path: Path, error: ResolutionFailed) -> dict:
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    assert store.get_resolution(error.resolution_id).state == "failed"
    run = store.get_run(error.run_id)
    assert run is not None and run.state == "failed"
    return run.error


@pytest.mark.parametrize(("name", "parallelism", "where"), WHERE)
def test_an_exception_whose_message_cannot_be_made_fails_its_run_as_itself(tmp_path, name, parallelism, where):
    """Was: on the resolving thread the RuntimeError its __str__ raised escaped the loop (the resolution failed as
    "RuntimeError: no words", its runs canceled); on a thread the run failed as that RuntimeError; a worker died
    with a traceback ("the worker exited with code 1 without a result")."""
    error = _resolve(tmp_path, "unsayable", where, parallelism)
    info = _failed_run(tmp_path, error)
    assert info["type"] == "Unsayable"
    assert info["message"] == "(its message could not be made: its __str__ raised RuntimeError)"
    assert "raised Unsayable: (its message could not be made" in str(error)


@pytest.mark.parametrize(("name", "parallelism", "where"), WHERE)
def test_sys_exit_in_a_func_fails_its_run(tmp_path, name, parallelism, where):
    """Was: on the resolving thread SystemExit(0) went through the resolver (a failed pipeline's process exited 0,
    its runs recorded canceled); a worker exited 0 without a result, its last lines dropped."""
    error = _resolve(tmp_path, "exit", where, parallelism)
    info = _failed_run(tmp_path, error)
    assert (info["type"], info["message"]) == ("SystemExit", "0")


def test_a_worker_that_exits_0_without_a_result_keeps_its_last_lines(tmp_path):
    """os._exit(0) in a worker's func: the run fails as the worker's death, with what it printed last (was: no
    line, as for a worker that exited 0 with its outcome stored)."""
    error = _resolve(tmp_path, "_exit", "worker", 1)
    info = _failed_run(tmp_path, error)
    assert info["message"] == "the worker exited with code 0 without a result"
    assert "about to misbehave" in info["traceback"]


@sk.func
def wanders(to: str) -> int:
    if to == "deleted":
        gone = tempfile.mkdtemp()
        os.chdir(gone)
        os.rmdir(gone)
    else:
        os.chdir(to)
    return 1


@sk.func(inline=False)
def worker_after(x: int) -> str:
    return f"{x} in {os.getcwd()}"


@sk.func
def wandering_pipeline(to: str) -> str:
    return worker_after(wanders(to))


@pytest.mark.parametrize("to", ["deleted", "/"])
def test_an_inline_func_changing_the_directory_moves_no_worker(tmp_path, monkeypatch, to):
    """A driver's inline func that moves this process elsewhere (a directory deleted since: os.getcwd() fails
    there): its workers still start where the driver started. Was: FileNotFoundError from launching the next
    worker ended the resolution ("FileNotFoundError: [Errno 2] No such file or directory"), as the loop's own."""
    from process_resolver import ProcessResolver
    start = tmp_path / "project"
    start.mkdir()
    monkeypatch.chdir(start)
    assert wandering_pipeline(to).resolve(ProcessResolver(home=tmp_path / "home")) == f"1 in {start}"


@sk.func
def numbers(n: int) -> list[int]:
    return list(range(n))


@sk.func
def changes_its_input(xs: list[int]) -> int:
    xs.append(99)
    xs[0] = -1
    return len(xs)


@sk.func(cache=True)
def total(xs: list[int], seen: int) -> int:
    return sum(xs)


@sk.func
def sharing_pipeline(n: int) -> list:
    xs = numbers(n)
    return [total(xs, changes_its_input(xs)), xs]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_func_changing_its_input_in_place_changes_it_for_no_other_run(tmp_path, parallelism):
    """Every in-process body gets its own copy of its inputs, as a worker loads its own. Was: the other runs given
    the same value (and the resolution's result) saw it changed, unlike what was recorded: total computed 101 from
    an input recorded as [0, 1, 2] and cached it under that input."""
    resolver = sk.LocalResolver(home=tmp_path, max_parallelism=parallelism, cache_namespace="n")
    assert sharing_pipeline(3).resolve(resolver) == [3, [0, 1, 2]]


class Unshowable:
    """A value that pickles, whose repr cannot be made."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@sk.func
def makes_unshowable_here(x: int) -> Unshowable:
    return Unshowable()


@sk.func(inline=False)
def makes_unshowable_in_a_worker(x: int) -> Unshowable:
    return Unshowable()


@sk.func
def unshowable_pipeline(x: int) -> list[Unshowable]:
    return [makes_unshowable_here(x), makes_unshowable_in_a_worker(x)]


def test_a_value_whose_repr_raises_is_stored_all_the_same(tmp_path):
    """Its repr is only its summary, as a preview is: the runs resolve, the summary says why there is none. Was: the
    run failed with the RuntimeError its __repr__ raised."""
    from process_resolver import ProcessResolver
    values = unshowable_pipeline(1).resolve(ProcessResolver(home=tmp_path))
    assert [type(v) for v in values] == [Unshowable, Unshowable]
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    runs = [r for r in store.list_runs() if r.func_path.split(":")[-1].startswith("makes_unshowable")]
    assert len(runs) == 2
    for run in runs:
        summary = store.get_artifact(run.output_id).summary
        assert summary["repr"] == "<test_user_code.Unshowable: its __repr__ raised RuntimeError>"


class Uncopyable:
    """A value that pickles and loads (its module by name) but that ``copy.deepcopy`` cannot copy."""

    def __init__(self) -> None:
        self.module = os


@sk.func
def makes_uncopyable(x: int) -> Uncopyable:
    return Uncopyable()


@sk.func
def takes_uncopyable(u: Uncopyable) -> str:
    return u.module.__name__


@sk.func
def uncopyable_pipeline(x: int) -> str:
    return takes_uncopyable(makes_uncopyable(x))


def test_an_input_that_cannot_be_copied_is_given_as_it_is(tmp_path):
    """In process, a value that cannot be copied still reaches the next func (one that pickle cannot load back
    fails the run that returned it: tests/faults/test_unloadable.py)."""
    assert uncopyable_pipeline(1).resolve(sk.LocalResolver(home=tmp_path)) == "os"


@sk.func(inline=False, timeout=10)  # counted from the worker's spawn: its interpreter's start and imports too
def spawns(pid_file: str, wait: bool) -> int:
    """Starts a child that holds the worker's stdout and stderr open and outlives the func (unless waited for)."""
    child = subprocess.Popen(["sleep", "600"])
    Path(pid_file).write_text(str(child.pid))
    if wait:
        child.wait()  # past the timeout
    return 1


@sk.func
def spawning_pipeline(pid_file: str, wait: bool) -> int:
    return spawns(pid_file, wait)


@pytest.mark.parametrize("wait", [True, False], ids=["timed-out", "returned"])
def test_what_a_worker_process_started_ends_with_it(tmp_path, wait):
    """A child of a worker's func, holding its stdout and stderr: gone once the run ended, whether the worker was
    stopped past its timeout or returned (a container's processes end with it). Was: it ran on, adopted by init."""
    from process_resolver import ProcessResolver
    from waiting import alive, wait_for  # here: workers load this module, without the tests' support on their path

    pid_file = tmp_path / "child.pid"
    resolver = ProcessResolver(home=tmp_path / "home")
    try:
        if wait:
            with pytest.raises(ResolutionFailed, match="DeadlineExceeded"):
                spawning_pipeline(str(pid_file), wait).resolve(resolver)
        else:
            assert spawning_pipeline(str(pid_file), wait).resolve(resolver) == 1
        child = int(pid_file.read_text())
        wait_for(lambda: not alive(child), timeout=10, what=f"the func's child {child} to end")
    finally:
        if pid_file.exists() and alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


@sk.func
def wanders_then_makes(to: str) -> list[int]:
    os.chdir(to)
    return list(range(2000))  # a value in a file of its own (not inline with its record)


@sk.func
def count(xs: list[int]) -> int:
    return len(xs)


@sk.func
def relative_home_pipeline(to: str) -> int:
    return count(wanders_then_makes(to))


def test_a_func_changing_the_directory_moves_no_file_of_a_relative_home(tmp_path, monkeypatch):
    """A home given relative to where the resolver started (home=".sk", $SEMATIC_K8S_HOME=.sk): its files stay there
    when an inline func moves the process elsewhere. Was: the value it returned was written under the new directory,
    its record pointing at bytes the home does not hold (ArtifactMissing for a rerun, the CLI, the dashboard)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    future = relative_home_pipeline(str(elsewhere))
    assert future.resolve(sk.LocalResolver(home=".sk")) == 2000
    store = sql_store(f"sqlite:///{tmp_path / '.sk' / 'db.sqlite3'}")
    [made] = [r for r in store.runs_of_root(future.id) if r.func_path.endswith(":wanders_then_makes")]
    assert LocalStorage(tmp_path / ".sk" / "storage").exists(artifact_key(made.output_id))
    assert not (elsewhere / ".sk").exists()


@sk.func(inline=False)
def runs_out_of_memory(limit_mb: int) -> int:
    """Under a memory limit of its own (the worker process's address space), allocates past it."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))
    hoard = [bytearray(1 << 20) for _ in range(4 * limit_mb)]
    return len(hoard)


@sk.func
def memory_pipeline(limit_mb: int) -> int:
    return runs_out_of_memory(limit_mb)


def test_a_worker_past_its_memory_limit_fails_its_run_as_memory_error(tmp_path):
    """A worker process past its address-space limit (setrlimit in its func): its run fails as MemoryError, said
    without an empty message after it (was "raised MemoryError: "), and the driver goes on."""
    from process_resolver import ProcessResolver
    resolver = ProcessResolver(home=tmp_path)
    with pytest.raises(ResolutionFailed) as raised:
        memory_pipeline(600).resolve(resolver)
    assert str(raised.value).splitlines()[0].endswith(f"(run {raised.value.run_id}) raised MemoryError")
    assert _failed_run(tmp_path, raised.value)["type"] == "MemoryError"


@sk.func(inline=False)
def floods(megabytes: int) -> int:
    """Writes that many megabytes to stderr without a newline, then fails."""
    chunk = b"z" * (1 << 20)
    for _ in range(megabytes):
        os.write(2, chunk)
    raise ValueError("flooded")


@sk.func
def flooding_pipeline(megabytes: int) -> int:
    return floods(megabytes)


def test_a_worker_writing_without_newlines_does_not_fill_the_drivers_memory(tmp_path):
    """A worker process writing 100 MB to stderr without a newline: its driver keeps its last pieces, not the whole
    line (was: the line read whole, then kept and joined, the driver's peak memory growing by 2.6 times what was
    written: a worker dumping gigabytes took its driver down)."""
    import resource

    from process_resolver import ProcessResolver

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the peak so far
    with pytest.raises(ResolutionFailed, match="raised ValueError: flooded"):
        flooding_pipeline(100).resolve(ProcessResolver(home=tmp_path))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50, f"the driver's peak memory grew by {grown_mb:.0f} MB"
