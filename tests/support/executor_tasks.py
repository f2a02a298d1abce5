"""A task of one stored input handed to an executor, and its outcome read back: shared by the executor tests."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sematic_k8s import serialization
from sematic_k8s.executors.base import Executor, Outcome, Task
from sematic_k8s.storage.base import Storage, artifact_key, artifact_loader, put_artifact


def input_task(storage: Storage, func: Any, x: Any, run_id: str | None = None, *,  # noqa: ANN401
               resumed: bool = False) -> Task:
    """A task of ``func`` whose input ``x`` is stored in ``storage`` first (a new run and root unless ``run_id``)."""
    record = put_artifact(storage, serialization.serialize(x))
    value = serialization.Value(record["id"], record["format"], record["type_name"], load=artifact_loader(storage))
    return Task(run_id or uuid.uuid4().hex, uuid.uuid4().hex, func, {"x": value}, resumed=resumed)


def submit(executor: Executor, storage: Storage, func: Any, x: Any) -> Task:  # noqa: ANN401
    """:func:`input_task` submitted to ``executor``."""
    task = input_task(storage, func, x)
    executor.submit(task)
    return task


def outcome_of(executor: Executor) -> Outcome:
    """The executor's next outcome, within two minutes."""
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + 120
    while not outcomes and time.monotonic() < deadline:
        outcomes = executor.wait(5)
    assert outcomes, "no outcome within two minutes"
    return outcomes[0]


def value_of(storage: Storage, outcome: Outcome) -> Any:  # noqa: ANN401
    """The value of ``outcome``'s output, read from ``storage``."""
    assert outcome.output is not None, outcome.error_info
    return serialization.deserialize(outcome.output["format"], storage.get(artifact_key(outcome.output["id"])))
