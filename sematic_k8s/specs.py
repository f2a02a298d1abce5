"""Wire formats: what a resolver tells its driver, what a driver tells its workers, and the settings
every resolver shares. Data only: no I/O, standard library imports only.

- :class:`ResolutionSettings`: how to resolve one pipeline (cache namespace, rerun target and mode,
  parallelism, the new Resolution's id), whatever resolves it: the LocalResolver, the CloudResolver, the
  driver it starts, or a rerun the server starts.
- :class:`DriverSpec`: a driver's task ($SEMATIC_K8S_DRIVER, JSON), sent by the CloudResolver or the server.
- :class:`TaskSpec`: one Run attempt for a worker ($SEMATIC_K8S_TASK, JSON). An executor turns the loop's
  in-memory :class:`~sematic_k8s.executors.base.Task` (the func itself, input Values) into a TaskSpec (the
  func's path, input artifact ids) when the attempt runs in another process. :class:`TaskRef`: in its place, where
  a TaskSpec is too large to hand over (a pod's Secret): its stored copy (:func:`task_key`) and a presigned GET.
- :func:`outcome_key`: where a worker stores its outcome document, which holds one of
  ``{"output": artifact}``, ``{"expansion": artifact}`` (a composition's pickled Futures) or
  ``{"error": {"type", "message", "traceback", "mro"}}``. A worker given presigned URLs (``TaskSpec.urls``)
  also carries its value's bytes (``"payload"``, base64, or ``"staged": true`` for a large value written at
  :func:`staged_key`) and its logs (``"logs"``) in that document, for its executor to store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

RERUN_MODES = ("from", "continue")
DRIVER_MODULE = "sematic_k8s.driver"  # started with python -m, in a container, a pod or a process
WORKER_MODULE = "sematic_k8s.worker"
DRIVER_COMMAND = ("python", "-m", DRIVER_MODULE)
# a Docker driver container's: the driver under a relay that ends its unended last lines (see driver_relay); in an
# image made before the relay (a rerun of an older resolution), the driver alone, as it was started then: DRIVER_COMMAND
# in a fresh interpreter by exec (the driver the container's first process, as then), not this -S one, whose flag
# multiprocessing passes to the children it starts (spawn, forkserver: no site, no .pth import hooks). Every signal
# is blocked first (by CPython's built-in _signal: the signal module imports enum, functools ...; site's import after
# it: -S), until the relay's handlers are set and the driver runs, so that none sent as the container starts ends the
# relay (a container's first process gets the signals it handles: Python's SIGINT). An image's relay from before the
# block (a rerun of a resolution recorded then) never unblocks: unblocked before it runs, as it ran then
DOCKER_DRIVER_COMMAND = ("python", "-S", "-c",
                         "try:\n import _signal\nexcept ImportError:\n import signal as _signal\n"
                         "_signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())\n"
                         "import site\nsite.main()\n"
                         "try:\n from sematic_k8s.driver_relay import main\n"
                         "except ModuleNotFoundError as e:\n if e.name != 'sematic_k8s.driver_relay': raise\n"
                         " _signal.pthread_sigmask(_signal.SIG_SETMASK, ())\n"
                         " import os, sys\n"
                         f" os.execv(sys.executable, [sys.executable, '-m', {DRIVER_MODULE!r}])\n"
                         "else:\n import sys\n"
                         " if not hasattr(sys.modules[main.__module__], 'unblocked'):\n"  # an older relay
                         "  _signal.pthread_sigmask(_signal.SIG_SETMASK, ())\n"
                         " raise SystemExit(main())\n")
WORKER_COMMAND = ("python", "-m", WORKER_MODULE)


def one_stream(command: tuple[str, ...]) -> tuple[str, ...]:
    """``command`` (python's) with its stderr on its stdout's pipe (`2>&1`, without a shell: the first python makes
    fd 2 fd 1, then becomes ``command`` by exec: one process, as before). A container's two streams are logged by two
    copiers of the runtime's own: the Docker engine's, each up to a megabyte behind (moby/moby#31706), containerd's
    (the kubelet's log: one goroutine a stream, each stamping and appending its lines to one file as it gets to
    them). A process's last words on stderr (the worker's own WORKER_SAYS line, a traceback, Python's fatal error)
    were logged before, or among, the last lines of a burst on stdout, and its last log lines (the tail read when it
    dies) were not its last. One pipe keeps the order it wrote in, as the Docker driver's relay does (see
    driver_relay); its log is all stdout."""
    return ("python", "-S", "-c", f"import os, sys\nos.dup2(1, 2)\nos.execv(sys.executable, {list(command)!r})\n")


# a worker's, in a Docker container and in a pod; a driver pod's (a pod's log is read from the kubelet after it
# ended: an unended last line is kept there, given unended, so no relay is needed as for a Docker driver)
WORKER_ONE_STREAM_COMMAND = one_stream(WORKER_COMMAND)
DRIVER_POD_COMMAND = one_stream(DRIVER_COMMAND)
DRIVER_EXIT_FAILED = 1  # a driver whose pipeline failed: final (the driver Job's podFailurePolicy FailJob)
DRIVER_EXIT_RETRY = 75  # a driver that met a transient infrastructure failure: its Job starts it again
DRIVER_EXIT_REPLACED = 76  # a driver another one took its resolution over from: ignored (podFailurePolicy Ignore)
# A worker that met an infrastructure failure (EX_TEMPFAIL), never the func's fault: its last line on stderr names it,
# WORKER_SAYS + "<error class>: <words>". DiskFull (its storage's disk) and PresignedRequestRefused (S3 refused a
# presigned request for good: a bucket deleted, a body too large) end the resolution; StorageKeysRefused (S3 refused
# its presigned URLs' keys: 403) runs the attempt once more with URLs presigned afresh, then ends it; any other is
# recorded as StorageUnreachable and the attempt is retried.
WORKER_EXIT_INFRASTRUCTURE = 75
WORKER_SAYS = "sematic-k8s worker: "  # how the worker's own lines begin (beside what the func prints)
WORKER_STORED_LINE = WORKER_SAYS + "outcome stored"  # printed once it is: an executor may read it before the exit
DRIVER_MAX_PARALLELISM = 8  # a driver's runs mostly wait on pods: more of them at once
IMAGE_UID = 10001  # the numeric user images run as (USER in their Dockerfile; runAsUser of driver and worker pods)
IMAGE_HOME = "/home/sematic-k8s"  # that user's HOME in images, writable by it
# The CPU architectures images are built for, as Docker and Kubernetes (kubernetes.io/arch) name them.
ARCHITECTURES = ("amd64", "arm64")


@dataclass(frozen=True, slots=True)
class ResolutionSettings:
    """How to resolve one pipeline.

    ``cache_namespace``: a string, or a callable taking the root Future (called once when the resolution
    starts); ``None`` turns caching off. ``rerun_from``: a Run id to re-run from (``rerun_mode`` "from"), or a
    root Run id whose unfinished runs to run again ("continue"); a resolver takes a unique start of one too, and
    gives the loop the whole id. ``max_parallelism``: runs executing at once.
    ``root_id``: the new Resolution's id, when the caller must know it up front (the server, the CloudResolver).
    """

    cache_namespace: str | Callable[[Any], str] | None = None
    rerun_from: str | None = None
    rerun_mode: str = "from"
    max_parallelism: int = 1
    root_id: str | None = None

    def __post_init__(self) -> None:
        ns = self.cache_namespace
        if ns is not None and not (isinstance(ns, str) or callable(ns)):
            raise TypeError(f"cache_namespace must be a string or a callable, got {ns!r}")
        if self.rerun_from is not None and (not isinstance(self.rerun_from, str) or not self.rerun_from):
            raise TypeError(f"rerun_from must be a run id string, got {self.rerun_from!r}")
        if self.rerun_mode not in RERUN_MODES:
            raise ValueError(f"rerun_mode must be one of {RERUN_MODES}, got {self.rerun_mode!r}")
        p = self.max_parallelism
        if not isinstance(p, int) or isinstance(p, bool) or p < 1:
            raise ValueError(f"max_parallelism must be a whole number >= 1, got {p!r}")


_RESOLUTION_FIELDS = tuple(f.name for f in dataclasses.fields(ResolutionSettings))


@dataclass(frozen=True, slots=True)
class DriverSpec:
    """What the CloudResolver (or the server, for a rerun) tells its driver.

    Its JSON is flat: the ``resolution`` settings sit beside the other fields (``cache_namespace`` is the
    resolved string there).
    """

    root: dict[str, str] | None  # {"id", "format"} of the pickled root Future (None: a rerun of root_func)
    storage_url: str
    image: str
    build_hash: str | None = None
    resolution: ResolutionSettings = field(
        default_factory=lambda: ResolutionSettings(max_parallelism=DRIVER_MAX_PARALLELISM))
    executor: str = "docker"  # or "process" (no image), or "kubernetes"
    executor_settings: dict[str, Any] = field(default_factory=dict)
    root_func: str | None = None  # a rerun without a pickled root: the recorded root func's path
    root_source_file: str | None = None
    platform: str | None = None  # the image's CPU architecture (ARCHITECTURES): pods go to nodes of that arch
    packaged_only: bool = False  # the server's reruns: funcs named by records only from the image's packaged code

    @property
    def root_id(self) -> str | None:
        """The Resolution's id, chosen by the resolver so it can follow it."""
        return self.resolution.root_id

    def to_json(self) -> str:
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "resolution"}
        if doc["platform"] is None:  # drivers of images built before it was recorded do not know the field
            del doc["platform"]
        if not doc["packaged_only"]:  # nor this one (they cannot run a server's rerun: see sematic_k8s.packaged)
            del doc["packaged_only"]
        doc.update(asdict(self.resolution))
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> DriverSpec:
        doc = json.loads(text)
        doc.setdefault("max_parallelism", DRIVER_MAX_PARALLELISM)
        resolution = ResolutionSettings(**{k: doc.pop(k) for k in _RESOLUTION_FIELDS if k in doc})
        return cls(**doc, resolution=resolution)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """Everything a worker needs, passed in its environment."""

    run_id: str
    root_id: str
    func_path: str
    source_file: str | None
    input_ids: dict[str, str]
    input_formats: dict[str, str]
    attempt: int
    # presigned requests ("GET key" / "PUT key" -> URL) for a worker without storage credentials; empty: the
    # worker opens the storage of $SEMATIC_K8S_STORAGE. Secrets for their expiry: never logged.
    urls: dict[str, str] = field(default_factory=dict)
    packaged_only: bool = False  # started by a driver with packaged_only: funcs and values restricted the same way
    input_origins: dict[str, str] = field(default_factory=dict)  # input name -> the run that produced it, where known
    # the key (hex) this attempt signs its outcome document with, where its driver asks for a signature
    # (sematic_k8s.executors.outcome_signing): a secret, handed over only where the task is not stored; never logged
    signing_key: str = ""

    def to_json(self) -> str:
        doc = asdict(self)
        for name in ("urls", "input_origins", "signing_key"):
            if not doc[name]:
                del doc[name]
        if not doc["packaged_only"]:
            del doc["packaged_only"]
        return json.dumps(doc, separators=(",", ":"))

    def __repr__(self) -> str:  # never the URLs
        return f"TaskSpec(run_id={self.run_id!r}, attempt={self.attempt}, func_path={self.func_path!r})"

    @classmethod
    def from_json(cls, text: str) -> TaskSpec:
        return cls(**json.loads(text))


