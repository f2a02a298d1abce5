"""Worker entrypoint: execute one Run attempt in a container, pod or process.

``python -m sematic_k8s.worker`` reads its TaskSpec (JSON) from the file $SEMATIC_K8S_TASK_FILE names (a
container's, removed once read; a pod's, in its Job's own Secret, mounted read-only, or fetched through the presigned
GET that Secret holds when the task is too large for it) or from its stdin ("-", a
worker process's), else from $SEMATIC_K8S_TASK (a task without URLs), and reaches artifact storage through the
presigned URLs it holds (containers and pods: no botocore, no credentials) or else through $SEMATIC_K8S_STORAGE
(worker processes; pods where the storage makes no URLs), then runs
:func:`sematic_k8s.executors.remote.run_task`: it loads the inputs, runs the func, and writes the output
artifact, the captured logs and an outcome document (:func:`sematic_k8s.specs.outcome_key`) to storage, then,
when $SEMATIC_K8S_SAY_STORED is set, prints :data:`~sematic_k8s.specs.WORKER_STORED_LINE` (the DockerExecutor,
which follows a container's stdout, reads the outcome then rather than when Docker has noticed the container's
end). Nothing imports this module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

from sematic_k8s import settings
from sematic_k8s.errors import InfrastructureError
from sematic_k8s.executors.remote import load_task, run_task
from sematic_k8s.specs import WORKER_EXIT_INFRASTRUCTURE, WORKER_SAYS, WORKER_STORED_LINE, TaskSpec
from sematic_k8s.storage.presigned import PresignedStorage
from sematic_k8s.storage.urls import storage_from_url

PARENT_CHECK_INTERVAL = 0.2  # seconds between a worker process's looks at whether its driver is still there


def die_with_parent(parent: int) -> None:
    """End this process (SIGKILL), with the processes its func started when it leads their group (the process
    executor's workers do), as soon as ``parent`` is no longer its parent: the driver that started it died (kill -9,
    an OOM kill) and it was handed to another. Its attempt has no one to report to: a driver started again runs the
    attempt afresh (the process executor does not re-attach), and this one must not run beside it. A thread's poll
    rather than Linux's ``PR_SET_PDEATHSIG``, which fires when the *thread* that started the worker ends, and exists
    on Linux only."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_INTERVAL)
        if os.getpgid(0) == os.getpid():
            os.killpg(0, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="sk-parent-watch").start()


def read_task() -> TaskSpec:
    """This worker's task: from stdin (``$SEMATIC_K8S_TASK_FILE`` "-") or the file it names, which is removed once
    read (a container's: the presigned PUT of its outcome is not left in it for whoever reads it later; a pod's
    Secret volume is read-only: its driver deletes the Secret when the attempt ends), else from $SEMATIC_K8S_TASK.
    A pod's Secret may hold a reference to its stored copy instead (too large for a Secret): fetched
    (:func:`~sematic_k8s.executors.remote.load_task`; StorageError when it cannot be)."""
    path = os.environ.get(settings.TASK_FILE_ENV)
    if not path:
        return TaskSpec.from_json(os.environ[settings.TASK_ENV])
    if path == "-":
        return load_task(sys.stdin.buffer.read().decode())
    with open(path, "rb") as f:
        text = f.read().decode()
    with contextlib.suppress(OSError):  # a read-only file system: it goes with its container
        os.unlink(path)
    return load_task(text)


def main() -> int:
    """Container entrypoint: exit 0 when the func returned, 1 when it raised, 75 on an infrastructure failure
    (storage not reached after retrying for the retry window, or its disk full), named in the last line it prints
    on stderr: its executor records it from there (:func:`sematic_k8s.executors.remote.worker_said`)."""
    if os.environ.get(settings.PARENT_PID_ENV):  # a worker process (containers and pods end with their executors')
        die_with_parent(int(os.environ[settings.PARENT_PID_ENV]))
    try:
        spec = read_task()
        storage = PresignedStorage(spec.urls) if spec.urls else storage_from_url(os.environ[settings.STORAGE_ENV])
        doc = run_task(spec, storage)
    except InfrastructureError as e:
        print(f"{WORKER_SAYS}{type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return WORKER_EXIT_INFRASTRUCTURE
    if os.environ.get(settings.SAY_STORED_ENV):  # its executor follows stdout: it reads the outcome now, not at exit
        print(WORKER_STORED_LINE, flush=True)
    return 1 if "error" in doc else 0


if __name__ == "__main__":
    sys.exit(main())
