"""What a driver does with its DriverSpec: the same resolution loop as the LocalResolver, recording through
the server, with inline funcs in the driver's process and the others on the spec's executor (chosen by name
in :data:`sematic_k8s.backends.EXECUTORS`).

A driver the server started (``packaged_only``) loads the funcs its records name only from the image's packaged
code (:mod:`sematic_k8s.packaged`). A func that is refused, or cannot be found, before the resolution is
recorded fails it at once: it is recorded as failed, with the reason, so the dashboard and the CLI show it.
"""

from __future__ import annotations

import os
from typing import Any

from sematic_k8s import backends, serialization, settings
from sematic_k8s.error_records import error_info
from sematic_k8s.errors import FuncNotFound, ResolutionFailed
from sematic_k8s.executors import outcome_signing
from sematic_k8s.executors.base import Executor
from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor
from sematic_k8s.func import load_func
from sematic_k8s.future import Future
from sematic_k8s.graph import FAILED
from sematic_k8s.packaged import restricted_if
from sematic_k8s.resolvers.loop import ResolutionLoop
from sematic_k8s.specs import DriverSpec
from sematic_k8s.storage.base import Storage, artifact_loader
from sematic_k8s.storage.urls import storage_from_url
from sematic_k8s.store.base import Store
from sematic_k8s.store.records import CLAIMED, Batch, ResolutionRecord, utcnow


def executor_for(name: str, spec: DriverSpec, storage: Storage, secret: bytes | None = None) -> Executor:
    """The executor registered as ``name``, set up from the spec, its workers' outcome keys derived from ``secret``
    (:func:`signing_secret`; None: this process's own)."""
    try:
        executor_class = backends.load(backends.EXECUTORS, name)
    except LookupError:
        raise ValueError(f"unknown executor {name!r}: use docker, process or kubernetes") from None
    executor: Executor = executor_class.from_spec(spec, storage, secret)
    return executor


def remote_executor(spec: DriverSpec, storage: Storage, secret: bytes | None = None) -> Executor:
    """The executor for non-inline funcs named by the spec."""
    return executor_for(spec.executor, spec, storage, secret)


def signing_secret(store: Store) -> bytes:
    """What a driver recording to ``store`` derives its workers' outcome keys from, the same after its restart
    (:func:`~sematic_k8s.executors.outcome_signing.resolution_secret`): its credential for the server, else the
    secret its database keeps for it."""
    return outcome_signing.resolution_secret(lambda: store.kept_secret(outcome_signing.KEPT_SECRET))


def drive(spec: DriverSpec, store: Store) -> Any:
    """Resolve the spec's root Future; returns its value or raises ResolutionFailed."""
    try:
        with restricted_if(spec.packaged_only, f"image {spec.image}"):  # funcs and values: only its own
            return _drive(spec, store)
    except FuncNotFound as e:
        _record_not_started(spec, store, str(e))
        raise ResolutionFailed(str(e), resolution_id=spec.root_id or "", run_id=None, error=error_info(e)) from None


def _record_not_started(spec: DriverSpec, store: Store, error: str) -> None:
    """The resolution recorded as failed with ``error``, unless its loop recorded it already."""
    recorded = store.get_resolution(spec.root_id) if spec.root_id else None
    if not spec.root_id or (recorded is not None and recorded.state != CLAIMED):  # a claim: recorded in its place
        return
    rerun_of = None
    if spec.resolution.rerun_from:
        target = store.get_run(spec.resolution.rerun_from)
        rerun_of = target.root_id if target is not None else None
    now = utcnow()
    batch = Batch()
    batch.add_resolution(ResolutionRecord(
        id=spec.root_id, root_func_path=(spec.root_func or "?")[:512], state=FAILED, rerun_of=rerun_of,
        settings={"kind": "cloud", "rerun_from": spec.resolution.rerun_from, "storage_url": spec.storage_url,
                  "executor": spec.executor},
        image=spec.image, build_hash=spec.build_hash, error=error, created_at=now, ended_at=now))
    store.write(batch)


def _drive(spec: DriverSpec, store: Store) -> Any:
    storage = storage_from_url(spec.storage_url)
    if spec.root is not None:
        root = serialization.Value(spec.root["id"], spec.root["format"], "Future", load=artifact_loader(storage)).value
    elif spec.resolution.rerun_from and spec.root_func:  # a rerun reuses the recorded arguments
        root = Future(load_func(spec.root_func, spec.root_source_file, what="root func"), {})
    else:
        raise ValueError("the driver spec has neither a pickled root nor a rerun of a recorded root func")
    executor = InlineOrRemoteExecutor(executor_for("inline", spec, storage),
                                      remote_executor(spec, storage, signing_secret(store)))
    loop = ResolutionLoop(store, storage, executor, spec.resolution, kind="cloud", image=spec.image,
                          build_hash=spec.build_hash, recorded={
                              "storage_url": spec.storage_url, "executor": spec.executor,
                              "executor_settings": spec.executor_settings,
                              "source_map": os.environ.get(settings.SOURCE_MAP_ENV), "platform": spec.platform})
    loop.detach_on_outage = True  # a driver is restarted (its Job retries exit 75) and resumes
    return loop.run(root)
