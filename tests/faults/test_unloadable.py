"""Values that serialize but cannot be loaded back, returned for real by an inline func (the embedded resolver), a
worker process's func (the process executor, as a driver runs it) and a cached func: the run that returned one
fails, saying so, and is neither recorded resolved nor cached; no later run, cache hit or ``resolve()`` is blamed."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

import sematic_k8s as sk
from sematic_k8s.errors import ResolutionFailed
from sematic_k8s.store import sql_store

REFUSE_ENV = "SK_TEST_REFUSE_LOADS"  # set: Changed values refuse to load (a class changed since they were stored)


def _made_once(*args: object) -> None:
    raise RuntimeError("made only once")


class OneWay:
    """Pickles, but its pickle does not load: its __reduce__ names a callable that raises."""

    def __reduce__(self) -> tuple:
        return (_made_once, ())


class Stateless:
    """Pickles, but its __setstate__ refuses the state it pickled."""

    def __init__(self) -> None:
        self.x = 1

    def __setstate__(self, state: dict) -> None:
        raise ValueError("state refused")


class Changed:
    """Loads until $SK_TEST_REFUSE_LOADS is set: a value stored before its class changed."""

    def __init__(self) -> None:
        self.x = 1

    def __setstate__(self, state: dict) -> None:
        if os.environ.get(REFUSE_ENV):
            raise ValueError("Changed no longer takes x")
        self.__dict__.update(state)


@dataclasses.dataclass(init=False)
class Parsed:
    """Plain data (JSON), but made by an __init__ of its own that does not take its fields."""

    n: int

    def __init__(self, text: str = "1") -> None:
        self.n = int(text)


KINDS = {"reduce": OneWay, "setstate": Stateless, "json": Parsed, "changed": Changed}
CAUSES = {"reduce": "RuntimeError: made only once", "setstate": "ValueError: state refused",
          "json": "TypeError: Parsed.__init__() got an unexpected keyword argument 'n'"}


@sk.func
def makes(kind: str) -> object:
    return KINDS[kind]()


@sk.func(inline=False)
def makes_in_a_worker(kind: str) -> object:
    return KINDS[kind]()


@sk.func(cache=True)
def makes_cached(kind: str) -> object:
    return KINDS[kind]()


@sk.func
def takes(value: object) -> str:
    return type(value).__name__


@sk.func(inline=False)
def takes_in_a_worker(value: object) -> str:
    return type(value).__name__


MAKERS = {"inline": makes, "worker": makes_in_a_worker, "cached": makes_cached}


@sk.func
def pipeline(kind: str, where: str) -> str:
    return takes_in_a_worker(MAKERS[where](kind)) if where == "worker" else takes(MAKERS[where](kind))


def _resolver(tmp_path: Path, where: str) -> sk.LocalResolver:
    from process_resolver import ProcessResolver  # (here: a worker loading this module has no tests/support)
    if where == "worker":
        return ProcessResolver(home=tmp_path)
    return sk.LocalResolver(home=tmp_path, cache_namespace="n")


@pytest.mark.parametrize("kind", ["reduce", "setstate", "json"])
@pytest.mark.parametrize("where", ["inline", "worker", "cached"])
def test_the_run_returning_a_value_that_cannot_be_loaded_back_fails(tmp_path, where, kind):
    """Was: the run was recorded resolved (and cached), and whoever loaded its value later failed instead: the next
    run in another worker, a cache hit, a rerun, the dashboard."""
    with pytest.raises(ResolutionFailed) as raised:
        pipeline(kind, where).resolve(_resolver(tmp_path, where))
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    run = store.get_run(raised.value.run_id)
    assert run.func_name == MAKERS[where].name and run.state == "failed" and run.output_id is None
    cause = CAUSES[kind]
    what = f"test_unloadable.{KINDS[kind].__qualname__}"
    message = run.error["message"]
    assert message.startswith(f"{MAKERS[where].name}: its output, a {what}, cannot be loaded back once serialized "
                              f"({cause}): return a value that can be loaded back")
    assert "\n" not in message and run.error["type"] == "Unloadable" and "FuncError" in run.error["mro"]  # not retried
    assert f"{run.func_name} (run {run.id}) raised Unloadable: {message}" in str(raised.value)
    assert not [r for r in store.list_runs() if r.state == "resolved" and r.func_path.endswith(":" + run.func_name)]
    if where == "cached":  # nothing cached: the next resolution runs it again, and it fails the same way
        with pytest.raises(ResolutionFailed) as again:
            pipeline(kind, where).resolve(_resolver(tmp_path, where))
        assert store.get_run(again.value.run_id).func_name == run.func_name


@sk.func
def hit_then_worker(kind: str) -> str:
    return takes_in_a_worker(makes_cached(kind))


@pytest.mark.parametrize("consumer", ["inline", "worker", "rerun"])
def test_a_recorded_value_that_no_longer_loads_is_named_with_the_run_that_made_it(tmp_path, monkeypatch, consumer):
    """A value stored while it loaded (its class changed since), reused by a cache hit or by a rerun: the run taking
    it fails naming the artifact and the run that produced it, and how to compute it again. Was: "takes raised
    ValueError: Changed no longer takes x", as if the taking func had raised it."""
    from process_resolver import ProcessResolver
    resolver = ProcessResolver(home=tmp_path, cache_namespace="n")
    make = hit_then_worker if consumer == "worker" else pipeline
    args = ("changed",) if consumer == "worker" else ("changed", "cached")
    first = make(*args)
    assert first.resolve(resolver) == "Changed"
    store = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    [made] = [r for r in store.runs_of_root(first.id) if r.func_name == "makes_cached"]
    monkeypatch.setenv(REFUSE_ENV, "1")
    if consumer == "rerun":
        [took] = [r for r in store.runs_of_root(first.id) if r.func_name == "takes"]
        resolver = ProcessResolver(home=tmp_path, rerun_from=took.id)
    with pytest.raises(ResolutionFailed) as raised:
        make(*args).resolve(resolver)
    run = store.get_run(raised.value.run_id)
    if consumer == "rerun":  # the reused run's clone in the rerun, recorded with the same output
        [made] = [r for r in store.runs_of_root(raised.value.resolution_id) if r.func_name == "makes_cached"]
    assert run.func_name == ("takes_in_a_worker" if consumer == "worker" else "takes")
    typed = "" if consumer == "worker" else "a test_unloadable.Changed, "  # a worker knows its inputs' ids only
    assert run.error["type"] == "ArtifactUnloadable"
    assert run.error["message"] == (
        f"artifact {made.output_id} ({typed}the output of run {made.id}) cannot be loaded here (ValueError: Changed "
        "no longer takes x): its class changed since it was stored, or cannot be imported here; make it load again, "
        f"or compute it again (`sematic-k8s rerun {made.id}`)")
