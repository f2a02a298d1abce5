"""Execute funcs in this process: directly, or on a thread pool for parallel runs and timeouts."""

from __future__ import annotations

import queue
import time
from concurrent.futures import ThreadPoolExecutor

from sematic_k8s import logcapture
from sematic_k8s.context import Context, reset_context, set_context
from sematic_k8s.errors import RunInterrupted, error_info, user_frames
from sematic_k8s.executors import interrupts
from sematic_k8s.executors.base import Outcome, Task
from sematic_k8s.specs import DriverSpec
from sematic_k8s.storage.base import Storage


def execute(task: Task) -> Outcome:
    """Run one task's func body here, with its context set and its output captured. On the thread of a resolution
    loop, the body may be interrupted when the resolution is canceled: RunInterrupted then carries its output."""
    ctx_token = set_context(Context(task.run_id, task.root_id, task.root_id))
    buf, log_token = logcapture.start()
    try:
        inputs = {k: v.value for k, v in task.inputs.items()}
        task.func.check_inputs(inputs)
        guard = interrupts.current()
        value = task.func.fn(**inputs) if guard is None else guard.call(task.func.fn, **inputs)
        return Outcome(task.run_id, task.attempt, value=value, logs=buf.getvalue())
    except RunInterrupted as e:
        e.logs = buf.getvalue()
        raise
    except Exception as e:
        e.with_traceback(user_frames(e.__traceback__))  # shown from the user's code on, wherever it is shown
        return Outcome(task.run_id, task.attempt, error=e, error_info=error_info(e), logs=buf.getvalue())
    finally:
        logcapture.stop(log_token)
        reset_context(ctx_token)


class InlineExecutor:
    """In-process execution. ``max_parallelism`` > 1 uses threads; timeouts are enforced by no
    longer waiting for the run (a Python thread cannot be killed, so its body may go on)."""

    in_process = True  # funcs run here: they read their inputs from memory, not from artifact storage

    def __init__(self, max_parallelism: int = 1) -> None:
        self.max_parallelism = max_parallelism
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._pool: ThreadPoolExecutor | None = None
        self._deadlines: dict[str, tuple[float, Task]] = {}

    @classmethod
    def from_spec(cls, spec: DriverSpec, storage: Storage) -> InlineExecutor:
        """A driver's executor for its inline funcs."""
        return cls(spec.resolution.max_parallelism)

    def submit(self, task: Task) -> None:
        if self.max_parallelism <= 1 and task.func.timeout is None:
            self._done.put(execute(task))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max(1, self.max_parallelism), thread_name_prefix="sk-run")
        if task.func.timeout is not None:
            self._deadlines[task.run_id] = (time.monotonic() + task.func.timeout, task)
        self._pool.submit(lambda: self._done.put(execute(task)))

    def wait(self, timeout: float | None) -> list[Outcome]:
        out: list[Outcome] = []
        if self._deadlines:
            next_deadline = min(d for d, _ in self._deadlines.values()) - time.monotonic()
            timeout = max(0.0, next_deadline if timeout is None else min(timeout, next_deadline))
        try:
            out.append(self._done.get(timeout=timeout) if timeout is None or timeout > 0
                       else self._done.get_nowait())
        except queue.Empty:
            pass
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                break
        for o in out:
            self._deadlines.pop(o.run_id, None)
        now = time.monotonic()
        for run_id, (deadline, task) in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[run_id]
                e = TimeoutError(f"{task.func.name} exceeded its timeout of {task.func.timeout:g}s")
                out.append(Outcome(run_id, task.attempt, error=e, error_info=error_info(e)))
        return out

    def cancel(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self._deadlines.pop(run_id, None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
