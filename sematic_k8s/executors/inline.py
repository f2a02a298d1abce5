"""Execute funcs in this process: directly, or on threads of the executor's own for parallel runs and timeouts."""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from sematic_k8s import logcapture
from sematic_k8s.context import Context, reset_context, set_context
from sematic_k8s.error_records import error_info, user_frames
from sematic_k8s.errors import RunInterrupted
from sematic_k8s.executors import interrupts
from sematic_k8s.executors.base import Outcome, Task
from sematic_k8s.executors.interrupts import BodyGuard
from sematic_k8s.specs import DriverSpec
from sematic_k8s.storage.base import Storage


def execute(task: Task, *, own_inputs: bool = False) -> Outcome:
    """Run one task's func body here, with its context set and its output captured. On a thread with a guard (a
    resolution loop's, an executor thread's), the body may be interrupted: RunInterrupted then carries its output.
    A body that raises SystemExit (``sys.exit``) fails its run, as any error of its code. ``own_inputs``: the body
    gets copies of its input values (:func:`own_copy`), which it may change as it likes: the values are shared in
    this process (another run's input, a cached output, the resolution's result), and stay as recorded."""
    ctx_token = set_context(Context(task.run_id, task.root_id, task.root_id))
    buf, log_token = logcapture.start()
    try:
        inputs = {k: own_copy(v.value) if own_inputs else v.value for k, v in task.inputs.items()}
        task.func.check_inputs(inputs)
        guard = interrupts.current()
        value = task.func.fn(**inputs) if guard is None else guard.call(task.func.fn, **inputs)
        return Outcome(task.run_id, task.attempt, value=value, logs=buf.getvalue())
    except RunInterrupted as e:
        e.logs = buf.getvalue()
        raise
    except (Exception, SystemExit) as e:
        e.with_traceback(user_frames(e.__traceback__))  # shown from the user's code on, wherever it is shown
        return Outcome(task.run_id, task.attempt, error=e, error_info=error_info(e), logs=buf.getvalue())
    finally:
        logcapture.stop(log_token)
        reset_context(ctx_token)


def own_copy(value: Any) -> Any:  # noqa: ANN401 - any value a func takes
    """A copy of a value that a body may change without changing it for anyone else, as a worker loads a copy of its
    own: ``copy.deepcopy`` (immutable values are themselves). A value it cannot copy (a module inside it) is given as
    it is."""
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - whatever the value's own copying raised: shared, as before
        return value


Key = tuple[str, int]  # (run id, attempt)
GRACE = 2.0  # seconds close() gives stopped bodies to end (their finally blocks run) before leaving them behind


class _Pool:
    """Daemon threads taking tasks from one queue, a new one whenever none is idle. Daemon: a thread whose body never
    ends (stuck in a blocking C call after its interrupt) does not keep the process from exiting, as a
    ThreadPoolExecutor's would (its threads are joined at exit); it counts as busy, so it holds up no other run."""

    def __init__(self, run: Callable[[Task], None]) -> None:
        self._run = run
        self._work: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._lock = threading.Condition()
        self._threads = self._idle = 0

    def submit(self, task: Task) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                self._threads += 1
                threading.Thread(target=self._serve, name=f"sk-run_{self._threads}", daemon=True).start()
        self._work.put(task)

    def _serve(self) -> None:
        while (task := self._work.get()) is not None:
            self._run(task)
            with self._lock:
                self._idle += 1
                self._lock.notify_all()

    def settle(self, timeout: float) -> None:
        """Wait until no body runs, at most ``timeout`` seconds."""
        with self._lock:
            self._lock.wait_for(lambda: self._idle >= self._threads, timeout)

    def shutdown(self) -> None:
        """Idle threads end; busy ones once their body ends."""
        with self._lock:
            threads = self._threads
        for _ in range(threads):
            self._work.put(None)


class InlineExecutor:
    """In-process execution. ``max_parallelism`` > 1, or a func's ``timeout``, runs bodies on threads (:class:`_Pool`),
    each body under a :class:`~sematic_k8s.executors.interrupts.BodyGuard` of its own: a run canceled (the resolution
    canceled, Ctrl-C) or past its timeout has its body stopped (RunInterrupted raised in it at the thread's next
    bytecode), and whatever the body gives when it ends is dropped: the loop has accounted for the run already."""

    in_process = True  # funcs run here: they read their inputs from memory, not from artifact storage

    def __init__(self, max_parallelism: int = 1) -> None:
        self.max_parallelism = max_parallelism
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._pool: _Pool | None = None
        self._deadlines: dict[str, tuple[float, Task]] = {}
        self._lock = threading.Lock()
        self._live: dict[Key, BodyGuard | None] = {}  # attempts on threads, not stopped: their guard once begun

    @classmethod
    def from_spec(cls, spec: DriverSpec, storage: Storage, secret: bytes | None = None) -> InlineExecutor:
        """A driver's executor for its inline funcs (they run here: nothing signed, ``secret`` unused)."""
        return cls(spec.resolution.max_parallelism)

    def submit(self, task: Task) -> None:
        if self.max_parallelism <= 1 and task.func.timeout is None:
            self._done.put(execute(task, own_inputs=True))
            return
        if self._pool is None:
            self._pool = _Pool(self._run)
        if task.func.timeout is not None:
            self._deadlines[task.run_id] = (time.monotonic() + task.func.timeout, task)
        with self._lock:
            self._live[(task.run_id, task.attempt)] = None
        self._pool.submit(task)

    def _run(self, task: Task) -> None:
        """A pool thread's: the task's body under a guard of its own, its outcome reported unless it was stopped."""
        key = (task.run_id, task.attempt)
        guard = BodyGuard()
        guard.open()
        try:
            with self._lock:
                if key not in self._live:
                    return  # stopped before it began
                self._live[key] = guard
            try:
                outcome = execute(task, own_inputs=True)
            except BaseException as e:  # noqa: BLE001 - RunInterrupted when stopped (dropped below); else the body's
                outcome = Outcome(task.run_id, task.attempt, error=e, error_info=error_info(e),
                                  logs=getattr(e, "logs", ""))  # (SystemExit, say): its run's error, not a lost thread
            with self._lock:
                if self._live.pop(key, None) is not guard:
                    return  # stopped (interrupted, or just as it ended): whatever it gave is dropped
            self._done.put(outcome)
        finally:
            guard.close()

    def _stop(self, keys: list[Key]) -> None:
        """Stop these attempts: a body running is interrupted, one not begun never begins; none is reported."""
        with self._lock:
            for key in keys:
                guard = self._live.pop(key, None)
                if guard is not None:
                    guard.stop()

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
                self._stop([(run_id, task.attempt)])
                e = TimeoutError(f"{task.func.name} exceeded its timeout of {task.func.timeout:g}s")
                out.append(Outcome(run_id, task.attempt, error=e, error_info=error_info(e)))
        return out

    def cancel(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self._deadlines.pop(run_id, None)
        canceled = set(run_ids)
        with self._lock:
            keys = [key for key in self._live if key[0] in canceled]
        self._stop(keys)

    def close(self) -> None:
        """Bodies still running are stopped (the resolution is over for this process), and given GRACE seconds to
        end (an interrupt lands at a thread's next bytecode): one still in a blocking call then is left behind."""
        with self._lock:
            keys = list(self._live)
        self._stop(keys)
        if self._pool is not None:
            self._pool.settle(GRACE)
            self._pool.shutdown()
            self._pool = None
