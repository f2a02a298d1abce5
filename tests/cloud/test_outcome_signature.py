"""A worker's outcome document is adopted only with its worker's signature (sematic_k8s/executors/outcome_signing.py):
whoever else writes to the artifact bucket (another user's driver holds bucket-wide keys) cannot choose a running
attempt's output. Real worker processes write their outcome; the test, as that other writer, replaces it before the
driver reads it with a document naming another value whose bytes hash to the id it names."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sematic_k8s as sk
from executor_tasks import input_task, outcome_of, submit, value_of
from process_resolver import ProcessResolver
from sematic_k8s import serialization
from sematic_k8s.executors.base import Outcome
from sematic_k8s.executors.process import ProcessExecutor
from sematic_k8s.settings import API_KEY_ENV, API_KEY_FILE_ENV, STORAGE_ENV
from sematic_k8s.specs import outcome_key
from sematic_k8s.storage.base import Storage, put_artifact
from sematic_k8s.storage.urls import storage_from_url, storage_url
from sematic_k8s.store import sql_store

SUPPORT = str(Path(__file__).resolve().parents[1] / "support")


@sk.func(inline=False)
def double(x: int) -> int:
    return 2 * x


@sk.func(inline=False)
def plants_its_outcome(x: int) -> int:
    """A writer of the bucket (here the worker's func, which holds its storage keys) stores attempt 1's outcome
    first, naming 666 under its true content id: the worker's own write keeps what is there."""
    storage = storage_from_url(os.environ[STORAGE_ENV])
    planted = outcome_key(sk.context().run_id, 1)
    if not storage.exists(planted):
        forged = put_artifact(storage, serialization.serialize(666))
        storage.put(planted, json.dumps({"output": forged}).encode())
    return 2 * x


@sk.func(inline=False)
def framed(x: int) -> Any:  # noqa: ANN401
    """A table whose preview (in its outcome document's record) holds dicts keyed by ints, and by ints and strings."""
    import pandas as pd

    return pd.DataFrame({"c": [{2: "a", 10: "b"}, {x: "q", "b": 2}]})


@pytest.fixture(autouse=True)
def _support_on_workers_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes import this module (its funcs), which imports tests/support's executor_tasks: on their path
    too (a worker's PYTHONPATH is its driver's start directory and $PYTHONPATH)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [SUPPORT, os.environ.get("PYTHONPATH")])))


