"""The remote-worker path (the one containers and pods use), with worker processes on this machine."""

from __future__ import annotations

import os
import signal
import sys

import pytest

import sematic_k8s as sk
from sematic_k8s.executors.inline import InlineExecutor
from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor
from sematic_k8s.executors.process import ProcessExecutor
from sematic_k8s.specs import WORKER_STORED_LINE
from sematic_k8s.storage.base import log_key
from sematic_k8s.storage.urls import storage_url
from sematic_k8s.store import sql_store


class ProcessResolver(sk.LocalResolver):
    """Inline funcs in this process, the others in worker processes (like pods)."""

    def _parts(self):
        storage = self.storage
        return self.store, storage, InlineOrRemoteExecutor(InlineExecutor(self.max_parallelism),
                                                  ProcessExecutor(storage, storage_url(storage)))


@pytest.fixture
def resolver(tmp_path):
    return lambda **kw: ProcessResolver(home=tmp_path, **kw)


@pytest.fixture
def store(tmp_path):
    return sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")


@sk.func(inline=False)
def where(x: int) -> dict[str, int]:
    print(f"working on {x}")
    return {"x": x, "pid": os.getpid()}


@sk.func(inline=False)
def remote_pipeline(n: int) -> list[dict[str, int]]:
    return [where(i) for i in range(n)]


@sk.func
def local_pipeline(n: int) -> list[dict[str, int]]:
    return [where(i) for i in range(n)]


@sk.func(inline=False)
def fails(x: int) -> int:
    raise ArithmeticError(f"bad {x}")


@sk.func(inline=False)
def dies(x: int) -> int:
    print("about to die")
    print("dying now", file=sys.stderr)
    os.kill(os.getpid(), signal.SIGKILL)
    return x


@sk.func(inline=False)
def wrong_type(x: int) -> str:
    return x  # type: ignore[return-value]


@sk.func(inline=False, retries=2, retry_backoff=0.01)
def flaky_remote(marker: str) -> str:
    count = int(open(marker).read()) if os.path.exists(marker) else 0
    with open(marker, "w") as f:
        f.write(str(count + 1))
    if count < 2:
        raise ConnectionError("not yet")
    return f"ok after {count + 1}"


def test_non_inline_funcs_run_in_worker_processes(resolver, store, tmp_path, capfd):
    f = local_pipeline(3)
    out = f.resolve(resolver(max_parallelism=3))
    printed = capfd.readouterr().out  # the workers print on this terminal what their funcs print
    assert "working on 2" in printed and WORKER_STORED_LINE not in printed  # only a following executor asks for it
    assert [o["x"] for o in out] == [0, 1, 2]
    assert os.getpid() not in {o["pid"] for o in out} and len({o["pid"] for o in out}) == 3
    runs = [r for r in store.runs_of_root(f.id) if r.func_name == "where"]
    assert all(r.state == "resolved" and r.notes["executor"]["executor"] == "process" for r in runs)
    storage = resolver().storage
    assert storage.get(log_key(runs[0].id)).startswith(b"working on")


def test_a_composition_in_a_worker_sends_its_futures_back(resolver, store):
    f = remote_pipeline(2)
    assert [o["x"] for o in f.resolve(resolver())] == [0, 1]
    assert sorted(r.func_name for r in store.runs_of_root(f.id)) == ["remote_pipeline", "where", "where"]


def test_remote_failure_reaches_the_resolution_with_its_traceback(resolver, store):
    f = fails(4)
    with pytest.raises(sk.ResolutionFailed, match="ArithmeticError: bad 4"):
        f.resolve(resolver())
    assert 'raise ArithmeticError(f"bad {x}")' in store.get_run(f.id).error["traceback"]


def test_a_worker_that_dies_is_reported_in_plain_words(resolver, store):
    f = dies(1)
    with pytest.raises(sk.ResolutionFailed, match="exited with code -9 without a result"):
        f.resolve(resolver())
    assert store.get_run(f.id).error["type"] == "WorkerDied"
    assert store.get_run(f.id).error["traceback"] == "last log lines:\ndying now\n"  # its stderr's last lines


def test_remote_output_is_type_checked(resolver):
    with pytest.raises(sk.ResolutionFailed, match="wrong_type: output should be str, got int"):
        wrong_type(1).resolve(resolver())


def test_remote_retries(resolver, store, tmp_path):
    f = flaky_remote(str(tmp_path / "count"))
    assert f.resolve(resolver()) == "ok after 3"
    assert store.get_run(f.id).attempts == 3
