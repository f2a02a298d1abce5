"""Run each Run attempt as a worker process on this machine (``python -m sematic_k8s.worker``).

The same worker contract as containers and pods, without an image: useful to run funcs isolated
from the driver, and to test the remote path end to end. A worker's stderr is passed on to this process's and
its last lines are kept, as a container's log is: they tell why a worker died, and name the infrastructure failure
of one that exited 75 (:func:`~sematic_k8s.executors.remote.worker_said`). A worker ends itself when this process
dies (:func:`sematic_k8s.worker.die_with_parent`): nothing would read its outcome, and a driver started again runs
the attempt afresh. A worker's task (with presigned URLs, where its executor makes them, and the key it signs its
outcome document with: :mod:`~sematic_k8s.executors.outcome_signing`) reaches it on its stdin, never in its
environment. Each worker leads a session of its own: the processes its func starts end with it (when it
ends, is stopped past its timeout or canceled), as a container's do.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import IO

from sematic_k8s.executors.base import Task
from sematic_k8s.executors.remote import LOG_TAIL, Ended, RemoteExecutor
from sematic_k8s.settings import PARENT_PID_ENV, SECRET_FILE_ENVS, STORAGE_KEY_ENVS, TASK_FILE_ENV
from sematic_k8s.specs import WORKER_MODULE, DriverSpec, TaskSpec
from sematic_k8s.storage.base import Storage

# the driver's secrets for the server (its API key or token, the server URL's user info) and the variables naming
# files that hold them: a worker records nothing through the server. Its S3 keys (or their files' names) stay: a
# worker process stores through the storage itself (this executor does not presign), and a user's func may use them
NO_WORKER_ENV = frozenset(env for name, file_env in SECRET_FILE_ENVS.items() if name not in STORAGE_KEY_ENVS
                          for env in (name, file_env))
RELAY_PIECE = 64 * 1024  # bytes of a worker's stderr line read at once (see _relay)
RELAY_GRACE = 2.0  # seconds a failed worker's last lines may take to be read after it exited (a child of its may
# hold its stderr open: then what was read by then)


@dataclass(slots=True)
class _Worker:
    proc: subprocess.Popen[bytes]
    lines: deque[str]  # its last lines on stderr
    relay: threading.Thread  # reads them, until the pipe closes


class ProcessExecutor(RemoteExecutor):
    """One child process per run attempt."""

    signs = True  # its task reaches it on its stdin only: its outcome is signed with its attempt's key

    def __init__(self, storage: Storage, storage_url: str, *, cwd: str | None = None,
                 secret: bytes | None = None) -> None:
        super().__init__(storage, storage_url, secret=secret)
        # where workers start, and the directory on their path: this process's as it starts, not as an inline func
        # may have left it (os.chdir elsewhere, or into a directory deleted since, which os.getcwd() cannot name)
        self.start_dir = os.getcwd()
        self.cwd = cwd or self.start_dir
        self.procs: dict[str, _Worker] = {}

    @classmethod
    def from_spec(cls, spec: DriverSpec, storage: Storage, secret: bytes | None = None) -> ProcessExecutor:
        """A driver's executor: worker processes beside it (no image), their keys derived from its ``secret``."""
        return cls(storage, spec.storage_url, secret=secret)

    def launch(self, spec: TaskSpec, task: Task, env: dict[str, str]) -> None:
        path = os.pathsep.join(filter(None, [self.start_dir, os.environ.get("PYTHONPATH")]))
        inherited = {k: v for k, v in os.environ.items() if k not in NO_WORKER_ENV}  # nor the server's credentials
        env = {**inherited, "PYTHONPATH": path, **env, TASK_FILE_ENV: "-", PARENT_PID_ENV: str(os.getpid())}
        proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE], cwd=self.cwd, env=env,
                                stdin=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        # its task on its stdin, not in its environment (ps e, /proc/PID/environ): a thread, as a large one fills
        # the pipe until the worker reads it; nothing is left on disk by a worker killed before it read it
        threading.Thread(target=_send, args=(proc.stdin, spec.to_json().encode()), daemon=True,
                         name="sk-worker-task").start()
        lines: deque[str] = deque(maxlen=LOG_TAIL)
        relay = threading.Thread(target=_relay, args=(proc.stderr, lines), daemon=True, name="sk-worker-stderr")
        relay.start()
        self.procs[spec.run_id] = _Worker(proc, lines, relay)

    def ended(self, timeout: float) -> list[Ended]:
        deadline = time.monotonic() + timeout
        while True:
            done = [self._ended(run_id, w) for run_id, w in list(self.procs.items()) if w.proc.poll() is not None]
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))

    def _ended(self, run_id: str, w: _Worker) -> Ended:
        del self.procs[run_id]
        _end_group(w.proc)  # what its func left running ends with it, as in a container (and lets go of its stderr)
        w.relay.join(RELAY_GRACE)  # its last lines tell why it died, even with exit code 0 (os._exit(0) in its func)
        return Ended(run_id, w.proc.returncode, last_logs="".join(w.lines),
                     details={"executor": "process", "pid": w.proc.pid})

    def tail(self, run_id: str) -> str:
        w = self.procs.get(run_id)
        return "".join(w.lines) if w is not None else ""

    def stop(self, run_id: str) -> None:
        w = self.procs.pop(run_id, None)
        if w is not None:
            _end_group(w.proc)
            w.proc.wait()


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill (SIGKILL: no handler delays it) a worker and every process its func started that is still in the
    worker's session: a child that outlives its func's timeout or cancel, or its return, goes as in a container."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # none left (the group ended with the worker)
        os.killpg(proc.pid, signal.SIGKILL)


def _send(pipe: IO[bytes], data: bytes) -> None:
    """Write a worker's task to its stdin and close it; nothing when the worker died before reading it."""
    with contextlib.suppress(OSError), pipe:  # BrokenPipeError: it is gone
        pipe.write(data)


def _relay(stream: IO[bytes], lines: deque[str]) -> None:
    """Pass a worker's stderr on to this process's, line by line, keeping its last lines: a line longer than
    RELAY_PIECE bytes is read (and kept) in pieces, so a worker writing without newlines (a binary dump, a progress
    bar's hundreds of megabytes) holds at most LOG_TAIL pieces here, not whole lines of any size."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character cut between pieces stays whole
    with stream:
        while line := stream.readline(RELAY_PIECE):
            lines.append(decoder.decode(line))
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(2, view):]
            except OSError:  # this process's stderr is gone: the lines are still kept
                pass
