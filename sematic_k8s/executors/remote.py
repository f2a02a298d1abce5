"""Executors that run each Run attempt as a worker (process, container, pod) elsewhere, and the worker's
side of their contract.

The task goes out as a :class:`~sematic_k8s.specs.TaskSpec`, never in an environment when it carries presigned
URLs (``docker inspect`` would show them): a 0400 file in a container, a worker process's stdin, a file of a pod's
own Secret (each named by $SEMATIC_K8S_TASK_FILE); $SEMATIC_K8S_TASK only for a task without URLs. A task too large
for a Secret is stored and handed over by reference (:func:`task_ref`; the worker's :func:`load_task`). The worker
(``python -m sematic_k8s.worker``, which calls :func:`run_task`) stores the output, the logs and an outcome
document in artifact storage; :class:`RemoteExecutor` reads the outcome when the worker ends, and stops a
worker that outlives its func's ``timeout`` (recorded as DeadlineExceeded, "timed out after N s", with its
last log lines). Subclasses only say how to launch a worker, how to see which ones ended, how to read the end
of its log, how to stop one and, for a restarted driver's resumed attempt, how to follow its worker again.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sematic_k8s import graph, logcapture, packaged, serialization, settings
from sematic_k8s.error_records import error_info, kinds
from sematic_k8s.errors import (
    DiskFull,
    FuncNotFound,
    ImportInterrupted,
    InfrastructureError,
    PresignedRequestRefused,
    StorageError,
    StorageKeysRefused,
    WorkerDied,
    worker_death,
)
from sematic_k8s.executors import outcome_signing
from sematic_k8s.executors.base import Outcome, Task
from sematic_k8s.executors.inline import execute
from sematic_k8s.func import load_func
from sematic_k8s.packaged import restricted_if
from sematic_k8s.settings import STORAGE_ENV
from sematic_k8s.specs import (
    WORKER_EXIT_INFRASTRUCTURE,
    WORKER_SAYS,
    TaskRef,
    TaskSpec,
    outcome_key,
    staged_key,
    task_key,
)
from sematic_k8s.storage.base import Storage, append_attempt_logs, artifact_key, artifact_loader, put_artifact
from sematic_k8s.storage.presigned import PresignedStorage

LOG_TAIL = 40  # a dead worker's last log lines (its container's or its process's stderr) kept for its error
POLL_INTERVAL = 0.05  # seconds between checks when a subclass cannot block on its workers
CARRIED_MAX = 1024 * 1024  # bytes of a value a presigned worker carries in its outcome document; more: staged
SIGNS_ASKED_AGAIN_AFTER = 60.0  # seconds before an image's labels that could not be read are asked for again
URL_EXPIRY = 24 * 3600.0  # seconds a worker's presigned PUTs last when its func has no timeout
READ_GRACE = 900.0  # seconds (and twice the retry window) a worker's input GETs last: it reads them as it starts
log = logging.getLogger("sematic_k8s")


def run_task(spec: TaskSpec, storage: Storage) -> dict[str, Any]:
    """The worker's side: execute one attempt here and store its output, logs and outcome document
    (never metadata: the driver, the single writer of Run records, reads the outcome). Returns the document.

    With presigned URLs (``spec.urls``, ``storage`` a PresignedStorage) the value's bytes and the logs go in
    the outcome document (or, for a large value, the staging object) for the executor to store."""
    # a worker of a driver the server started loads funcs and values as its driver does (told by its TaskSpec)
    with restricted_if(spec.packaged_only, f"the image of run {spec.run_id}, of a rerun the server started,"):
        return _run_task(spec, storage)


def _run_task(spec: TaskSpec, storage: Storage) -> dict[str, Any]:
    try:
        func = load_func(spec.func_path, spec.source_file)
    except FuncNotFound as e:  # its module's mistake, the attempt's error (one that may pass, ImportInterrupted: 75)
        return _store_outcome(spec, storage, {"error": error_info(e)})
    inputs = {name: serialization.Value(artifact_id, spec.input_formats[name], "", load=artifact_loader(storage))
              for name, artifact_id in spec.input_ids.items()}
    for name, origin in spec.input_origins.items():  # named if the input does not load
        if name in inputs:
            inputs[name].origin = origin
    logcapture.install()
    try:
        outcome = execute(Task(spec.run_id, spec.root_id, func, inputs, spec.attempt))
    finally:
        logcapture.uninstall()
    carried: dict[str, Any] = {}
    if spec.urls:
        carried = {"logs": outcome.logs} if outcome.logs else {}
    else:
        append_attempt_logs(storage, spec.run_id, spec.attempt, outcome.logs)
    doc: dict[str, Any]
    if outcome.error_info is not None:
        doc = {"error": outcome.error_info}
    else:
        try:
            kind = "expansion" if graph.template_of(outcome.value, lambda _: None)[1] else "output"  # Futures
            if kind == "output":
                func.check_output(outcome.value)
            s = serialization.serialize(outcome.value, func.name)
            if not spec.urls:
                doc = {kind: put_artifact(storage, s)}
            elif len(s.payload) <= CARRIED_MAX:
                doc = {kind: s.record(), "payload": base64.b64encode(s.payload).decode()}
            else:
                storage.put(staged_key(spec.run_id, spec.attempt), s.payload)
                doc = {kind: s.record(), "staged": True}
        except InfrastructureError:
            raise
        except Exception as e:
            doc = {"error": error_info(e)}
    return _store_outcome(spec, storage, doc, carried)


def _store_outcome(spec: TaskSpec, storage: Storage, doc: dict[str, Any],
                   carried: dict[str, Any] | None = None) -> dict[str, Any]:
    """Store the attempt's outcome document ``doc`` (with what it ``carried`` for its executor), signed when its
    driver asked; returns ``doc``."""
    written = {**doc, **(carried or {})}
    if spec.signing_key:  # its driver asked: who wrote the document is proven by its key
        written = outcome_signing.signed(spec.signing_key, written)
    storage.put(outcome_key(spec.run_id, spec.attempt), json.dumps(written).encode())
    return doc


def adopt_outcome(storage: Storage, spec: TaskSpec, doc: dict[str, Any]) -> dict[str, Any]:
    """The executor's side of a worker with presigned URLs: store the value and logs its outcome document
    carries (the value only when its bytes match its content id; the logs once per attempt, also when a restarted
    driver adopts the same document again: :func:`~sematic_k8s.storage.base.append_attempt_logs`), and return the
    plain document."""
    from concurrent.futures import ThreadPoolExecutor  # here: the worker, which imports this module, needs none

    logs = doc.pop("logs", None)
    with ThreadPoolExecutor(1, thread_name_prefix="sk-logs") as pool:  # the logs beside the value's put
        appended = pool.submit(append_attempt_logs, storage, spec.run_id, spec.attempt, logs) \
            if isinstance(logs, str) and logs else None
        doc = _store_value(storage, spec, doc)
        if appended is not None:
            appended.result()
    return doc


def _store_value(storage: Storage, spec: TaskSpec, doc: dict[str, Any]) -> dict[str, Any]:
    payload, staged = doc.pop("payload", None), doc.pop("staged", False)
    kind = "output" if "output" in doc else "expansion" if "expansion" in doc else None
    if kind is None or (payload is None and not staged):
        return doc
    record = doc[kind]
    try:
        data = storage.get(staged_key(spec.run_id, spec.attempt)) if staged else base64.b64decode(payload)
        serialization.verify(record["id"], record["format"], data)
    except (KeyError, TypeError, ValueError) as e:  # a worker's document is client-written: checked
        return {"error": error_info(ValueError(f"the worker's {kind} could not be stored: {e}"))}
    storage.put(artifact_key(record["id"]), data, repair=True)
    return doc


@dataclass(slots=True)
class Ended:
    """A worker that stopped: its exit code and, when it died, why (OOMKilled, Evicted, ...)."""

    run_id: str
    exit_code: int | None
    reason: str | None = None
    message: str | None = None
    last_logs: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # where it ran (container, pod, image)
    stored: bool = False  # not ended yet: it said its outcome is stored (read it; if absent, its end is awaited)


class RemoteExecutor:
    """Launches workers and turns their outcome documents into Outcomes."""

    enforces_timeouts = True  # False where the platform stops workers itself (a pod's activeDeadlineSeconds)
    presigns = False  # True: workers get presigned URLs (when the storage makes them), not storage settings
    # True where the task reaches the worker only outside the bucket (a process's stdin, a container's task file, a
    # pod's task Secret): its worker signs its outcome with a key of its attempt (outcome_signing), where its image
    # can (:meth:`workers_sign`), and an outcome without that signature is not adopted
    signs = False

    def __init__(self, storage: Storage, storage_url: str, *, secret: bytes | None = None) -> None:
        """``secret``: what its workers' keys derive from, its driver's (outcome_signing.resolution_secret: the
        server credential, else the one its database keeps); None: this process's (one made outside a driver)."""
        self.storage = storage
        self.storage_url = storage_url
        self.secret = (secret or outcome_signing.resolution_secret()) if self.signs else b""
        self._signs: bool | None = None  # workers_sign(), once known
        self._signs_asked_again_at = 0.0  # monotonic time before which an unknown workers_sign() is not asked again
        self.running: dict[str, TaskSpec] = {}
        self.finished: list[Ended] = []  # resumed attempts whose outcome was already stored
        self.deadlines: dict[str, tuple[float, float]] = {}  # run id -> (monotonic deadline, timeout)

    # -- what subclasses implement ----------------------------------------------------------------

    def launch(self, spec: TaskSpec, task: Task, env: dict[str, str]) -> None:
        """Start a worker with ``env`` and give it ``spec`` (``spec.to_json()``): in the file (or stdin) that
        $SEMATIC_K8S_TASK_FILE names, or in $SEMATIC_K8S_TASK only when it carries no presigned URL."""
        raise NotImplementedError

    def ended(self, timeout: float) -> list[Ended]:
        """Workers that stopped since the last call, waiting up to ``timeout`` for the first."""
        raise NotImplementedError

    def stop(self, run_id: str) -> None:
        raise NotImplementedError

    def tail(self, run_id: str) -> str:
        """The last lines a running worker printed ("" where they cannot be read)."""
        return ""

    def where(self, run_id: str) -> dict[str, Any]:
        """Where a running worker runs (its container, Job and pod), as its ending's details say it; {} unknown."""
        return {}

    def unread_tail(self, e: Ended) -> str:
        """The last lines of a worker that ended with exit code 0 but without an outcome (``os._exit(0)`` in its
        func), where they are read only on a failure ("" where they cannot be read, or were read already)."""
        return ""

    def workers_sign(self, task: Task) -> bool:
        """Whether this executor's workers are asked to sign their outcome (and theirs verified): where it
        :attr:`signs` and their code can (:meth:`image_signs`), decided once it is known; while it cannot be read
        (a registry that does not answer) not, asked again at a submit :data:`SIGNS_ASKED_AGAIN_AFTER` later (a
        lookup that failed once does not turn signing off for the driver's life)."""
        if self._signs is None and self.signs and time.monotonic() >= self._signs_asked_again_at:
            self._signs = self.image_signs(task)
            if self._signs is None:
                self._signs_asked_again_at = time.monotonic() + SIGNS_ASKED_AGAIN_AFTER
        return bool(self._signs) if self.signs else False

    def image_signs(self, task: Task) -> bool | None:
        """Whether the code its workers run signs (None: not known now): a worker process's is this code; a
        container's or a pod's image says (:func:`outcome_signing.image_signs`)."""
        return True

    def reattach(self, spec: TaskSpec, task: Task) -> float | None:
        """A resumed attempt (a restarted driver's): follow its worker if it is still there, running or ended
        unwatched, and return how many seconds it has run; None when there is none to follow (where workers
        re-attach at launch instead, as Jobs do, or cannot be found again)."""
        return None

    # -- the Executor interface -------------------------------------------------------------------

    def submit(self, task: Task) -> None:
        spec = TaskSpec(
            run_id=task.run_id, root_id=task.root_id, func_path=task.func.path, source_file=task.func.source_file,
            input_ids={k: v.id for k, v in task.inputs.items()},
            input_formats={k: v.format for k, v in task.inputs.items()}, attempt=task.attempt,
            packaged_only=packaged.restricted_to() is not None,  # its driver's: a rerun the server started
            input_origins={k: v.origin for k, v in task.inputs.items() if v.origin},
            signing_key=outcome_signing.attempt_key(self.secret, task.run_id, task.attempt)
            if self.workers_sign(task) else "",
        )
        self.running[task.run_id] = spec
        if task.resumed:  # a restarted driver: its worker may still be there, or may have ended meanwhile
            ran = self.reattach(spec, task)
            if ran is not None:  # followed as if launched here: never started a second time
                self._deadline(task, ran)
                return
            if self.storage.exists(outcome_key(spec.run_id, spec.attempt)):
                self.finished.append(Ended(spec.run_id, 0, details={"resumed": True}))  # it ended while no driver ran
                return
        spec = self.running[task.run_id] = self.presigned(spec, task)  # the worker needs no credentials, nor botocore
        self.launch(spec, task, {STORAGE_ENV: self.storage_url})  # the URL for the user's code too
        self._deadline(task, 0.0)

    def presigned(self, spec: TaskSpec, task: Task) -> TaskSpec:
        """``spec`` with URLs presigned now (:func:`_presigned`) where this executor presigns and its storage can
        (else ``spec``): at launch, and again where a launch waits or is made again (a pod's)."""
        presign = getattr(self.storage, "presign", None) if self.presigns else None
        return spec if presign is None else dataclasses.replace(spec, urls=_presigned(spec, presign, task))

    def _deadline(self, task: Task, ran: float) -> None:
        """Count the func's timeout for a worker that has run ``ran`` seconds already."""
        if task.func.timeout is not None and self.enforces_timeouts:
            self.deadlines[task.run_id] = (time.monotonic() + task.func.timeout - ran, task.func.timeout)

    def wait(self, timeout: float | None) -> list[Outcome]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_INTERVAL if deadline is None else max(0.0, min(POLL_INTERVAL, deadline - time.monotonic()))
            self.finished.extend(self._timed_out())
            ended, self.finished = self.finished + self.ended(0 if self.finished else left), []
            outcomes = [o for e in ended if e.run_id in self.running and (o := self._outcome(e)) is not None]
            if outcomes or (deadline is not None and time.monotonic() >= deadline):
                return outcomes

    def _outcome(self, e: Ended) -> Outcome | None:
        """The attempt's outcome; None when a worker said it stored one that is not there (its end is awaited)."""
        spec = self.running[e.run_id]
        details = {**e.details, **({"reason": e.reason} if e.reason else {})}
        try:
            document = self.storage.get(outcome_key(spec.run_id, spec.attempt))
        except KeyError:
            if e.stored:
                return None
            if e.exit_code == 0 and not e.last_logs:
                e.last_logs = self.unread_tail(e)
            doc = {"error": _died(e)}
            # unless its own landed; also in the recorded error: a full disk (often the worker's own) loses nothing
            with contextlib.suppress(DiskFull):
                append_attempt_logs(self.storage, spec.run_id, spec.attempt, e.last_logs)
        else:
            doc = self._adopted(spec, e, document)
        del self.running[e.run_id]
        self.deadlines.pop(e.run_id, None)
        return Outcome(spec.run_id, spec.attempt, output=doc.get("output"), expansion=doc.get("expansion"),
                       error_info=doc.get("error"), details=details)

    def _adopted(self, spec: TaskSpec, e: Ended, document: bytes) -> dict[str, Any]:
        """The outcome document's bytes adopted (:func:`adopt_outcome`; also a resumed attempt's, whose worker had
        URLs), once its signature is verified where its worker was asked to sign: one that is not (written or
        replaced by another writer of the bucket, or by an older driver's worker) is logged and the attempt lost,
        an infrastructure failure (OutcomeUnverified): it is run again."""
        try:
            doc = json.loads(document)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError) as error:  # client-written bytes: not JSON, nested past reading
            log.warning("run %s attempt %d: its outcome document cannot be read (%s): not adopted, the attempt is "
                        "run again", spec.run_id, spec.attempt, type(error).__name__)
            return {"error": _died(dataclasses.replace(e, reason="OutcomeUnverified", message="not readable"))}
        if spec.signing_key:
            why = outcome_signing.unverified(spec.signing_key, doc)
            if why:
                log.warning("run %s attempt %d: its outcome document is %s, not its worker's (written or replaced by "
                            "another writer of the artifact bucket): not adopted, the attempt is run again",
                            spec.run_id, spec.attempt, why)
                return {"error": _died(dataclasses.replace(e, reason="OutcomeUnverified", message=why))}
            doc.pop(outcome_signing.SIGNATURE)
        return adopt_outcome(self.storage, spec, doc)

    def _timed_out(self) -> list[Ended]:
        """Workers past their func's timeout: their last log lines read, then stopped."""
        now = time.monotonic()
        out = []
        for run_id, (deadline, timeout) in list(self.deadlines.items()):
            if deadline > now:
                continue
            del self.deadlines[run_id]
            if run_id not in self.running:
                continue
            tail, where = self.tail(run_id), self.where(run_id)
            self.stop(run_id)
            out.append(Ended(run_id, None, "DeadlineExceeded", f"timed out after {timeout:g} s", tail,
                             {**where, "timed_out_after": timeout}))
        return out

    def cancel(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self.deadlines.pop(run_id, None)
            if self.running.pop(run_id, None) is not None:
                self.stop(run_id)

    def close(self) -> None:
        self.cancel(list(self.running))


def _presigned(spec: TaskSpec, presign: Callable[[str, str, float], str], task: Task) -> dict[str, str]:
    """The requests a worker makes, presigned ("GET key" / "PUT key" -> URL): its inputs, its outcome
    document, its staging object. The PUTs last the func's timeout (else URL_EXPIRY) plus twice the retry window;
    the GETs only :func:`_read_expiry`, as the worker reads every input before its func runs (one that starts later
    meets 403 "Request has expired", a plain StorageError, not StorageKeysRefused: the attempt is run again with
    new URLs, as an infrastructure failure)."""
    expiry, reads = (task.func.timeout or URL_EXPIRY) + 2 * settings.retry_window() + 60, _read_expiry()
    urls = {f"GET {artifact_key(i)}": presign("GET", artifact_key(i), reads) for i in spec.input_ids.values()}
    for key in (outcome_key(spec.run_id, spec.attempt), staged_key(spec.run_id, spec.attempt)):
        urls[f"PUT {key}"] = presign("PUT", key, expiry)
    return urls


def _read_expiry() -> float:
    """Seconds a worker's presigned GETs last: READ_GRACE plus twice the retry window (it reads as it starts)."""
    return READ_GRACE + 2 * settings.retry_window() + 60


def task_ref(storage: Storage, spec: TaskSpec, claim: Callable[[str], None] | None = None) -> TaskRef:
    """Hand ``spec`` (presigned URLs and all) over by reference, for a worker whose task is too large to be handed
    over whole (a pod's Secret holds 1 MiB at most): stored at its :func:`~sematic_k8s.specs.task_key` (named by its
    content: written once), with a presigned GET of it that lasts as its input GETs do. ``claim(key)`` is called
    before the copy is stored (a delete of that key on its way must not take it). Storage must presign."""
    if spec.signing_key:  # the stored copy is the bucket's to read: the key would sign anything
        raise ValueError(f"the task of run {spec.run_id} carries a signing key: it is never stored")
    text = spec.to_json()
    key = task_key(spec.root_id, spec.run_id, spec.attempt, text)
    if claim is not None:
        claim(key)
    storage.put(key, text.encode())
    return TaskRef(key, storage.presign("GET", key, _read_expiry()))  # type: ignore[attr-defined]


def load_task(text: str) -> TaskSpec:
    """The worker's side: its TaskSpec from what it was handed (``text``), itself or a :class:`TaskRef` to the copy
    it then fetches through the presigned GET, checked against the sha256 its key names. A copy not fetched (storage
    out of reach past the retry window, the GET expired, nothing there) or not that copy is a StorageError: the
    worker exits 75 and its attempt is run again, handed over afresh. The copy holds no signing key: the reference
    carries it."""
    ref = TaskRef.parse(text)
    if ref is None:
        return TaskSpec.from_json(text)
    storage = PresignedStorage({f"GET {ref.key}": ref.url})
    try:
        data = storage.get(ref.key)
    except KeyError:
        raise StorageError(f"the task stored at {ref.key!r} is not there") from None
    finally:
        storage.close()
    if f"/{hashlib.sha256(data).hexdigest()}." not in ref.key:
        raise StorageError(f"the task fetched from {ref.key!r} is not the one its key names (other bytes)")
    return dataclasses.replace(TaskSpec.from_json(data.decode()), signing_key=ref.signing_key)  # the key: handed


def worker_said(logs: str) -> tuple[str, str] | None:
    """The infrastructure failure a worker that exited 75 named in its last line of its own (``WORKER_SAYS``
    "<error class>: <words>"), found in its last log lines: (class name, words)."""
    for line in reversed(logs.splitlines()):
        if line.startswith(WORKER_SAYS):
            kind, colon, words = line[len(WORKER_SAYS):].partition(": ")
            return (kind, words) if colon else None
    return None


# the infrastructure failures a worker that exited 75 is recorded as, in its words; any other: StorageUnreachable
WORKER_SAID = (DiskFull, StorageKeysRefused, PresignedRequestRefused, ImportInterrupted)


def _died(e: Ended) -> dict[str, Any]:
    """The recorded error of a worker that ended without writing an outcome: the WorkerDied class named by
    its reason (see :mod:`sematic_k8s.errors`), in plain words; its traceback is the worker's last log lines
    (there is no Python traceback, and the message is said once, where every error's is). A worker that exited
    75 on a full disk is recorded as the DiskFull it named, in its words (which disk, the space left there); one whose
    presigned URLs S3 refused as the StorageKeysRefused (S3's code, the access key) or PresignedRequestRefused (the
    object, S3's code and message, what to do) it named; one whose func's module raised an error that may pass as it
    loaded as the ImportInterrupted it named (the module, its error)."""
    tail = f"last log lines:\n{e.last_logs}" if e.last_logs else ""
    said = worker_said(e.last_logs) if e.exit_code == WORKER_EXIT_INFRASTRUCTURE and not e.reason else None
    said_as = {c.__qualname__: c for c in WORKER_SAID}.get(said[0]) if said is not None else None
    if said is not None and said_as is not None:
        return {"type": said[0], "message": said[1], "traceback": tail, "mro": kinds(said_as)}
    reason = e.reason or ("StorageUnreachable" if e.exit_code == WORKER_EXIT_INFRASTRUCTURE else "")
    cls = worker_death(reason)
    plain = cls.words or f"the worker exited with code {e.exit_code} without a result"
    message = plain + (f": {e.message}" if e.message else "")
    mro = kinds(cls) if cls is not WorkerDied or not reason else [reason, *kinds(WorkerDied)]
    return {"type": mro[0], "message": message, "traceback": tail, "mro": mro}
