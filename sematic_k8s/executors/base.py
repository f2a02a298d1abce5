"""The executor interface: where one Run's code executes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sematic_k8s.func import Func
from sematic_k8s.serialization import Value


@dataclass(slots=True)
class Task:
    """One attempt at executing one Run."""

    run_id: str
    root_id: str
    func: Func
    inputs: dict[str, Value]  # parameter -> artifact (value loaded on first use)
    attempt: int = 1
    resumed: bool = False  # a restarted driver's attempt that may have finished (or still run) meanwhile


@dataclass(slots=True)
class Outcome:
    """What one attempt produced: a returned value (plain or Futures) or an error."""

    run_id: str
    attempt: int
    value: Any = None
    error: BaseException | None = None
    error_info: dict[str, Any] | None = None  # {"type", "message", "traceback"}
    output: dict[str, Any] | None = None  # an artifact a remote worker stored: {id, format, type_name, ...}
    expansion: dict[str, Any] | None = None  # the artifact of a remote composition's pickled Futures
    logs: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # where it ran (container, pod, ...)


class Executor(Protocol):
    """Runs Tasks somewhere and reports their Outcomes."""

    def submit(self, task: Task) -> None: ...

    def wait(self, timeout: float | None) -> list[Outcome]:
        """Outcomes finished so far; blocks up to ``timeout`` seconds (None: forever) for the first."""

    def cancel(self, run_ids: list[str]) -> None: ...

    def close(self) -> None: ...
