"""Reruns the server starts, and the ones it refuses.

Records are written by clients, so nothing read from one decides what the server runs. The server re-runs
only *cloud* resolutions, from their recorded image *by digest*, when that image's repository is on its
allow-list; the driver is started by the launcher the server was configured with (a Job on its cluster, or
in local development a container on this machine without the Docker socket), with the server's storage and
executor settings, and a token that may record only the new resolution. The record's root func path, source file
and source map, and its runs' func paths, only *name* code: the driver (told ``packaged_only``) loads a func only
from the image's packaged code, the files its build listed in the image (:mod:`sematic_k8s.packaged`), never a
module of the standard library or site-packages or any file outside them; a refused one fails the new resolution
at once, recorded with the reason. The cache namespace and parallelism are data.

A *local* resolution's code is on its author's machine: it is re-run there (``sematic-k8s rerun ID`` or
``LocalResolver(rerun_from=ID)``), and the refusal says so with the command to copy.

Launches go through a bounded queue: ``concurrency`` at once, ``queue`` more waiting, 429 beyond. A request waits
for its launch to begin (answered, or saying what it waits for) :data:`LAUNCH_BOUND` (an hour) at most: past it (its
turn in the queue never came, or its launcher hung) it is a 502 in plain words, its claim recorded failed in them,
and its launch, still queued, dropped: its slot freed. (One already running keeps its slot until its launcher
returns; neither launcher gets there: each says what it waits for before any long step.)

The request waits for its launch, and answers 202 once the driver is started, or as soon as the launch waits for the
driver's image (the Docker launcher, its registry not answering the engine's pull: tried again for the pull's grace,
``executor_settings["pull_grace"]``, 120 s): it does not hold the request for that long. A pull that goes on
:data:`ANSWER_WINDOW` seconds with nothing said (a large image, a registry that took the request and is silent: its
try says so only at its silence limit, ``PULL_SILENCE``) answers it too, the claim noted "pulling the driver's
image: REF", then its first try's progress as it goes on ("pulling the driver's image (D of N layers, X of Y MB):
REF", every ``PULL_PROGRESS_EVERY`` at most) while no try failed; a refusal (manifest unknown, unauthorized) comes
within the window, and is the request's 502 as a launch that fails at once. The launch goes on in the background,
its queue slot held; past the grace its claimed resolution is recorded failed in the launcher's words, as a launch
that fails at once is (``failed``). A server that stops ends such waits: failed the same way. A claim that ends
meanwhile (canceled: ``ended``, the record read every ``PULL_TICK`` at most while the pull waits, during a try, a
silent one too, and between tries, and right before the driver's create) ends its launch with no driver, within
about a tick, its record as the cancel left it.

The Kubernetes launcher pulls nothing (the Job's pod does), but its API may be slow to answer: its launch goes
:data:`ANSWER_WINDOW` seconds unanswered, the request is answered all the same, the claim noted "launching the
driver: its Job sk-driver-ID in namespace NS; the Kubernetes API is slow to answer"; a refusal after that is recorded
failed, as above, and so is a launch whose call the API never answers (each has a deadline, tried 3 times:
:func:`sematic_k8s.k8s.client.request_timeout`). A claim canceled meanwhile gets no driver: the claim is read right
before the token Secret and the Job are made, and once the Job's create is answered (the Job then deleted again).
A server that stops ends the call under way (its socket shut down, connecting or read from:
:class:`~sematic_k8s.stopping.Stop`), or its pause before the next try (:func:`~sematic_k8s.k8s.client.api_call`'s),
not tried again: the claim recorded failed, "the server stopped while its driver's launch waited for ...: re-run it"
(the Job's create, which may have been made: its driver then finds the claim ended and stops).
Both launchers go through the same :class:`~.claim_answer.ClaimAnswer` (the request's answer and the claim's note),
and the same stop (:attr:`Reruns.stopping`). From its claim until its launch ends, the claim is held by the server
process launching it, which beats it (:mod:`~.claim_beats`): a process killed or stopped mid-launch has its claim
failed by any replica within a few beats, and one that comes back finds it ended before (and after) its Job's
create.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import sqlalchemy as sa

from sematic_k8s import backends
from sematic_k8s.error_records import one_line
from sematic_k8s.errors import CallStopped, DriverUnneeded, StopsForAFix
from sematic_k8s.launchers import driver_env
from sematic_k8s.settings import SERVER_ENV, STORAGE_ENV
from sematic_k8s.specs import ARCHITECTURES, DRIVER_MAX_PARALLELISM, DriverSpec, ResolutionSettings
from sematic_k8s.stopping import Stop
from sematic_k8s.store.records import CLAIMED, Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s_server import dbfailures
from sematic_k8s_server.claim_answer import ClaimAnswer
from sematic_k8s_server.config import REPOSITORY, RerunConfig
from sematic_k8s_server.problems import ApiError

log = logging.getLogger("sematic_k8s_server")
T = TypeVar("T")

IMAGE_BY_DIGEST = re.compile(rf"(?P<repo>{REPOSITORY})@sha256:[0-9a-f]{{64}}")
MAX_PARALLELISM = 64
ANSWER_WINDOW = 2.0  # seconds a request waits for a launch pulling its driver's image (a refusal comes within it)
LAUNCH_BOUND = 3600.0  # seconds a request waits for its launch to begin (answer, or say what it waits for): well
# above a launch's own deadlines (a Kubernetes one whose every call goes unanswered: some 15 min; a Docker one: its
# engine's calls, then its pull's grace) and a queued launch's turn behind those; past it the claim is failed
CLOSE_WAIT = 10.0  # seconds a stopping server waits for its launches under way, ended by its stop, to record their end
EXECUTOR_OF_LAUNCHER = {"kubernetes": "kubernetes", "docker": "process"}  # docker: no socket, runs in-container


class Busy(Exception):
    """Too many reruns are starting or waiting to start."""


def image_repository(image: str | None) -> str | None:
    """The repository of ``repo@sha256:<64 hex>``; None for anything else (a tag, a name, junk)."""
    if not isinstance(image, str) or len(image) > 512:
        return None
    m = IMAGE_BY_DIGEST.fullmatch(image)
    return m.group("repo") if m else None


def allowed(repository: str, allow_list: tuple[str, ...]) -> bool:
    """The repository is on the list, or under an entry of it (at a ``/`` boundary)."""
    return any(repository == entry or repository.startswith(entry + "/") for entry in allow_list)


def local_rerun_refusal(res: ResolutionRecord, target: str, mode: str) -> ApiError:
    """The 422 for a local resolution: where and how to re-run it instead."""
    if mode == "continue":
        command = f"sematic-k8s rerun {target} --mode continue"
        python = f'pipeline(...).resolve(sk.LocalResolver(rerun_from="{target}", rerun_mode="continue"))'
    else:
        command = f"sematic-k8s rerun {target}"
        python = f'pipeline(...).resolve(sk.LocalResolver(rerun_from="{target}"))'
    return ApiError(422, (f"resolution {res.id} ran locally: its code is on the machine that ran it, and this "
                          f"server never runs code named by a record. Re-run it there: `{command}` (with "
                          f"${SERVER_ENV} set to this server), or {python}"),
                    reason="local-resolution", command=command, python=python)


def mint_failed(e: Exception) -> str:
    """The error recorded on a claim whose driver's token could not be minted (the database refused its insert: a
    lock on its table held past the server's bound, a read-only standby, a full disk; no connection for it: the
    server's pool used up, the database out of reach): no driver was started, so it fails at once in these words, its
    cause's without what the refusal did to the request ("so nothing of this request was recorded": untrue of a
    recorded claim); any other failure in the words a 503 gives it (:func:`.dbfailures.told`), never the database's own,
    which may name its host, port and user (the record is read by any key; the server's log has them). The request is
    answered in the error's (a 503, sent again by a client: new claim)."""
    if isinstance(e, StopsForAFix):
        cause = e.cause
    elif isinstance(e, sa.exc.SQLAlchemyError):
        cause = dbfailures.told(e)
    else:  # no failure of the database's: the server's own
        cause = f"an internal error ({type(e).__name__}; the server's log has it)"
    return (f"the server could not mint its driver's token, so no driver was started: {one_line(cause)[:500]}: "
            "re-run it once that has passed")


class RerunQueue:
    """Runs launches on ``concurrency`` threads with at most ``queue`` more waiting; :class:`Busy` beyond."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self.capacity = concurrency + queue
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rerun-launch")

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """``fn()`` on a launch thread, its slot held until it returns; Busy at once when the queue is full."""
        if not self._slots.acquire(blocking=False):
            raise Busy
        try:
            future = self._pool.submit(fn)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Reruns:
    """The server's rerun policy and launcher (see the module docstring)."""

    def __init__(self, config: RerunConfig, launch: Callable[[DriverSpec, Mapping[str, str]], None] | None = None
                 ) -> None:
        self.config = config
        self.queue = RerunQueue(config.concurrency, config.queue)
        self._launch = launch  # tests may give their own; else the configured launcher's
        self.stopping = Stop()  # set when the server stops: waits for an image end, and Kubernetes calls under way
        self.background: set[Future[None]] = set()  # launches that went on after their request was answered

    def check(self, res: ResolutionRecord, target: str, mode: str) -> str:
        """The image to re-run ``res`` from; an ApiError naming the reason when this server may not."""
        settings = res.settings if isinstance(res.settings, dict) else {}
        if settings.get("kind") != "cloud":
            raise local_rerun_refusal(res, target, mode)
        if self.config.launcher is None and self._launch is None:
            raise ApiError(501, "this server starts no reruns (no --rerun-launcher): re-run it with "
                                f'CloudResolver(rerun_from="{target}") from a machine that can build its image',
                           reason="no-launcher")
        image = res.image
        repository = image_repository(image)
        if repository is None:
            raise ApiError(422, f"resolution {res.id} recorded image {str(image)[:200]!r}, not an image by digest "
                                "(registry/repository@sha256:<64 hex>): nothing to re-run it from",
                           reason="image-not-by-digest")
        if not allowed(repository, self.config.image_repositories):
            raise ApiError(403, f"image repository {repository!r} is not on this server's rerun allow-list "
                                "(server flag --rerun-image-repository, Helm value server.rerunImageRepositories)",
                           reason="image-not-allowed", repository=repository)
        storage = self.config.storage_url
        if not storage:
            raise ApiError(501, "this server has no artifact storage URL for drivers: start it with "
                                f"{STORAGE_ENV}=s3://bucket/prefix", reason="no-storage")
        recorded = settings.get("storage_url")
        if recorded and recorded != storage:
            raise ApiError(422, f"resolution {res.id} keeps its artifacts in {str(recorded)[:200]}, not in this "
                                f"server's storage {storage}: re-run it from a client that can read them",
                           reason="other-storage")
        return image  # type: ignore[return-value]

    def driver_spec(self, res: ResolutionRecord, root_run: RunRecord | None, image: str, *, new_id: str,
                    target: str, mode: str) -> DriverSpec:
        """The new driver's task: the server's launcher, executor settings and storage; the record's data."""
        settings = res.settings if isinstance(res.settings, dict) else {}
        namespace = settings.get("cache_namespace")
        parallelism = settings.get("max_parallelism")
        if not (isinstance(parallelism, int) and 1 <= parallelism <= MAX_PARALLELISM):
            parallelism = DRIVER_MAX_PARALLELISM
        resolution = ResolutionSettings(cache_namespace=namespace if isinstance(namespace, str) else None,
                                        rerun_from=target, rerun_mode=mode, max_parallelism=parallelism,
                                        root_id=new_id)
        source_file = root_run.source_file if root_run is not None else None
        platform = settings.get("platform")  # the image's CPU architecture, as recorded: a node selector's value
        return DriverSpec(root=None, storage_url=self.config.storage_url or "", image=image,
                          build_hash=res.build_hash, resolution=resolution,
                          executor=EXECUTOR_OF_LAUNCHER.get(self.config.launcher or "", "kubernetes"),
                          executor_settings=dict(self.config.executor_settings),
                          root_func=res.root_func_path, root_source_file=source_file,
                          platform=platform if platform in ARCHITECTURES else None, packaged_only=True)

    def claim(self, res: ResolutionRecord, spec: DriverSpec, owner: str | None, holder: str | None = None) -> Batch:
        """The record of the rerun ``spec`` starts (any mode), ``CLAIMED`` until its driver records it in its place:
        written before the driver is started, so that the id answered is recorded whatever becomes of the launch, and
        a second continue of ``res`` is refused then (ContinuedAlready). ``owner``: the API key that asked (the key
        whose token the driver gets: its driver records it in its place); ``holder``: the server process launching
        it, which beats it until the launch ends (:mod:`~.claim_beats`)."""
        now = utcnow()
        batch = Batch()
        batch.add_resolution(ResolutionRecord(
            id=spec.root_id or "", root_func_path=res.root_func_path, state=CLAIMED, rerun_of=res.id,
            created_at=now, heartbeat_at=now, image=spec.image, build_hash=spec.build_hash,
            settings={"kind": "cloud", "rerun_of": res.id, "rerun_from": spec.resolution.rerun_from,
                      "rerun_mode": spec.resolution.rerun_mode, "storage_url": spec.storage_url,
                      "executor": spec.executor}))
        batch.new_resolutions[-1]["owner"] = owner
        batch.new_resolutions[-1]["held_by"] = holder
        return batch

    def start(self, spec: DriverSpec, server_url: str, token: str | None, source_map: Any,
              failed: Callable[[str], None], ended: Callable[[], bool],
              noted: Callable[[str | None], None] = lambda words: None,
              let_go: Callable[[bool], None] = lambda started: None) -> None:
        """Launch the driver through the queue: Busy when full, ApiError(502) when the launcher fails. Returns once
        it started, or once it waits for its image or has pulled it for :data:`ANSWER_WINDOW` (see the module's
        docstring), ``noted`` told what it waits for then, and again as that changes (and None once the driver
        started): a launch that fails after that calls ``failed`` with the words the ApiError would have had; one
        whose claim ``ended()`` (asked while it waits) ends without a driver, nothing recorded. ``let_go`` is told
        when the launch ended (whether its driver started): its claim held no more (:mod:`~.claim_beats`)."""
        env = driver_env(spec, server_url, token, source_map if isinstance(source_map, str) else None)
        launcher = self.config.launcher or "test"
        claim = ClaimAnswer(spec.root_id, noted)
        unread = False  # its last read of the claim failed (logged once until a read works again)

        def claim_ended() -> bool:  # asked every PULL_TICK at most while it waits
            nonlocal unread
            try:
                gone = ended()
            except Exception:  # noqa: BLE001 - the store unread this time: the launch waits on, asked again next tick
                if not unread:
                    log.warning("rerun %s: could not read its claim", spec.root_id, exc_info=True)
                unread = True
                return False
            unread = False
            return gone

        def launch() -> None:
            started = False
            try:
                started = run_launcher()
            finally:
                let_go(started)

        def run_launcher() -> bool:
            try:
                if self._launch is not None:
                    self._launch(spec, env)
                elif launcher == "docker":  # local development: a container without the Docker socket
                    backends.load(backends.LAUNCHERS, "docker")(spec, env, docker_socket=False, progress=claim.waiting,
                                                                stop=self.stopping, ended=claim_ended,
                                                                pulling=claim.pending)
                else:  # a Job on the cluster: the request answered if its API is slow
                    backends.load(backends.LAUNCHERS, launcher)(spec, env, progress=claim.waiting, ended=claim_ended,
                                                                pending=claim.pending, stop=self.stopping)
            except DriverUnneeded as e:  # canceled while it waited (its image, the API): recorded so already
                claim.unneeded()
                log.info("rerun %s: driver not started: %s", spec.root_id, e)
                return False
            except Exception as e:  # noqa: BLE001 - any launcher failure: said in the answer, or recorded
                if claim.failed(e):
                    return False
                log.warning("rerun %s: the %s launcher failed: %s", spec.root_id, launcher, e)
                try:
                    failed(self._launch_failed(launcher, e).detail)
                except Exception:  # noqa: BLE001 - the store: the claim is left to the sweeper
                    log.exception("rerun %s: its failed launch could not be recorded", spec.root_id)
                return False
            claim.started()
            log.info("rerun %s: driver started from %s by the %s launcher", spec.root_id, spec.image, launcher)
            return True

        launched: Future[None] | None = None
        try:
            launched = self.queue.submit(launch)
            claim.wait(ANSWER_WINDOW, LAUNCH_BOUND)
            if not launched.done():  # it waits for its image: kept until it ends, for close() to wait for
                self.background.add(launched)
                launched.add_done_callback(self.background.discard)
        except Busy:
            raise ApiError(429, f"{self.queue.capacity} reruns are already starting or waiting to start: try "
                                "again in a few seconds", {"Retry-After": "5"}, reason="busy") from None
        except Exception as e:  # noqa: BLE001 - any launcher failure: say which, as JSON
            if launched is not None:  # past LAUNCH_BOUND still queued: it never runs, its slot freed
                launched.cancel()
            log.warning("rerun %s: the %s launcher failed: %s", spec.root_id, launcher, e)
            raise self._launch_failed(launcher, e) from None

    @staticmethod
    def _launch_failed(launcher: str, e: Exception) -> ApiError:
        """The 502 of a launcher that failed, in its words (their first line); the 503 of one the server's stop
        ended."""
        if isinstance(e, CallStopped):
            return ApiError(503, f"the server stopped while its driver's launch waited for {e.doing}: re-run it",
                            reason="server-stopped")
        message = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        return ApiError(502, f"could not start the rerun's driver with the {launcher} launcher: {message}",
                        reason="launcher-failed")

    def close(self) -> None:
        """The server stops: launches waiting for their image give up, and Kubernetes calls under way end, recorded
        failed before the store closes (waited for up to :data:`CLOSE_WAIT`); the others end as they would (a request
        waits for each)."""
        self.stopping.set()
        wait(list(self.background), CLOSE_WAIT)
