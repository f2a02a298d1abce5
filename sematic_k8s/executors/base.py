"""The executor interface: where one Run's code executes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sematic_k8s.func import Func


@dataclass(slots=True)
class Task:
    """One attempt at executing one Run."""

    run_id: str
    root_id: str
    func: Func
    inputs: dict[str, Any]  # parameter -> value
    input_ids: dict[str, str]  # parameter -> artifact id
    attempt: int = 1


@dataclass(slots=True)
class Outcome:
    """What one attempt produced: a returned value (plain or Futures) or an error."""

    run_id: str
    attempt: int
    value: Any = None
    error: BaseException | None = None
    error_info: dict[str, Any] | None = None  # {"type", "message", "traceback"}
    logs: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # where it ran (container, pod, ...)


class Executor(Protocol):
    """Runs Tasks somewhere and reports their Outcomes."""

    def submit(self, task: Task) -> None: ...

    def wait(self, timeout: float | None) -> list[Outcome]:
        """Outcomes finished so far; blocks up to ``timeout`` seconds (None: forever) for the first."""

    def cancel(self, run_ids: list[str]) -> None: ...

    def close(self) -> None: ...
