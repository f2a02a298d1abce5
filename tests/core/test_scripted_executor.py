"""The resolution loop driven by a scripted executor: retries, worker deaths, failures and cancels, decided
in advance and checked without threads, processes or waiting."""

from __future__ import annotations

import pytest

import sematic_k8s as sk
from sematic_k8s import errors
from sematic_k8s.executors.scripted import ScriptedExecutor
from sematic_k8s.resolvers.loop import ResolutionLoop
from sematic_k8s.specs import ResolutionSettings
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store import sql_store


@sk.func(retries=2, retry_backoff=0, retry_on=(ConnectionError,))
def fetch(x: int) -> int:
    raise AssertionError("scripted: never executed")


@sk.func(retries=2, retry_backoff=0)
def train(x: int) -> int:
    raise AssertionError("scripted: never executed")


@sk.func
def plus_one(x: int) -> int:
    return x + 1


@sk.func
def fan(x: int) -> list[int]:
    return [plus_one(train(x)), plus_one(x)]


@pytest.fixture
def resolve(tmp_path):
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")

    def run(future: sk.Future, executor: ScriptedExecutor, **settings) -> object:
        loop = ResolutionLoop(store, LocalStorage(tmp_path / "storage"), executor, ResolutionSettings(**settings),
                              kind="local")
        return loop.run(future)

    run.store = store  # type: ignore[attr-defined]
    return run


def test_listed_errors_are_retried_until_an_attempt_succeeds(resolve):
    ex = ScriptedExecutor({"fetch": [ConnectionError("reset"), ConnectionError("reset"), 5]})
    f = fetch(1)
    assert resolve(f, ex) == 5
    assert ex.attempts("fetch") == [1, 2, 3]
    run = resolve.store.get_run(f.id)
    assert run.state == "resolved" and run.attempts == 3 and run.error is None
    assert ex.closed


def test_errors_not_listed_in_retry_on_fail_at_once(resolve):
    ex = ScriptedExecutor({"fetch": [KeyError("nope"), 5]})
    with pytest.raises(sk.ResolutionFailed, match="KeyError"):
        resolve(fetch(1), ex)
    assert ex.attempts("fetch") == [1]


def test_a_worker_that_died_is_not_retried_by_default_but_a_lost_one_is(resolve):
    died = ScriptedExecutor({"train": [errors.OOMKilled("the worker ran out of memory"), 3]})
    with pytest.raises(sk.ResolutionFailed) as failed:
        resolve(train(1), died)
    assert failed.value.error["type"] == "OOMKilled" and died.attempts("train") == [1]
    assert failed.value.error["mro"][:2] == ["OOMKilled", "WorkerDied"]

    lost = ScriptedExecutor({"train": [errors.Evicted("the node was drained"), 3]})
    assert resolve(train(1), lost) == 3
    assert lost.attempts("train") == [1, 2]


def test_a_failure_fails_its_parents_and_cancels_what_did_not_start(resolve):
    ex = ScriptedExecutor({"train": [ValueError("diverged")]})
    f = fan(1)
    with pytest.raises(sk.ResolutionFailed) as failed:
        resolve(f, ex, max_parallelism=1)
    runs = {r.func_name: r for r in resolve.store.runs_of_root(f.id)}
    assert failed.value.run_id == runs["train"].id
    assert runs["train"].state == "failed" and runs["train"].error["type"] == "ValueError"
    assert runs["fan"].state == "failed" and runs["fan"].error["type"] == "NestedRunFailed"
    canceled = {r.id for r in resolve.store.runs_of_root(f.id) if r.state == "canceled"}
    assert canceled and canceled <= {r.id for r in resolve.store.runs_of_root(f.id) if r.func_name == "plus_one"}
    assert resolve.store.get_resolution(f.id).state == "failed"


def test_unscripted_funcs_run_their_body(resolve):
    ex = ScriptedExecutor({"train": [10]})
    assert resolve(fan(1), ex) == [11, 2]