@pytest.fixture
def storage(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Storage:  # noqa: ANN401
    monkeypatch.delenv(API_KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(API_KEY_ENV, "the resolution's token")  # what a restarted driver of it has too
    return storage_from_url(f"file://{tmp_path / 'bucket'}")


@pytest.fixture
def executor(storage: Storage) -> Iterator[ProcessExecutor]:
    executor = ProcessExecutor(storage, storage_url(storage))
    yield executor
    executor.close()


def stored_outcome(storage: Storage, run_id: str) -> str:
    """The key of the attempt's outcome document, once its worker stored it (within a minute)."""
    deadline = time.monotonic() + 60
    while not storage.exists(outcome_key(run_id, 1)):
        assert time.monotonic() < deadline, "the worker stored no outcome"
        time.sleep(0.05)
    return outcome_key(run_id, 1)


def replace_outcome(storage: Storage, run_id: str, value: int) -> None:
    """The other bucket writer's move: the attempt's outcome names ``value``, stored under its true content id (the
    worker's signature kept in it)."""
    key = stored_outcome(storage, run_id)
    forged = put_artifact(storage, serialization.serialize(value))
    honest = json.loads(storage.get(key))
    storage.put(key, json.dumps({**honest, "output": forged}).encode(), repair=True)


def plant_over_outcome(storage: Storage, run_id: str, document: bytes) -> None:
    """The other bucket writer's move: the attempt's outcome document replaced by ``document``'s bytes."""
    storage.put(stored_outcome(storage, run_id), document, repair=True)


def assert_not_adopted(outcome: Outcome, run_id: str, caplog: pytest.LogCaptureFixture) -> None:
    assert outcome.output is None
    assert outcome.error_info is not None
    assert outcome.error_info["type"] == "OutcomeUnverified", outcome.error_info
    assert "InfrastructureError" in outcome.error_info["mro"]  # the attempt is lost: run again
    said = [r.getMessage() for r in caplog.records if "not adopted" in r.getMessage()]
    assert said == [said[0]] and f"run {run_id} attempt 1" in said[0], said


def test_an_outcome_replaced_by_another_writer_of_the_bucket_is_not_adopted(storage, executor, caplog):
    """Was: the driver adopted the replaced document, the forged value recorded as the run's output."""
    caplog.set_level(logging.WARNING, "sematic_k8s")
    t = submit(executor, storage, double, 21)
    replace_outcome(storage, t.run_id, 666)
    assert_not_adopted(outcome_of(executor), t.run_id, caplog)


@pytest.mark.parametrize("document", [
    b"not JSON", b"[1, 2]", b"[" * 100_000 + b"]" * 100_000,
    json.dumps({"output": None, "signature": "\ud800" * 64}).encode(),
], ids=["not-json", "not-an-object", "nested-past-reading", "signature-not-ascii"])
def test_an_outcome_replaced_by_unreadable_bytes_is_not_adopted_and_the_driver_goes_on(storage, executor, caplog,
                                                                                       document):
    """Was: the driver's wait raised (json's ValueError or RecursionError, the signature's UnicodeEncodeError): one
    writer of the bucket ended every resolution of that driver, not only that attempt."""
    caplog.set_level(logging.WARNING, "sematic_k8s")
    t = submit(executor, storage, double, 21)
    plant_over_outcome(storage, t.run_id, document)
    assert_not_adopted(outcome_of(executor), t.run_id, caplog)
    submit(executor, storage, double, 4)
    assert value_of(storage, outcome_of(executor)) == 8


def test_an_outcome_whose_preview_has_keys_that_are_not_strings_is_adopted(storage, executor):
    """JSON makes a dict's int keys strings: the worker signs the document as its driver reads it back. Was: int
    keys sorted as ints by the worker, as strings by the driver: OutcomeUnverified at every attempt; ints and strings
    together: the worker's sort raised TypeError, no outcome."""
    submit(executor, storage, framed, 7)
    outcome = outcome_of(executor)
    assert outcome.error_info is None, outcome.error_info
    frame = value_of(storage, outcome)
    assert list(frame["c"]) == [{2: "a", 10: "b"}, {7: "q", "b": 2}]


def test_an_honest_workers_outcome_is_adopted_by_its_driver_and_by_a_restarted_one(storage, executor):
    t = submit(executor, storage, double, 21)
    assert value_of(storage, outcome_of(executor)) == 42
    assert "signature" in json.loads(storage.get(outcome_key(t.run_id, 1)))
    again = ProcessExecutor(storage, executor.storage_url)  # a restarted driver of the same resolution
    try:
        # its outcome is there: read, not run again
        again.submit(input_task(storage, double, 21, t.run_id, resumed=True))
        assert value_of(storage, outcome_of(again)) == 42
    finally:
        again.close()


def test_a_restarted_driver_does_not_adopt_a_replaced_outcome(storage, executor, caplog):
    """A driver restarted after the worker ended (its outcome there, replaced meanwhile) verifies it too."""
    caplog.set_level(logging.WARNING, "sematic_k8s")
    t = submit(executor, storage, double, 21)
    replace_outcome(storage, t.run_id, 666)
    executor.procs[t.run_id].proc.wait()  # it ended; its driver is gone before it read its outcome
    again = ProcessExecutor(storage, executor.storage_url)
    try:
        again.submit(input_task(storage, double, 21, t.run_id, resumed=True))
        assert_not_adopted(outcome_of(again), t.run_id, caplog)
    finally:
        again.close()


def test_an_outcome_planted_before_its_worker_wrote_is_not_adopted_and_the_attempt_runs_again(tmp_path, caplog):
    """Was: the pipeline resolved to the planted 666."""
    caplog.set_level(logging.WARNING, "sematic_k8s")
    f = plants_its_outcome(21)
    assert f.resolve(ProcessResolver(home=tmp_path)) == 42
    [run] = sql_store(f"sqlite:///{tmp_path / 'db.sqlite3'}").runs_of_root(f.id)
    assert run.state == "resolved"
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"run {f.id} attempt ")]
    assert len(said) == 1 and "attempt 1: its outcome document is unsigned" in said[0], said  # then the loop's retry


def test_a_task_carrying_its_signing_key_is_never_stored_in_the_bucket(storage, executor):
    """The stored copy of a task too large to hand over (``task_ref``, tasks/<root>/...) is the bucket's to read:
    one with a key is refused before anything is written, and a worker process's key goes on its stdin only."""
    from sematic_k8s.executors.remote import task_ref

    t = submit(executor, storage, double, 21)
    spec = executor.running[t.run_id]
    assert len(spec.signing_key) == 64 and spec.signing_key not in repr(spec)
    with pytest.raises(ValueError, match="carries a signing key: it is never stored"):
        task_ref(storage, spec)
    assert not (storage.root / "tasks").exists()
    assert value_of(storage, outcome_of(executor)) == 42
