"""A driver's executor: inline funcs run in the driver's own process, the others go to a remote executor
(worker processes, containers or pods)."""

from __future__ import annotations

import time

from sematic_k8s.executors.base import Executor, Outcome, Task

SLICE = 0.02  # seconds: how long one executor is waited on before checking the other


class InlineOrRemoteExecutor:
    """Routes each task by ``func.inline`` (in this process, or remote) and waits on both executors."""

    def __init__(self, inline: Executor, remote: Executor) -> None:
        self.inline, self.remote = inline, remote
        self.where: dict[str, Executor] = {}

    def submit(self, task: Task) -> None:
        target = self.inline if task.func.inline else self.remote
        self.where[task.run_id] = target
        target.submit(task)

    def wait(self, timeout: float | None) -> list[Outcome]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            out = self.inline.wait(0) + self.remote.wait(0 if deadline is not None and timeout == 0 else SLICE)
            if out or (deadline is not None and time.monotonic() >= deadline):
                for o in out:
                    self.where.pop(o.run_id, None)
                return out

    @property
    def waiting(self) -> dict[str, str]:
        """Run id -> what its remote worker waits for (capacity, quota), where the remote executor says."""
        return getattr(self.remote, "waiting", None) or {}

    def cancel(self, run_ids: list[str]) -> None:
        for executor in (self.inline, self.remote):
            executor.cancel([r for r in run_ids if self.where.get(r) is executor])

    def close(self) -> None:
        self.inline.close()
        self.remote.close()

    def detach(self) -> None:
        """The driver is about to exit and be restarted: stop waiting, but leave remote workers running (the
        restarted driver re-attaches to them)."""
        self.inline.close()
        detach = getattr(self.remote, "detach", None)
        (detach or self.remote.close)()
