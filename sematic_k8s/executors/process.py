"""Run each Run attempt as a worker process on this machine (``python -m sematic_k8s.worker``).

The same worker contract as containers and pods, without an image: useful to run funcs isolated
from the driver, and to test the remote path end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from sematic_k8s.executors.base import Task
from sematic_k8s.executors.remote import Ended, RemoteExecutor
from sematic_k8s.settings import API_KEY_ENV, API_KEY_FILE_ENV
from sematic_k8s.specs import WORKER_MODULE, DriverSpec, TaskSpec
from sematic_k8s.storage.base import Storage

NO_WORKER_ENV = frozenset({API_KEY_ENV, API_KEY_FILE_ENV})


class ProcessExecutor(RemoteExecutor):
    """One child process per run attempt."""

    def __init__(self, storage: Storage, storage_url: str, *, cwd: str | None = None) -> None:
        super().__init__(storage, storage_url)
        self.cwd = cwd
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @classmethod
    def from_spec(cls, spec: DriverSpec, storage: Storage) -> ProcessExecutor:
        """A driver's executor: worker processes beside it (no image)."""
        return cls(storage, spec.storage_url)

    def launch(self, spec: TaskSpec, task: Task, env: dict[str, str]) -> None:
        path = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
        inherited = {k: v for k, v in os.environ.items() if k not in NO_WORKER_ENV}  # workers get no credential
        self.procs[spec.run_id] = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE], cwd=self.cwd,
            env={**inherited, "PYTHONPATH": path, **env}, stdin=subprocess.DEVNULL)

    def ended(self, timeout: float) -> list[Ended]:
        deadline = time.monotonic() + timeout
        while True:
            done = [Ended(run_id, p.returncode, details={"executor": "process", "pid": p.pid})
                    for run_id, p in self.procs.items() if p.poll() is not None]
            for e in done:
                del self.procs[e.run_id]
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))

    def stop(self, run_id: str) -> None:
        proc = self.procs.pop(run_id, None)
        if proc is not None:
            proc.kill()
            proc.wait()
