"""A scripted executor: each attempt's outcome decided in advance, for tests of the resolution loop.

Outcomes are ready as soon as a task is submitted: no threads, no processes, no waiting (except for a
retry's backoff timer, which the loop owns). Funcs without a script run their body here, as the
InlineExecutor does with one thread::

    ScriptedExecutor({"train": [ConnectionError("flaky"), 0.9]})  # attempt 1 raises, attempt 2 returns 0.9
    ScriptedExecutor({"train": [errors.OOMKilled("the worker ran out of memory")]})  # a worker that died

A script entry that is an exception (``Exception`` or a :class:`~sematic_k8s.errors.WorkerDied`) is the
attempt's error; anything else is its return value. Attempts past the end of a script repeat its last entry.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sematic_k8s.error_records import error_info
from sematic_k8s.executors.base import Outcome, Task
from sematic_k8s.executors.inline import execute


class ScriptedExecutor:
    """Outcomes by func name and attempt; records what it was asked (``submitted``, ``canceled``)."""

    def __init__(self, script: Mapping[str, Sequence[Any]] | None = None) -> None:
        self.script = {name: list(entries) for name, entries in (script or {}).items()}
        self.submitted: list[Task] = []
        self.canceled: list[str] = []
        self.closed = False
        self._ready: list[Outcome] = []

    def submit(self, task: Task) -> None:
        self.submitted.append(task)
        entries = self.script.get(task.func.name)
        if not entries:
            self._ready.append(execute(task))
            return
        entry = entries[min(task.attempt, len(entries)) - 1]
        if isinstance(entry, BaseException):
            self._ready.append(Outcome(task.run_id, task.attempt, error=entry, error_info=error_info(entry)))
        else:
            self._ready.append(Outcome(task.run_id, task.attempt, value=entry))

    def wait(self, timeout: float | None) -> list[Outcome]:
        if not self._ready and timeout:  # only a retry timer is pending: let it come
            time.sleep(timeout)
        out, self._ready = self._ready, []
        return out

    def cancel(self, run_ids: list[str]) -> None:
        self.canceled.extend(run_ids)

    def close(self) -> None:
        self.closed = True

    def attempts(self, func_name: str) -> list[int]:
        """The attempts submitted for ``func_name``'s runs, in order."""
        return [t.attempt for t in self.submitted if t.func.name == func_name]