@dataclass(frozen=True, slots=True)
class TaskRef:
    """Where a worker fetches a task too large to be handed over whole (a pod's Secret holds 1 MiB at most): the
    storage key its TaskSpec (JSON) was stored at (:func:`task_key`, named by its content) and a presigned GET of it;
    and its ``signing_key``, which the stored copy never holds (:attr:`TaskSpec.signing_key`). The URL and the key are
    secrets: never logged."""

    key: str
    url: str
    signing_key: str = ""

    def to_json(self) -> str:
        doc: dict[str, Any] = {"task_ref": {"key": self.key, "url": self.url}}
        if self.signing_key:
            doc["signing_key"] = self.signing_key
        return json.dumps(doc, separators=(",", ":"))

    def __repr__(self) -> str:  # never the URL nor the key
        return f"TaskRef(key={self.key!r})"

    @classmethod
    def parse(cls, text: str) -> TaskRef | None:
        """The TaskRef that ``text`` holds, None when it holds a TaskSpec."""
        doc = json.loads(text)
        ref = doc.get("task_ref") if isinstance(doc, dict) else None
        if not isinstance(ref, dict):
            return None
        return cls(str(ref["key"]), str(ref["url"]), str(doc.get("signing_key") or ""))


def task_key(root_id: str, run_id: str, attempt: int, task_json: str) -> str:
    """Where a worker's TaskSpec ``task_json`` is stored when a TaskRef hands it over: named by its sha256 (written
    once, never replaced: a task presigned again is another document), under its resolution's
    :func:`tasks_prefix` (whoever drives the resolution next finds what an earlier driver left there)."""
    return f"{tasks_prefix(root_id)}{run_id}/{attempt}/{hashlib.sha256(task_json.encode()).hexdigest()}.json"


def tasks_prefix(root_id: str) -> str:
    """The folder of the stored tasks of resolution ``root_id`` (:func:`task_key`): every copy its drivers stored."""
    return f"tasks/{root_id}/"


def outcome_key(run_id: str, attempt: int) -> str:
    """The storage key of a worker's outcome document for one attempt."""
    return f"outcomes/{run_id}/{attempt}.json"


def staged_key(run_id: str, attempt: int) -> str:
    """Where a worker with presigned URLs writes a value too large for its outcome document."""
    return f"outcomes/{run_id}/{attempt}.value"
