"""What a driver does with its DriverSpec: the same resolution loop as the LocalResolver, recording through
the server, with inline funcs in the driver's process and the others on the spec's executor (chosen by name
in :data:`sematic_k8s.backends.EXECUTORS`)."""

from __future__ import annotations

import os
from typing import Any

from sematic_k8s import backends, serialization, settings
from sematic_k8s.executors.base import Executor
from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor
from sematic_k8s.func import load_func
from sematic_k8s.future import Future
from sematic_k8s.resolvers.loop import ResolutionLoop
from sematic_k8s.specs import DriverSpec
from sematic_k8s.storage.base import Storage, artifact_loader
from sematic_k8s.storage.urls import storage_from_url
from sematic_k8s.store.base import Store


def executor_for(name: str, spec: DriverSpec, storage: Storage) -> Executor:
    """The executor registered as ``name``, set up from the spec."""
    try:
        executor_class = backends.load(backends.EXECUTORS, name)
    except LookupError:
        raise ValueError(f"unknown executor {name!r}: use docker, process or kubernetes") from None
    executor: Executor = executor_class.from_spec(spec, storage)
    return executor


def remote_executor(spec: DriverSpec, storage: Storage) -> Executor:
    """The executor for non-inline funcs named by the spec."""
    return executor_for(spec.executor, spec, storage)


def drive(spec: DriverSpec, store: Store) -> Any:
    """Resolve the spec's root Future; returns its value or raises ResolutionFailed."""
    storage = storage_from_url(spec.storage_url)
    if spec.root is not None:
        root = serialization.Value(spec.root["id"], spec.root["format"], "Future", load=artifact_loader(storage)).value
    elif spec.resolution.rerun_from and spec.root_func:  # a rerun reuses the recorded arguments
        root = Future(load_func(spec.root_func, spec.root_source_file), {})
    else:
        raise ValueError("the driver spec has neither a pickled root nor a rerun of a recorded root func")
    executor = InlineOrRemoteExecutor(executor_for("inline", spec, storage), remote_executor(spec, storage))
    loop = ResolutionLoop(store, storage, executor, spec.resolution, kind="cloud", image=spec.image,
                          build_hash=spec.build_hash, recorded={
                              "storage_url": spec.storage_url, "executor": spec.executor,
                              "executor_settings": spec.executor_settings,
                              "source_map": os.environ.get(settings.SOURCE_MAP_ENV), "platform": spec.platform})
    loop.detach_on_outage = True  # a driver is restarted (its Job retries exit 75) and resumes
    return loop.run(root)
