"""Worker containers on the cluster model's simulated nodes (tests/support/kube_model): what ``python -m
sematic_k8s.worker`` does, run in-process from the container's env, and the behaviours the executor's tests give
pods (a worker held until the test lets it go); drivers of the Kubernetes executor run as processes against the model,
and a driver's Job as the model's API server has it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kube_model import Cluster, Script, SimContext
from sematic_k8s.executors.base import Executor, Outcome
from sematic_k8s.executors.remote import load_task, run_task
from sematic_k8s.k8s.manifests import driver_job_name
from sematic_k8s.settings import DRIVER_ENV, STORAGE_ENV, TASK_ENV, TASK_FILE_ENV
from sematic_k8s.specs import DriverSpec, TaskSpec
from sematic_k8s.storage.presigned import PresignedStorage
from sematic_k8s.storage.urls import storage_from_url

TESTS = Path(__file__).parent.parent
ROOT = TESTS.parent
DRIVER_PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "server"), str(TESTS / "k8s"), str(TESTS / "support")])


def worker(ctx: SimContext) -> int:
    """What ``python -m sematic_k8s.worker`` does, in-process: read the task (from the file $SEMATIC_K8S_TASK_FILE
    names, as the container's user: a mounted Secret's, fetched through the presigned GET it holds when the task was
    too large for it; else from $SEMATIC_K8S_TASK), run it, store its outcome (through its presigned URLs, if it has
    them)."""
    path = ctx.env.get(TASK_FILE_ENV)
    spec = load_task(ctx.read(path)) if path else TaskSpec.from_json(ctx.env[TASK_ENV])
    storage = PresignedStorage(spec.urls) if spec.urls else storage_from_url(ctx.env[STORAGE_ENV])
    doc = run_task(spec, storage)
    return 1 if "error" in doc else 0


def held(gate: threading.Event, timeout: float = 30.0) -> Callable[[SimContext], int]:
    """A worker that runs once ``gate`` is set; killed before that (its pod evicted or deleted), it exits 137
    without running."""
    def run(ctx: SimContext) -> int:
        for _ in range(int(timeout / 0.05)):
            if gate.wait(0.05) or ctx.stopped.is_set():
                break
        return 137 if ctx.stopped.is_set() else worker(ctx)
    return run


def behave(scripts: dict[str, Script] | None = None) -> Callable[[dict[str, Any], dict[str, Any]], Script]:
    """Containers named in ``scripts`` follow their Script; every other worker container runs the worker, and
    other containers (a driver's, a sidecar) run until stopped."""
    def behaviour(pod: dict[str, Any], container: dict[str, Any]) -> Script:
        if container["name"] in (scripts or {}):
            return (scripts or {})[container["name"]]
        return Script(func=worker) if container["name"] == "worker" else Script(forever=True)
    return behaviour


def ended(ex: Executor, n: int, timeout: float = 60.0) -> dict[str, Outcome]:
    """The outcomes of the next ``n`` runs ``ex`` reports ended (by run id), waiting up to ``timeout`` seconds."""
    got: dict[str, Outcome] = {}
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        for o in ex.wait(0.1):
            got[o.run_id] = o
    assert len(got) == n, f"only {len(got)} of {n} ended: {list(got)}"
    return got


def driver_job_of(cluster: Cluster, namespace: str, resolution_id: str) -> Any:
    """The driver Job of resolution ``resolution_id`` (a rerun's) in ``namespace`` on ``cluster``, or None."""
    api = cluster.client()
    try:
        return client.BatchV1Api(api).read_namespaced_job(driver_job_name(resolution_id), namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    finally:
        api.close()


def driver_processes(spec: DriverSpec, home: Path, db: str, env: Mapping[str, str] | None = None
                     ) -> Callable[[str], subprocess.Popen]:
    """A way to start drivers of ``spec`` as processes (``python -m sematic_k8s.driver``, the pipelines of tests/k8s
    importable) recording to the database at ``db``, not through a server, ``home`` their $SEMATIC_K8S_HOME, ``env``
    added to their environment: ``start(name)`` starts one (a Popen), its output in ``home``/<name>.log."""
    environ = {**os.environ, DRIVER_ENV: spec.to_json(), "SEMATIC_K8S_DB_URL": db, "SEMATIC_K8S_HOME": str(home),
               "PYTHONPATH": DRIVER_PYTHONPATH, **(env or {})}
    environ.pop("SEMATIC_K8S_SERVER", None)
    environ.pop("SEMATIC_K8S_API_KEY", None)

    def start(name: str) -> subprocess.Popen:
        with open(home / f"{name}.log", "w") as log:
            return subprocess.Popen([sys.executable, "-m", "sematic_k8s.driver"], env=environ, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=ROOT)
    return start
