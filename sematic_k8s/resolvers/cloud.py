"""CloudResolver: build and push an image of the user's code, launch a driver from it, follow it.

A launcher (:mod:`sematic_k8s.launchers`) starts the driver (``python -m sematic_k8s.driver``), which runs
the same resolution loop as the LocalResolver, records through the server (with a token the server mints
for that resolution alone, at the request of the user's key), keeps artifacts in shared
storage (S3), and starts one container (Docker executor) or pod (Kubernetes executor) per non-inline Run.

While it waits, the CloudResolver follows the driver itself (its container, or its Job and pod), not only
the records: a driver that dies fails the resolution at once, recorded with the driver's last log lines,
ready to be continued.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sematic_k8s import backends, caching, serialization
from sematic_k8s.error_records import ERROR_MESSAGE_LIMIT, clipped
from sematic_k8s.errors import DriverReplaced, ResolutionCanceled, ResolutionEnded, ResolutionFailed, WorkerDied
from sematic_k8s.future import Future, new_id
from sematic_k8s.graph import CANCELED, TERMINAL
from sematic_k8s.launchers import DriverEnd, DriverWatch, driver_env, start_driver, watch_driver
from sematic_k8s.modules import check_not_loading
from sematic_k8s.packaging import source_map
from sematic_k8s.progress import Display, display
from sematic_k8s.resolvers.base import Resolver, check_key, check_server
from sematic_k8s.resolvers.planning import recorded_root, rerun_storage
from sematic_k8s.settings import API_KEY_ENV, BASE_IMAGE_ENV, REGISTRY_ENV, SERVER_ENV, STORAGE_ENV, env
from sematic_k8s.specs import DRIVER_EXIT_REPLACED, DRIVER_MAX_PARALLELISM, DriverSpec
from sematic_k8s.storage.base import artifact_loader, inline_loader, log_key, put_artifact
from sematic_k8s.storage.urls import storage_from_url
from sematic_k8s.store.records import Batch, RunRecord, utcnow
from sematic_k8s.store.tables import AS_ASKED
from sematic_k8s.terminal_safe import terminal_text, text_of

log = logging.getLogger("sematic_k8s")

DEFAULT_BASE_IMAGE = "python:3.11-slim"
DOCKER_SETTINGS = {"pull_grace"}  # what a Docker driver reads of executor_settings
EXTRAS = {"docker": ("s3", "docker"), "kubernetes": ("s3", "k8s")}  # what the driver needs in the image


def _check_options(storage: str, registry: str, executor: str, executor_settings: Any, detach: Any,
                   poll_interval: Any, progress: Any) -> None:
    """ValueError in one line for a CloudResolver argument that cannot be right, said where it is made (not once its
    image is built, or by its driver on the cluster)."""
    if urlparse(storage).scheme not in backends.STORAGES:
        raise ValueError(f"unsupported storage URL {storage!r}: use s3://bucket/prefix (or file:///path here)")
    if "://" in registry or not registry.strip() or any(c.isspace() for c in registry):
        raise ValueError(f"registry must be HOST[:PORT][/PATH] (like 127.0.0.1:5000/pipelines, no http://), got "
                         f"{registry!r}")
    if executor_settings is not None and not isinstance(executor_settings, dict):
        raise ValueError(f"executor_settings must be a dict of setting names to values, got {executor_settings!r}")
    unknown = set(executor_settings or {}) - DOCKER_SETTINGS if executor == "docker" else set()
    if unknown:
        raise ValueError(f"unknown Docker executor setting(s) {sorted(unknown)}; known: {sorted(DOCKER_SETTINGS)}")
    if executor == "kubernetes":
        from sematic_k8s.k8s.executor_settings import KubernetesSettings

        try:
            KubernetesSettings.from_options(**(executor_settings or {}))
        except TypeError as e:
            raise ValueError(str(e)) from None
    if not isinstance(detach, bool):  # detach="no" would be truthy: the resolution left to run on its own
        raise ValueError(f"detach must be True or False, got {detach!r}")
    if not (isinstance(poll_interval, (int, float)) and not isinstance(poll_interval, bool)
            and 0 < poll_interval < math.inf):
        raise ValueError(f"poll_interval must be seconds > 0, got {poll_interval!r}")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be a function taking each line (or left out), got {progress!r}")


class CloudResolver(Resolver):
    """Resolve on a cluster (or, with ``executor="docker"``, in containers on this machine).

    Settings default to environment variables: ``server`` $SEMATIC_K8S_SERVER, ``api_key``
    $SEMATIC_K8S_API_KEY, ``storage`` $SEMATIC_K8S_STORAGE (``s3://bucket/prefix``),
    ``registry`` $SEMATIC_K8S_REGISTRY (e.g. ``127.0.0.1:5000/my-pipelines``), ``base_image``
    $SEMATIC_K8S_BASE_IMAGE (default ``python:3.11-slim``). ``project_root`` (default: the current
    directory) is the code packaged into the image. ``executor_settings`` go to the executor (for
    Kubernetes: namespace, node_selector, tolerations, image_pull_secrets, ...; the chart's
    ``sematic-k8s`` ConfigMap supplies the rest). ``detach=True`` returns the root run id at once.
    """

    kind = "cloud"

    def __init__(self, *, server: str | None = None, api_key: str | None = None, storage: str | None = None,
                 registry: str | None = None, base_image: str | None = None, project_root: str | None = None,
                 executor: str = "docker", executor_settings: dict[str, Any] | None = None,
                 detach: bool = False, poll_interval: float = 0.5,
                 progress: Callable[[str], None] | None = None, **options: Any) -> None:
        options.setdefault("max_parallelism", DRIVER_MAX_PARALLELISM)
        super().__init__(**options)
        self.server = server or env(SERVER_ENV)
        self.api_key = api_key or env(API_KEY_ENV)
        self.storage_url = storage or env(STORAGE_ENV)
        self.registry = registry or env(REGISTRY_ENV)
        self.base_image = base_image or env(BASE_IMAGE_ENV, DEFAULT_BASE_IMAGE)
        self.project_root = Path(project_root or os.getcwd()).resolve()
        missing = [n for n, v in [("server", self.server), ("storage", self.storage_url),
                                  ("registry", self.registry)] if not v]
        if missing:
            raise ValueError(f"CloudResolver needs {', '.join(missing)} (arguments, or ${SERVER_ENV}, "
                             f"${STORAGE_ENV}, ${REGISTRY_ENV})")
        check_server(str(self.server), server)
        if executor not in ("docker", "kubernetes"):
            raise ValueError(f"executor must be 'docker' or 'kubernetes', got {executor!r}")
        _check_options(str(self.storage_url), str(self.registry), executor, executor_settings, detach, poll_interval,
                       progress)
        self.executor = executor
        self.executor_settings = dict(executor_settings or {})
        self.detach = detach
        self.poll_interval = poll_interval
        self.progress = progress  # None: a live display on a terminal, plain lines otherwise (sematic_k8s.progress)

    def store(self) -> Any:
        from sematic_k8s.store.http import HttpStore

        return HttpStore(self.server, self.api_key)  # type: ignore[arg-type]

    def resolve(self, future: Future) -> Any:
        if not isinstance(future, Future):
            raise TypeError(f"resolve() takes the Future returned by calling an @func, got {future!r}")
        check_not_loading("CloudResolver.resolve()")  # a script's top level, loaded to find its funcs
        store, storage = self.store(), storage_from_url(self.storage_url)  # type: ignore[arg-type]
        shown = display(self.progress)
        try:
            # the server and the key first (whether it may record, then reads the resolution needs anyway), then the
            # storage: a key it refuses or that may only read, a URL where another server or nothing answers, a bucket
            # missing, are said before an image is built
            check_key(store)
            target = self._rerun_target(store)
            resolution = self._settings(target)  # rerun_from whole
            taken = resolution.rerun_from is not None or _recorded(store, future.id)
            check_storage = getattr(storage, "check", None)  # S3's: its bucket and credentials, one request
            if check_storage is not None:
                check_storage()
            image = self._image(store, shown, target)
            if taken:
                future.id = new_id()
            namespace = caching.resolve_namespace(self.cache_namespace,
                                                  self._namespace_root(store, storage, future, target))
            s = serialization.serialize(future)
            put_artifact(storage, s)
            spec = DriverSpec(root={"id": s.id, "format": s.format}, storage_url=self.storage_url,  # type: ignore[arg-type]
                              image=image.digest_ref, build_hash=image.context_hash,
                              resolution=dataclasses.replace(resolution, cache_namespace=namespace, root_id=future.id),
                              executor=self.executor, executor_settings=self.executor_settings,
                              platform=image.platform)
            token = store.mint_token(future.id, resolution.rerun_from)  # the driver's own: this resolution only
            start_driver(spec, driver_env(spec, self.server, token, source_map(self.project_root)),  # type: ignore[arg-type]
                         progress=shown)
            shown(f"driver started for resolution {future.id}")
            if self.executor == "docker":
                _remove_ended_workers(store)
                _remove_unstarted_drivers(store)
            if self.detach:
                shown.done("started")
                return future.id
            driver = watch_driver(spec)
            try:
                value = self._follow(store, storage, future.id, shown, driver)
            finally:
                driver.close()
        except ResolutionFailed as e:
            shown.done(CANCELED if isinstance(e, ResolutionCanceled) else shown.seen.state or "failed")
            raise e.with_traceback(None) from e.__cause__
        except BaseException:
            shown.close()
            raise
        shown.done("resolved")
        return value

    def _namespace_root(self, store: Any, storage: Any, future: Future, target: RunRecord | None) -> Future:
        """What a callable cache_namespace receives: ``future``, or for a rerun (of ``target``) the root as
        recorded."""
        if not callable(self.cache_namespace) or target is None:
            return future
        root = store.get_run(target.root_id)
        if root is None:
            raise LookupError(f"rerun_from: the root run {target.root_id} of run {target.id} is not recorded")
        def stored_value(artifact_id: str) -> serialization.Value:
            return _stored_value(store.get_artifact(artifact_id), storage)

        with rerun_storage(target.id, storage):
            return recorded_root(future.func, root, stored_value, future.id)

    def _image(self, store: Any, shown: Display, target: RunRecord | None) -> Any:
        """Reuse the image recorded for the resolution of ``target`` (a rerun's) when the code did not change; else
        build and push one."""
        from sematic_k8s.packaging import ensure_image

        recorded = None
        if target is not None:
            res = store.get_resolution(target.root_id)
            if res is not None and res.image and res.build_hash:
                recorded = (res.build_hash, res.image)
        return ensure_image(self.project_root, self.registry, self.base_image,  # type: ignore[arg-type]
                            recorded=recorded, progress=shown, extras=EXTRAS[self.executor])

    def _follow(self, store: Any, storage: Any, root_id: str, shown: Display, driver: DriverWatch) -> Any:
        """Wait for the resolution, showing its runs by state (one small request per poll, however many runs),
        and for its driver (a driver that ends before the resolution does fails it at once, unless another driver
        took the resolution over from it: then the resolution alone is followed); its value, or the failure.
        The driver epoch read just before the driver was seen ended is the one that died: its death is recorded
        fenced with it, so that the record, however late it lands, never ends the resolution under a newer driver."""
        replaced = False
        while True:
            doc = store.resolution_counts(root_id)
            if doc is not None:
                shown.runs(root_id, doc["state"], doc["counts"], doc.get("waiting") or {})
                if doc["state"] in TERMINAL:
                    break
            epoch = 0 if doc is None else doc.get("driver_epoch")  # None: a server before epochs were shown
            end = None if replaced else driver.ended()
            if end is not None and end.exit_code == DRIVER_EXIT_REPLACED:
                replaced = True
                log.warning("resolution %s: another driver took it over from the one started here; following it",
                            root_id)
            elif end is not None:
                res = store.get_resolution(root_id)  # what it recorded before it ended
                if res is not None and res.state in TERMINAL:
                    break
                self._driver_died(store, root_id, end, driver, epoch)
                # it returns only when a newer driver took the resolution over meanwhile, or the resolution ended
                # meanwhile (then the next look reads its end, raised as any other)
                replaced = True
            time.sleep(self.poll_interval)
        res = store.get_resolution(root_id)
        if res.state == "resolved":
            root = store.get_run(root_id)
            return _stored_value(store.get_artifact(root.output_id), storage).value
        failed = [r for r in store.list_runs(root_id=root_id, state="failed", limit=1000)
                  if r.error and r.error.get("type") != "NestedRunFailed"]
        run = store.get_run(failed[0].id) if failed else None  # whole: a listing has an excerpt of its error
        detail = ""
        if run is not None:
            died = WorkerDied.__name__ in (run.error.get("mro") or [])  # its traceback is its last log lines
            try:
                logs = "" if died else text_of(storage.get(log_key(run.id)))
                detail = "\n\nlast log lines:\n" + "\n".join(logs.splitlines()[-20:]) if logs else ""
            except KeyError:
                pass
            detail = f"\n\n{run.error.get('traceback', '')}".rstrip() + detail
        run_id, error = (run.id, run.error) if run else (None, None)
        if res.state == CANCELED:  # in the embedded resolver's words (its ResolutionCanceled), read from the record
            raise _canceled(root_id, res.error, detail, run_id, error)
        raise ResolutionFailed(terminal_text(f"{res.error or f'resolution {root_id} {res.state}'}{detail}"),
                               resolution_id=root_id, run_id=run_id, error=error)

    def _driver_died(self, store: Any, root_id: str, end: DriverEnd, driver: DriverWatch, epoch: int | None) -> None:
        """The driver ended before its resolution did: record that (the resolution failed, its unfinished runs
        canceled, so ``continue`` can pick it up), stop what it left running, and raise ResolutionFailed; or
        ResolutionCanceled when the store recorded that failed end canceled (a cancel accepted before it landed won).

        The record is fenced with ``epoch``, the driver epoch seen before the driver was seen ended (not numbered:
        it is not one of that driver's writes). Refused because a newer driver took the resolution over (a Job's
        next pod, a driver started by hand, while the record was on its way): nothing is recorded or stopped, and
        this returns (the resolution is followed on). Refused because the resolution ended meanwhile (the server's
        sweeper found the driver silent, a cancel asked or not; the driver's own last write of its end, landed late):
        what was recorded stands; its leftovers stopped, this returns too, and the resolution's end is read and
        raised as any other's (ResolutionCanceled for a canceled one)."""
        reason = f"the driver {end.how} before the resolution ended"
        if end.leftovers:  # stopped below, once the record landed
            reason += f"; the CloudResolver following it deletes {end.leftovers}"
        # its last lines recorded too (what the dashboard shows), clipped: a line may be of any length
        last = clipped(end.last_logs, ERROR_MESSAGE_LIMIT)
        tail = f"\n\nlast log lines of the driver:\n{last}" if last else ""
        now = utcnow()
        batch = Batch(resolution_updates={root_id: {"state": "failed", "ended_at": now, "error": reason + tail}},
                      fence={} if epoch is None else {root_id: epoch}, in_order=False)
        for run in store.runs_of_root(root_id):
            if run.state not in TERMINAL:
                batch.update_run(run.id, state="canceled", ended_at=now)
        canceled: set[str] = set()
        try:
            store.write(batch, canceled=canceled)
        except DriverReplaced:
            log.warning("resolution %s: its driver ended, but another driver took it over since; following it",
                        root_id)
            return
        except ResolutionEnded:  # ended meanwhile: what was recorded stands, and is what the user is told
            driver.cleanup()
            return
        driver.cleanup()
        if root_id in canceled:  # a cancel accepted before this end landed won: recorded canceled, its words kept
            raise ResolutionCanceled.over_failure(reason + terminal_text(tail), resolution_id=root_id)
        raise ResolutionFailed(f"resolution {root_id} failed: {reason}; continue it with "
                               f"rerun_from={root_id!r}, rerun_mode='continue'{terminal_text(tail)}",
                               resolution_id=root_id, run_id=None, error=None)


def _canceled(root_id: str, recorded: str | None, detail: str, run_id: str | None,
              error: dict[str, Any] | None) -> ResolutionCanceled:
    """What a canceled resolution raises, from its recorded error, in the embedded resolver's words: a cancel that
    stopped it (its driver's ResolutionCanceled, recorded "ResolutionCanceled: <its words>"; another end recorded
    canceled, a driver's Ctrl-C, in brackets), or a failing end recorded canceled ("<failure>; canceled as asked":
    :meth:`~sematic_k8s.errors.ResolutionCanceled.over_failure`, the failure's words without "resolution <id>
    failed: "). ``detail``: the failed run's traceback and last log lines, when one failed."""
    recorded = recorded or ""
    if recorded.endswith(AS_ASKED):
        failure = recorded.removesuffix(AS_ASKED).removeprefix(f"resolution {root_id} failed: ")
        return ResolutionCanceled.over_failure(terminal_text(failure + detail), resolution_id=root_id, run_id=run_id,
                                               error=error)
    said = recorded.removeprefix(f"{ResolutionCanceled.__name__}: ")
    if not said.startswith(f"resolution {root_id} was canceled"):
        said = f"resolution {root_id} was canceled" + (f" ({said.strip().rstrip(':')})" if said.strip() else "")
    return ResolutionCanceled(terminal_text(said + detail), resolution_id=root_id, run_id=run_id, error=error)


def _recorded(store: Any, run_id: str) -> bool:
    """Whether the run ``run_id`` is recorded, asked with a listing (``GET /runs?id_prefix=``): another server
    answers it 404, which ``GET /runs/{id}`` would take for "not recorded"."""
    return bool(store.list_runs(id_prefix=run_id, limit=1))


def _remove_ended_workers(store: Any) -> None:
    """Remove the worker containers left on this machine by drivers of resolutions that ended (a detached
    resolution whose driver was killed, marked dead by this read of it), running ones too, each still running
    named: never this one's, never one of a resolution that has not ended."""
    from sematic_k8s.launchers.docker import remove_ended_workers

    def ended(root_id: str) -> bool:
        try:
            res = store.get_resolution(root_id)
        except Exception:  # noqa: BLE001 - not readable with this key (another server's, another user's): kept
            return False
        return res is not None and res.state in TERMINAL

    try:
        removed = remove_ended_workers(ended)
    except Exception as e:  # noqa: BLE001 - a clean-up: the resolution goes on without it
        log.warning("could not remove the worker containers of ended resolutions: %s", e)
        return
    for worker in removed:
        if worker.state == "running":
            log.warning("worker container %s was still running though its resolution %s has ended (its driver gone: "
                        "nothing would read its outcome): stopped and removed", worker.name, worker.root_id)
    if removed:
        log.info("removed %d worker container(s) of ended resolutions", len(removed))


def _remove_unstarted_drivers(store: Any) -> None:
    """Remove the driver containers on this machine whose launch was cut between their create and their start (a
    CloudResolver or a server killed there), each named in a warning, once older than
    $SEMATIC_K8S_UNSTARTED_DRIVER_GRACE, and have the server revoke the tokens ``store``'s key minted for each one's
    resolution: :func:`sematic_k8s.launchers.docker.sweep_unstarted_drivers`."""
    from sematic_k8s.launchers.docker import sweep_unstarted_drivers

    try:
        sweep_unstarted_drivers(getattr(store, "revoke_tokens", None))
    except Exception as e:  # noqa: BLE001 - a clean-up: the resolution goes on without it
        log.warning("could not remove the driver containers left unstarted: %s", e)


def _stored_value(art: Any, storage: Any) -> serialization.Value:
    """A recorded artifact's Value: from its inline bytes when its record holds them, else from storage."""
    load = inline_loader(art.inline) if art.inline is not None else artifact_loader(storage)
    return serialization.Value(art.id, art.format, art.type_name, load=load)
