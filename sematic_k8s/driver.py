"""Driver entrypoint: resolve one Resolution inside a container or pod.

``python -m sematic_k8s.driver`` reads a DriverSpec from $SEMATIC_K8S_DRIVER, loads the pickled
root Future from artifact storage, and runs the same resolution loop as the LocalResolver, with
inline funcs in this process and the others in their own containers or pods. It records through
the server ($SEMATIC_K8S_SERVER, with the API key from $SEMATIC_K8S_API_KEY).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from sematic_k8s import serialization, settings
from sematic_k8s.errors import ResolutionFailed
from sematic_k8s.executors.inline import InlineExecutor
from sematic_k8s.executors.split import SplitExecutor
from sematic_k8s.func import load_func
from sematic_k8s.future import Future
from sematic_k8s.graph import TERMINAL
from sematic_k8s.resolvers.local import open_store
from sematic_k8s.resolvers.loop import ResolutionLoop
from sematic_k8s.specs import DriverSpec
from sematic_k8s.storage.base import Storage, artifact_loader
from sematic_k8s.storage.urls import storage_from_url
from sematic_k8s.store.base import Store

DRIVER_ENV = settings.DRIVER_ENV


def worker_env() -> dict[str, str]:
    """The part of the driver's environment that workers need (storage credentials, source map)."""
    return {k: v for k, v in os.environ.items() if k.startswith(settings.WORKER_PASS_THROUGH)}


def remote_executor(spec: DriverSpec, storage: Storage) -> Any:
    """The executor for non-inline funcs named by the spec."""
    if spec.executor == "docker":
        from sematic_k8s.executors.docker import DockerExecutor

        return DockerExecutor(storage, spec.storage_url, spec.image, env=worker_env())
    if spec.executor == "process":
        from sematic_k8s.executors.process import ProcessExecutor

        return ProcessExecutor(storage, spec.storage_url)
    if spec.executor == "kubernetes":
        from sematic_k8s.executors.kubernetes import KubernetesExecutor

        return KubernetesExecutor(storage, spec.storage_url, spec.image, **spec.executor_settings)
    raise ValueError(f"unknown executor {spec.executor!r}: use docker, process or kubernetes")


def driver_env(spec: DriverSpec, server: str, api_key: str | None, source_map: str | None) -> dict[str, str]:
    """The environment of a driver container or pod."""
    env = {**worker_env(), DRIVER_ENV: spec.to_json(), settings.SERVER_ENV: server}
    if source_map:
        env[settings.SOURCE_MAP_ENV] = source_map
    if api_key:
        env[settings.API_KEY_ENV] = api_key
    return env


def start_driver(spec: DriverSpec, env: dict[str, str]) -> None:
    """Start the driver for ``spec``: a container on this machine, or a Job on the cluster."""
    root_id = spec.root_id or ""
    if spec.executor == "kubernetes":
        from sematic_k8s.executors.kubernetes import launch_driver

        launch_driver(spec, root_id, env, namespace=spec.executor_settings.get("namespace"))
        return
    import docker

    from sematic_k8s.labels import run_labels

    docker.from_env().containers.run(
        spec.image, ["python", "-m", "sematic_k8s.driver"], detach=True, network_mode="host",
        environment=env, labels=run_labels(root_id, root_id, "driver", "driver"),
        name=f"sk-driver-{root_id[:12]}-{os.urandom(3).hex()}",
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock"}})


def drive(spec: DriverSpec, store: Store) -> Any:
    """Resolve the spec's root Future; returns its value or raises ResolutionFailed."""
    storage = storage_from_url(spec.storage_url)
    if spec.root is not None:
        root = serialization.Value(spec.root["id"], spec.root["format"], "Future", load=artifact_loader(storage)).value
    elif spec.resolution.rerun_from and spec.root_func:  # a rerun reuses the recorded arguments
        root = Future(load_func(spec.root_func, spec.root_source_file), {})
    else:
        raise ValueError("the driver spec has neither a pickled root nor a rerun of a recorded root func")
    executor = SplitExecutor(InlineExecutor(spec.resolution.max_parallelism), remote_executor(spec, storage))
    r = spec.resolution
    loop = ResolutionLoop(store, storage, executor, kind="cloud", cache_namespace=r.cache_namespace,
                          max_parallelism=r.max_parallelism, rerun_from=r.rerun_from,
                          rerun_mode=r.rerun_mode, image=spec.image, build_hash=spec.build_hash,
                          root_id=r.root_id, settings={
                              "storage_url": spec.storage_url, "executor": spec.executor,
                              "executor_settings": spec.executor_settings,
                              "source_map": os.environ.get(settings.SOURCE_MAP_ENV)})
    return loop.run(root)


def main() -> int:
    """Container entrypoint: exit 0 when the resolution resolved, 1 when it failed."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s driver %(levelname)s %(message)s")
    spec = DriverSpec.from_json(os.environ[DRIVER_ENV])
    store = open_store(settings.home())  # the server at $SEMATIC_K8S_SERVER; else $SEMATIC_K8S_DB_URL
    ended = store.get_resolution(spec.root_id) if spec.root_id else None
    if ended is not None and ended.state in TERMINAL:  # restarted after the end was recorded: nothing to do
        print(f"resolution {ended.id} already ended: {ended.state}", file=sys.stderr)
        return 0 if ended.state == "resolved" else 1
    try:
        drive(spec, store)
    except ResolutionFailed as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
