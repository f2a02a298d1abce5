"""Every error a user of sematic-k8s can catch or name in ``retry_on`` (the form in which errors are recorded on
Runs is :func:`sematic_k8s.error_records.error_info`'s).

User errors say that the pipeline or one of its funcs went wrong; infrastructure errors say that
something the pipeline runs on did (DESIGN.md "Faults": they are recorded as such, never as the user's
func failing)::

    Exception
    ├── FuncError (TypeError)           a func declared or called wrongly; a value not matching its hints
    │   ├── FutureHasNoValue (+ AttributeError)  a Future used as a value while the pipeline is built
    │   └── Unloadable                  a value that serializes but whose bytes do not load back (its run fails)
    ├── ResolutionFailed                a Resolution failed: .resolution_id, .run_id, .error (recorded info)
    │   └── ResolutionCanceled          ... because someone asked it to cancel
    ├── CorruptRecord (ValueError)      a value in the metadata database is not valid JSON: edited or damaged
    ├── ArtifactUnloadable (ValueError) a recorded artifact's bytes do not load here (.artifact_id, .origin: its run)
    ├── ContinuedAlready (ValueError)   a ``continue`` of a resolution another live resolution continues already
    ├── ReusedOutputGone (ValueError)   a rerun would reuse a run's output whose bytes are gone from storage
    ├── ResolutionLive (ValueError)     a rerun of a resolution not ended (running, canceling, claimed)
    ├── CancelRequested                 a resolution's end as resolved refused: a cancel was accepted just before
    ├── DriverUnneeded                  a driver's launch ended unstarted: its resolution ended (was canceled) while
    │                                   it waited for its image or a slow Kubernetes API
    ├── CallStopped                     a call under way ended by its process's stop (a server that stops): not
    │                                   tried again
    ├── FuncNotFound (LookupError)      a func recorded as ``module:qualname`` cannot be found here
    │   └── CodeRefused                 ... or is not among the image's packaged code (a server-started rerun)
    │       └── ValueRefused            an artifact names a global such a rerun may not load (sematic_k8s.loadable)
    └── InfrastructureError (RuntimeError)
        ├── ServerError                 the sematic-k8s server is unreachable or answered an error (.status)
        ├── StorageError                artifact storage failed
        │   ├── StorageLinkRefused      a local storage's key is a symbolic link: not followed
        │   ├── RerunUnplanned          a rerun's planning met its storage failing: nothing of it recorded
        │   └── S3StorageError          missing bucket, unreachable endpoint, refused request
        │       └── S3CredentialsError  no usable AWS credentials, or refused ones
        ├── BuildError                  ``docker build`` failed (.step, .output, .log)
        ├── PushError                   ``docker push`` failed or its digest is unconfirmed
        │   └── RegistryUnavailable     the registry did not answer, or kept answering 429/5xx, past the retry window
        ├── RegistryAuthError           the image registry wants credentials we do not have
        ├── ImportInterrupted           a recorded func's or a value class' module raised, as it loaded, an error
        │                               that may pass (an OSError: a network mount or service it reads at import, or
        │                               a library's error raised from one; a service's 5xx or 429; MemoryError)
        ├── DockerUnavailable           the Docker engine does not answer (stopped, hung, a wrong $DOCKER_HOST)
        ├── ImageUnpulled               the Docker engine could not pull a driver's image (its registry refused it, or
        │                               did not answer past the pull's grace)
        ├── ImageUserUnknown            an image's USER names a user or group its /etc/passwd or /etc/group lacks
        ├── KubernetesForbidden         the Kubernetes API keeps refusing the driver (403): not transient
        ├── KubernetesUnauthorized      the Kubernetes API refuses the driver's token (401): a restart gets a new one
        ├── DriverJobDeleted            the driver's own Job was deleted while it ran: it stops, not restarted
        ├── StopsForAFix                one that does not pass by itself: someone must act (.fix) first
        │   ├── DiskFull                a disk has no space left: the metadata database or artifact storage cannot grow
        │   ├── DatabaseLocked          another process held the SQLite database's write lock past the busy timeout
        │   ├── StorageKeysRefused      S3 refused a worker's presigned URLs (403): their keys rotated or revoked
        │   ├── PresignedRequestRefused S3 refused a worker's presigned request with a 4xx no retry passes (the
        │   │                           bucket deleted, a body too large, a request of a form it does not take)
        │   └── DatabaseReadOnly        PostgreSQL takes no writes (a standby; default_transaction_read_only)
        └── WorkerLost (+ WorkerDied)   a worker's pod lost its node: the same attempt may run again
            ├── Evicted
            ├── NodeRejected            its kubelet refused it (OutOfcpu, OutOfmemory, NodeAffinity, TaintToleration)
            └── StorageUnreachable      the worker could not reach artifact storage

    BaseException
    ├── RunInterrupted                  raised in a func body on the resolving thread when its resolution is canceled
    └── WorkerDied                      a worker ended without writing an outcome (recorded, never raised)
        ├── OOMKilled, DeadlineExceeded, PodDeleted, ContainerRemoved (docker rm), JobDeleted, BackoffLimitExceeded
        ├── WorkerNeverStarted          its code never began:
        │   Unschedulable, ImagePullBackOff, ErrImagePull, InvalidImageName, ErrImageNeverPull,
        │   CreateContainerConfigError, CreateContainerError, JobCreateFailed, JobNameConflict, InvalidJob,
        │   FailedCreate (no pod: Pod Security, ServiceAccount, LimitRange, webhook), FailedCreatePodSandBox,
        │   FailedMount (a pod that never starts)
        └── WorkerLost

``WorkerDied`` is not an ``Exception`` (like ``KeyboardInterrupt``), so a func's default
``retry_on=(Exception,)`` does not retry a worker that ran out of memory or time: another attempt would
most likely end the same way. Name the class (``retry_on=(sk.errors.OOMKilled,)``) to retry it. A lost
worker is both, so it is retried by default.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
from collections.abc import Sequence
from typing import Any, TypeVar

# -- user errors --------------------------------------------------------------------------------------------


class FuncError(TypeError):
    """A func was declared or called wrongly, or a value did not match its type hints."""


class Unloadable(FuncError):
    """A value serialized, but its bytes did not load back (a ``__reduce__`` or ``__setstate__`` that raises, a class
    that cannot be found by its name): whoever loaded it later would fail, so the run that returned it fails now."""

    ADVICE = ("return a value that can be loaded back: plain data (numbers, strings, lists, dicts, dataclasses), or "
              "an object of a class importable by its module's name whose pickle loads (its __reduce__, __setstate__)")

    def __init__(self, type_name: str, cause: str, returned_by: str | None = None) -> None:
        self.type_name, self.cause, self.returned_by = type_name, cause, returned_by
        what = f"{returned_by}: its output, a {type_name}," if returned_by else f"a value of type {type_name}"
        super().__init__(f"{what} cannot be loaded back once serialized ({cause}): {self.ADVICE}")


class FutureHasNoValue(FuncError, AttributeError):
    """A Future was used where a value is needed (``if f``, ``f > 3``, ``f.attr``, ``f + 1``, ``len(f)``) while
    the pipeline is being built. Also an AttributeError, so ``hasattr(future, name)`` is simply False."""


class ResolutionFailed(Exception):
    """A Resolution failed; ``run_id`` names the Run whose error caused it."""

    def __init__(self, message: str, *, resolution_id: str, run_id: str | None,
                 error: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.resolution_id = resolution_id
        self.run_id = run_id
        self.error = error


class ResolutionCanceled(ResolutionFailed):
    """A Resolution was canceled on request (``sematic-k8s cancel``, the server's cancel action)."""

    @classmethod
    def over_failure(cls, failure: str, *, resolution_id: str, run_id: str | None = None,
                     error: dict[str, Any] | None = None) -> ResolutionCanceled:
        """A failing end recorded canceled: a cancel accepted before it was recorded won
        (:func:`~sematic_k8s.store.guards.kept_cancels`). ``failure``: what failed, in words (the resolving process's,
        or read back from the record by the CloudResolver): the same words whichever resolver or path met it."""
        return cls(f"resolution {resolution_id} was canceled (asked before its end was recorded); it had failed: "
                   f"{failure}", resolution_id=resolution_id, run_id=run_id, error=error)


class RunInterrupted(BaseException):
    """Raised inside a func body running in the resolving process (on the resolving thread, or the in-process
    executor's threads) when its resolution is canceled meanwhile, or, on those threads, its run passes its timeout
    (:mod:`sematic_k8s.executors.interrupts`). Not an ``Exception`` (like ``KeyboardInterrupt``), so a body's ``except
    Exception`` does not keep it from stopping; the loop then raises :class:`ResolutionCanceled` (or has already).
    ``logs`` holds what the body printed before it."""

    logs = ""


class ResolutionEnded(Exception):
    """A write to a Resolution that has already ended was refused: its writer is stale (a resolver marked dead
    after it stopped heartbeating, which came back), and what it would record there is not recorded. ``ended_at``:
    when the end was recorded (said, when known)."""

    def __init__(self, resolution_id: str, state: str, error: str | None,
                 ended_at: dt.datetime | None = None) -> None:
        when = f" at {ended_at:%Y-%m-%d %H:%M:%S} UTC" if ended_at is not None else ""
        why = f" ({error})" if error else ""
        super().__init__(f"resolution {resolution_id} has already ended as {state}{when}{why}: this process stops "
                         f"and records nothing more of it. Continue it with rerun_from={resolution_id!r}, "
                         f"rerun_mode='continue' (or `sematic-k8s rerun {resolution_id} --mode continue`), unless "
                         "that was done already")
        self.resolution_id, self.state, self.ended_at = resolution_id, state, ended_at


class DriverReplaced(ResolutionEnded):
    """A write by a driver that another driver has since taken the resolution over from (a replacement pod started
    while this one still ran, a driver started by hand): refused, so that only the newer driver records it. The
    driver stops without writing anything more and leaves the workers alone (the newer one re-attached to them)."""

    def __init__(self, resolution_id: str, taken_at: dt.datetime | None) -> None:
        when = f" at {taken_at:%Y-%m-%d %H:%M:%S} UTC" if taken_at is not None else ""
        Exception.__init__(self, f"another driver took over resolution {resolution_id}{when}: this one stops")
        self.resolution_id, self.state, self.taken_at, self.ended_at = resolution_id, "replaced", taken_at, None


class FuncNotFound(LookupError):
    """A func recorded as ``module:qualname`` cannot be found here: no such module, or no such func in it; or its
    module raised as it loaded (a typo'd import or name, a syntax error: the message names its line; an error that
    may pass is ImportInterrupted instead)."""


class CodeRefused(FuncNotFound):
    """A func named by a record is not among the image's packaged code, and a driver the server started loads
    nothing else (:mod:`sematic_k8s.packaged`)."""


class ValueRefused(CodeRefused):
    """An artifact's bytes name a global (a pickle's, a JSON value's class) that a process working for a rerun the
    server started may not load (:mod:`sematic_k8s.loadable`): nothing of the value is made."""

    def __init__(self, name: str, why: str, artifact_id: str | None = None) -> None:
        self.name, self.why, self.artifact_id = name, why, artifact_id
        super().__init__(f"{f'artifact {artifact_id}' if artifact_id else 'a value'} names {name}, which a rerun "
                         f"started by the server may not load: {why}")


class CorruptRecord(ValueError):
    """A value read from the metadata database is not JSON: the database was edited by hand, or damaged."""

    def __init__(self, text: str, problem: str) -> None:
        shown = text if len(text) <= 60 else text[:60] + "..."
        super().__init__(f"the metadata database holds a value that is not JSON ({shown!r}: {problem}): it was edited "
                         "or damaged; find its row (SQLite: SELECT id FROM runs WHERE NOT json_valid(notes), and so "
                         "on for each JSON column of runs and resolutions), then give it valid JSON or restore a "
                         "backup")


class ArtifactUnloadable(ValueError):
    """A recorded artifact's bytes (verified) do not load in this process: stored before its class changed, or of a
    class this process cannot import. Names the artifact and, where known, the run that produced it (``origin``)."""

    def __init__(self, artifact_id: str, type_name: str, cause: str, origin: str | None = None) -> None:
        self.artifact_id, self.type_name, self.cause, self.origin = artifact_id, type_name, cause, origin
        said = [f"a {type_name}" if type_name else "", f"the output of run {origin}" if origin else ""]
        what = ", ".join(w for w in said if w)
        run = origin or "RUN_ID"
        super().__init__(f"artifact {artifact_id}{f' ({what})' if what else ''} cannot be loaded here ({cause}): its "
                         f"class changed since it was stored, or cannot be imported here; make it load again, or "
                         f"compute it again (`sematic-k8s rerun {run}`)")


class ReusedOutputGone(ValueError):
    """A rerun (or a ``continue``) would reuse runs whose outputs' bytes are gone from storage (deleted by a lifecycle
    rule, or by hand) or replaced there (other bytes than recorded): refused before anything is recorded or launched,
    naming the first such run to rerun from (``.run_id``, of the original resolution) and what became of its output
    (``gone``: run id -> "gone from storage (<where>)" or "changed in storage: ...")."""

    def __init__(self, rerun_from: str, gone: dict[str, str]) -> None:
        self.rerun_from, self.gone = rerun_from, gone
        self.run_id, what = next(iter(gone.items()))
        more = f" (and {len(gone) - 1} other reused run(s): {', '.join(list(gone)[1:4])}...)" if len(gone) > 1 else ""
        super().__init__(f"rerun_from {rerun_from}: run {self.run_id}, whose output this rerun would reuse, has its "
                         f"output {what}{more}: rerun from that run instead "
                         f"(rerun_from={self.run_id!r}, `sematic-k8s rerun {self.run_id}`), which runs it again "
                         "and stores its output")


class RunResolved(Exception):
    """A write that would change the state or the output of a Run recorded as resolved was refused (with its whole
    batch): a resolved Run's value is final (a rerun records new Runs)."""

    def __init__(self, run_id: str, output_id: str | None) -> None:
        super().__init__(f"run {run_id} is recorded as resolved (output {output_id}): its state and output are final, "
                         "and this batch, which would change them, was not recorded (re-run it to compute it again)")
        self.run_id = run_id


class LabelsChanged(Exception):
    """A change of a resolution's tags or note made to labels that changed since they were read (someone changed
    them meanwhile, or this is a late copy of an older change): refused whole, so that no one's change is undone or
    overwritten unseen. ``labels_version`` names what was read (docs/FAULTS.md)."""

    def __init__(self, resolution_id: str, tags: list[str] | None, note: str | None) -> None:
        now = ", ".join(tags[:10]) + (f" and {len(tags) - 10} more" if len(tags) > 10 else "") if tags else "none"
        text = "empty" if not note else repr(note if len(note) <= 80 else note[:80] + "...")
        super().__init__(f"the labels of resolution {resolution_id} changed since they were read (tags now: {now}; "
                         f"note now: {text}): nothing was changed; read them again and make your change to them")
        self.resolution_id, self.tags, self.note = resolution_id, tags, note


class CancelRequested(Exception):
    """A write recording a resolution resolved, refused (with its whole batch) because a cancel of it was accepted
    just before (it is ``canceling``: the cancel landed after the loop last looked): an accepted cancel wins, so the
    loop records it canceled instead, as the person who asked was told."""

    def __init__(self, resolution_id: str) -> None:
        super().__init__(f"resolution {resolution_id} was asked to cancel before its end was recorded: it is "
                         "recorded canceled")
        self.resolution_id = resolution_id


class DriverUnneeded(Exception):
    """A driver's launch that waited (for its image, its registry not answering; for a slow Kubernetes API) ended
    without starting it: its resolution ended meanwhile (canceled while the server's rerun was claimed), and its
    record already says so. ``waited``: what for."""

    def __init__(self, resolution_id: str, waited: str = "its image") -> None:
        super().__init__(f"resolution {resolution_id} ended while its driver waited for {waited}: the driver is not "
                         "started")
        self.resolution_id = resolution_id


class CallStopped(Exception):
    """A call under way (to the Kubernetes API) ended because its process stops (:class:`sematic_k8s.stopping.Stop`
    set: a server asked to stop), not tried again. ``doing``: what the call was doing, in words (its launcher's, when
    it says more: a create that may have been made)."""

    def __init__(self, doing: str) -> None:
        super().__init__(f"{doing} was ended: this process stops")
        self.doing = doing


class ContinuedAlready(ValueError):
    """A ``continue`` (``rerun_mode="continue"``) of a resolution that another resolution, not ended, continues
    already: refused with the whole batch that would record it, before anything of it runs, so that what did not
    succeed is not run twice at once. Once that one ended (a silent one is marked dead then and there), it may be
    continued again."""

    def __init__(self, resolution_id: str, by: str, state: str) -> None:
        super().__init__(f"resolution {resolution_id} is being continued already by resolution {by} ({state}): "
                         f"nothing was started; follow that one (`sematic-k8s resolutions show {by}`), or cancel it "
                         f"(`sematic-k8s cancel {by}`) and continue again")
        self.resolution_id, self.by, self.state = resolution_id, by, state


class ResolutionLive(ValueError):
    """A rerun (``rerun_from``, any mode) of a run of a resolution that has not ended (running, canceling, or a rerun
    the server claimed whose driver has not recorded it yet): refused before anything of it is recorded or runs, so
    that its unfinished runs do not run beside the original's. One whose resolver went silent is marked dead by the
    read that finds it so (:mod:`sematic_k8s.store.liveness`), and is no longer in the way."""

    def __init__(self, resolution_id: str, state: str) -> None:
        shown = f"{state} (claimed: its driver is starting)" if state == "created" else state
        super().__init__(f"resolution {resolution_id} is {shown}: a rerun of it would run its unfinished runs beside "
                         f"its own, and nothing was started; wait for it to end or cancel it: sematic-k8s cancel "
                         f"{resolution_id}")
        self.resolution_id, self.state = resolution_id, state


class TooManyTags(ValueError):
    """A tag change that would leave a resolution with more tags than it may have (every listing of it carries
    them): refused with its whole change."""

    def __init__(self, resolution_id: str, count: int, most: int) -> None:
        super().__init__(f"resolution {resolution_id} would have {count} tags: a resolution has at most {most}; "
                         "nothing was changed: remove some first")
        self.resolution_id, self.count = resolution_id, count


# -- infrastructure errors ----------------------------------------------------------------------------------


def continue_how(resolution_id: str) -> str:
    """The ways to continue resolution ``resolution_id``."""
    return (f"rerun_from={resolution_id!r}, rerun_mode='continue' (or `sematic-k8s rerun {resolution_id} --mode "
            "continue`, or its dashboard page)")


class InfrastructureError(RuntimeError):
    """Something the pipeline runs on failed: the server, storage, the image build, a worker's node."""

    fix = ""  # what to fix first: a refusal, which stays until someone acts; empty: an outage, which passes by itself
    lasted = "rerun once it is back"  # what to do when a run's attempts all met it (its words say what it was)

    def then(self, doing: str, back: str = "it") -> str:
        """When to do ``doing`` again: after its fix (a refusal), or once ``back`` is back (an outage). The one place
        advice is chosen, by ``fix`` (never by the error's class)."""
        return f"{self.fix}, then {doing}" if self.fix else f"{doing} once {back} is back"

    def advice(self, resolution_id: str) -> str:
        """What to do about a resolution it ended: fix the named cause first, or (an outage) wait for it to pass."""
        return f"{self.then('continue the resolution')}: {continue_how(resolution_id)}"


class ServerError(InfrastructureError):
    """The server could not be reached, refused the request, or answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StorageError(InfrastructureError):
    """Artifact storage could not do what was asked. ``fix``: what to do first when storage refused (a link at a
    key, a directory it may not read, a bucket that does not exist: each stays until someone acts); empty when it was
    out of reach or failing past the retry window (an outage: it passes by itself)."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        if fix:
            self.fix = fix


class StorageLinkRefused(StorageError):
    """A local storage's key is a symbolic link: not followed, as whoever may write the storage's directory could
    make it name any file its reader (the server) may read."""

    def __init__(self, key: str) -> None:
        fix = "remove it from the storage's directory"
        super().__init__(f"storage key {key} is a symbolic link: a local storage reads none; {fix}", fix)


class RerunUnplanned(StorageError):
    """A rerun's planning met its storage failing (``failure``: out of reach past the retry window, refusing) as it
    checked the outputs the rerun reuses, or read its root's recorded inputs: nothing of the rerun was recorded, so it
    has no resolution to continue; it is run again once storage is back (a driver's Job starts it again: an outage),
    or once the failure's ``fix`` is done (a refusal)."""

    def __init__(self, rerun_from: str, storage: str, failure: StorageError) -> None:
        super().__init__(f"rerun_from {rerun_from}: the rerun could not be planned: its storage {storage} failed "
                         f"({' '.join(str(failure).split())}), so nothing of the rerun was recorded: "
                         f"{failure.then('run the rerun again', 'storage')}")
        self.failure = failure

    def advice(self, resolution_id: str) -> str:
        return ""  # its words say what to do: run the rerun again (it has no resolution to continue)


class S3StorageError(StorageError):
    """S3 could not do what storage asked: missing bucket, unreachable endpoint, refused request."""


class S3CredentialsError(S3StorageError):
    """No usable AWS credentials, or S3 refused the ones given."""

    fix = "give it AWS credentials that S3 accepts"


class ImportInterrupted(InfrastructureError):
    """A recorded func's module, or that of a class or global a value names, raised, as it loaded, an error that may
    pass (:func:`sematic_k8s.modules.import_may_pass`): its top level reads a network mount or calls a service that
    did not answer, or answered 5xx or 429, or memory ran short. Not the module's mistake (a typo'd name, a syntax
    error, an error of its own raised, a service's 4xx: FuncNotFound, ArtifactUnloadable): a driver that meets it
    is started again (exit 75), a worker's attempt is run again. ``module``: the module's name; the error it raised
    is its ``__cause__``."""

    lasted = ("check that the module's top level can reach what it reads (a service, a network mount, memory), "
              "then rerun")

    def __init__(self, message: str, module: str) -> None:
        super().__init__(message)
        self.module = module


_Stops = TypeVar("_Stops", bound="StopsForAFix")


class StopsForAFix(InfrastructureError):
    """An infrastructure failure that does not pass by itself: someone must do ``fix`` first (free space, end
    another process's hold on the database). Nothing of the write that met it was recorded, and nothing recorded
    before is lost. Its message says what happened and, once the resolution loop has ended a resolution on it
    (``resolution_id``), how to continue that resolution then."""

    transient = False

    def __init__(self, problem: str, fix: str, cause: str | None = None) -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix
        self.cause = cause or problem  # what happened, without what it did to the request (for a record's words)
        self.resolution_id: str | None = None

    def __str__(self) -> str:
        return f"{self.problem}: {self.advice(self.resolution_id) if self.resolution_id else self.fix}"

    @classmethod
    def said(cls: type[_Stops], words: str) -> _Stops:
        """The error again from its words: ``str`` of one that ended no resolution, "<problem>: <fix>" (no fix has
        ": " in it), as a worker process reports it (words without one: the class's own fix)."""
        problem, _, fix = words.rpartition(": ")
        return cls(problem, fix) if problem and fix else cls(words)  # type: ignore[call-arg]


class DiskFull(StopsForAFix):
    """A disk has no space left (or its quota is used up): the metadata database or artifact storage cannot take
    what a resolution records. Nothing was written of it (the database rolled the transaction back; no partial
    file is left where a read would take it as a value). Someone must free space."""

    def __init__(self, problem: str, fix: str = "free space on that disk") -> None:
        super().__init__(problem, fix)

    @classmethod
    def at(cls, path: str | os.PathLike[str], exc: BaseException | None = None) -> DiskFull:
        """The error of a write under ``path`` that found its disk full (``exc``: the OSError it met, which may say
        that the writer's quota is used up instead), saying how much space is left there."""
        where = os.fspath(path)
        left = f"{_size(_free(where))} left"
        if getattr(exc, "errno", None) == errno.EDQUOT:
            return cls(f"the disk quota for {where} is used up ({left} on its disk)", "free space within the quota")
        return cls(f"the disk holding {where} is full ({left})")


class StorageKeysRefused(StopsForAFix, StorageError):
    """S3 refused a worker's presigned URLs (403: ``InvalidAccessKeyId``, ``SignatureDoesNotMatch``, or
    ``AccessDenied`` not for an expiry): the storage keys its driver signed them with were rotated or revoked since.
    (An expired URL, "Request has expired", or ``ExpiredToken`` is a plain StorageError: the next attempt's URLs,
    presigned afresh, pass.) Not an outage: the same URLs are refused each time. The worker exits 75 naming it; the
    resolution loop runs the attempt once more, with URLs presigned afresh with the driver's keys of then, and ends
    the resolution on a second refusal (:mod:`sematic_k8s.resolvers.loop`)."""

    FIX = "give the driver current keys (the storage Secret)"

    def __init__(self, problem: str, fix: str = FIX) -> None:
        super().__init__(problem, fix)

    @classmethod
    def refusing(cls, method: str, key: str, access_key: str, code: str) -> StorageKeysRefused:
        """The error of S3's 403 (``code``: S3's error code, "" if none) to this worker's presigned ``method`` of
        ``key``, signed with ``access_key`` (the URL's ``X-Amz-Credential``; "" if none: an access key id is no
        secret, the URL is)."""
        whose = f"of access key {access_key} (its driver's)" if access_key else "of its driver"
        policy = ", or a bucket policy denies presigned requests" if code == "AccessDenied" else ""
        said = f"HTTP 403, {code}" if code else "HTTP 403"
        return cls(f"S3 refused the URLs presigned with the storage keys {whose} ({said} to the {method} of {key!r}): "
                   f"the keys were rotated or revoked{policy}")


class PresignedRequestRefused(StopsForAFix, StorageError):
    """S3 (or a proxy before it) refused a worker's presigned request with an answer the same request meets each time
    (:func:`sematic_k8s.storage.s3_answers.refused_for_good`: a 4xx in S3's words but a 403, which is the keys' or
    an expiry's, an expiry's 400 and a GET's 404 of an object not there): a bucket deleted (404 ``NoSuchBucket``), a
    body too large (400 ``EntityTooLarge``, 413), a query signed for another region (400
    ``AuthorizationQueryParametersError``), a request of a form it does not take (400, 405, 411, 501). Not an
    outage: no retry passes. The worker exits 75 naming it (or its outcome carries it), and the resolution ends at
    once, as on a full disk (its run canceled, its error kept), to be continued once ``fix`` is done. Its words name
    the object (its address, never the URL's query), S3's status, code and message."""

    FIX = "do what S3's answer asks"

    def __init__(self, problem: str, fix: str = FIX) -> None:
        super().__init__(problem, fix)

    @classmethod
    def refusing(cls, method: str, where: str, status: int, code: str, message: str, fix: str
                 ) -> PresignedRequestRefused:
        """The error of S3's answer (``status``, its error ``code`` and ``message``, "" if none) to a worker's
        presigned ``method`` of the object at ``where``, and what to do (``fix``)."""
        said = f"HTTP {status}" + (f", {code}" if code else "") + (f": {message}" if code and message else "")
        return cls(f"S3 refused the worker's {method} of {where} ({said}), which no retry passes", fix)


class DatabaseLocked(StopsForAFix):
    """Another process held the SQLite database's write lock for longer than a write waits for it (a write
    transaction left open: an ``sqlite3`` shell inside ``BEGIN``, a database browser with unwritten changes), or a
    write of this same process did (another of its connections). The write was not recorded. Someone must end that
    transaction; this process's own is sematic-k8s's, which should never take so long."""

    holder = "another process (a write transaction left open on it)"  # who held the lock, in words without a path

    @classmethod
    def at(cls, path: str, waited: float, *, by_this_process: bool = False) -> DatabaseLocked:
        """``by_this_process``: a write transaction of this process held the lock when the wait ended."""
        if by_this_process:
            holder = f"a write of this same process (pid {os.getpid()}, on another of its connections)"
            fix = ("no other program holds it: a write of sematic-k8s's own took that long, which it should not "
                   "(please report it, with this process's log)")
        else:
            holder = cls.holder
            fix = (f"end that transaction (an sqlite3 shell inside BEGIN, a database browser with unwritten changes; "
                   f"`fuser {path}` lists the processes that have the file open)")
        cause = f"the database {path} stayed locked by {holder} for {waited:g} s"
        e = cls(f"{cause}, so this write was not recorded", fix, cause)
        e.holder = holder
        return e


class DatabaseReadOnly(StopsForAFix):
    """The PostgreSQL database refused a write as read-only (SQLSTATE 25006): a standby its URL reaches after a
    failover, or ``default_transaction_read_only`` set on it by its operator. Nothing of the write was recorded. It may
    pass (the failover ends: the URL reaches the new primary) or need its operator; the server answers it 503."""

    cause_words = ("the metadata database is read-only (a standby after a failover, or default_transaction_read_only "
                   "set on it)")
    problem_words = f"{cause_words}, so this write was not recorded"
    fix_words = ("make it writable again (point the URL at the primary, or ALTER DATABASE ... SET "
                 "default_transaction_read_only = off)")

    def __init__(self, problem: str = problem_words, fix: str = fix_words) -> None:
        super().__init__(problem, fix, self.cause_words if problem == self.problem_words else None)


class TableLocked(StopsForAFix):
    """Another session held a lock on a table (or a row of it) of the PostgreSQL database for longer than the server's
    bound on lock waits (``lock_timeout``, SQLSTATE 55P03): a migration or maintenance (``LOCK TABLE``) holding it.
    Nothing of the request was recorded (its transaction was rolled back); it may be sent again once the lock ends,
    which the server answers 503 for. ``table``: the table named by PostgreSQL, or "a table"."""

    def __init__(self, problem: str, fix: str, table: str = "a table", cause: str | None = None) -> None:
        super().__init__(problem, fix, cause)
        self.table = table

    @classmethod
    def at(cls, table: str | None, waited: float) -> TableLocked:
        named = f"the metadata database's table {table}" if table else "a table of the metadata database"
        cause = f"{named} is locked by another session (a migration or maintenance?) for longer than {waited:g} s"
        return cls(f"{cause}, so nothing of this request was recorded",
                   "try again once that session lets it go (pg_locks names it); clients do, after Retry-After",
                   table or "a table", cause)


class DatabaseUnopenable(StopsForAFix):
    """The metadata database cannot be opened: a URL no installed driver takes, a file that cannot be created or
    read, a database server that does not answer or refuses the credentials. Nothing was read or written.
    ``unreachable``: its server did not answer (not up yet, or starting up), which may pass by itself."""

    unreachable = False
    in_settings = True  # its fix is in the settings naming the database; False: found, and its fix is its own


class SchemaTooNew(StopsForAFix):
    """The metadata database was migrated by a newer sematic-k8s than this one (a rollback after an upgrade, an
    older client or server replica on an upgraded database): this version does not know its schema, so it neither
    reads nor writes it."""

    @classmethod
    def at(cls, where: str, revision: str, head: str, elsewhere: str) -> SchemaTooNew:
        """``elsewhere``: how to point this version at another database."""
        return cls(f"the metadata database {where} was migrated by a newer sematic-k8s (its schema is at revision "
                   f"{revision}; this version knows revisions up to {head})",
                   f"use that newer sematic-k8s here too (pip install -U sematic-k8s), or point this one at another "
                   f"database ({elsewhere})")


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says a disk has no space left (ENOSPC), or the writer's quota is used up (EDQUOT)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _free(path: str) -> int | None:
    """Bytes free (for an unprivileged writer) on the disk holding ``path`` or its nearest existing parent."""
    import shutil  # only once a disk is full: not at every start of a driver or worker

    while True:
        try:
            return shutil.disk_usage(path).free
        except OSError:
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent


def _size(n: int | None) -> str:
    """``n`` bytes in words: ``512 bytes``, ``3.5 MiB``."""
    if n is None:
        return "unknown space"
    if n < 1024:
        return f"{n} bytes"
    value, units = n / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{value:.1f} {units[0]}"


class BuildError(InfrastructureError):
    """``docker build`` failed; ``step`` is the failing Dockerfile step and ``output`` what it printed."""

    def __init__(self, message: str, *, step: str | None = None, output: Sequence[str] = (),
                 log: Sequence[str] = ()) -> None:
        self.reason, self.step, self.output, self.log = message, step, list(output), list(log)
        text = f"docker build failed at {step}: {message}" if step else f"docker build failed: {message}"
        if self.output:
            text += "\n" + "\n".join(f"    {line}" for line in self.output[-40:])
        super().__init__(text)


class PushError(InfrastructureError):
    """``docker push`` failed, or the pushed digest could not be confirmed."""


class RegistryUnavailable(PushError):
    """The image registry did not answer, or kept answering 429 or 5xx, for the retry window: to a push, or to the
    check that a recorded image is still there."""


class RegistryAuthError(InfrastructureError):
    """The registry wants credentials this module does not have."""

    fix = "log in to the registry"


class DockerUnavailable(InfrastructureError):
    """The Docker engine does not answer: stopped, hung, or not where $DOCKER_HOST says."""

    fix = "start the Docker engine or fix $DOCKER_HOST"


class ImageUnpulled(InfrastructureError):
    """The Docker engine could not pull a driver's image: its registry refused it (manifest unknown, unauthorized),
    or did not answer within the pull's grace. Its words are the engine's, with what to do."""


class ImageUserUnknown(InfrastructureError):
    """An image's USER names a user (or group) that its own /etc/passwd (or /etc/group) does not have: the engine
    would refuse to start a container of it, and the secret files given to the image's user (a Docker driver's
    keys, a worker's task) have no owner to be given to. Not transient: the image must change."""

    transient = False

    @classmethod
    def lacking(cls, image: str, user: str, what: str) -> ImageUserUnknown:
        return cls(f"image {image} runs as USER {user}, but {what}: Docker would refuse to start it; give the "
                   "image a numeric USER (uid or uid:gid) or one its /etc/passwd and /etc/group name")

    def advice(self, resolution_id: str) -> str:
        return ""  # its words say what to do, with another image: another resolution, not this one continued


# -- workers that ended without an outcome (recorded on Runs by name) ---------------------------------------


class WorkerDied(BaseException):
    """A worker ended without writing an outcome; ``words`` say so plainly in the recorded message."""

    words = ""  # empty: "the worker exited with code N without a result"


class OOMKilled(WorkerDied):
    words = "the worker ran out of memory (OOMKilled): raise the func's memory="


class DeadlineExceeded(WorkerDied):
    words = "the worker exceeded its timeout"


class WorkerNeverStarted(WorkerDied):
    """A worker whose code never began: its Job or pod could not be made, scheduled or set up, or its image pulled.
    Recorded in the run's ``mro``, so its page and ``sematic-k8s logs`` say it never started (not "printed
    nothing"), and its time to fail is not shown as a run time."""


PULL_WORDS = ("the worker's image could not be pulled (can the nodes reach its registry? A private one needs the "
              "executor's image_pull_secrets)")


class ImagePullBackOff(WorkerNeverStarted):
    words = PULL_WORDS


class ErrImagePull(WorkerNeverStarted):
    words = PULL_WORDS


class Unschedulable(WorkerNeverStarted):
    words = "no node can run the worker (check cpu/memory/gpu requests and node selectors)"


class CreateContainerConfigError(WorkerNeverStarted):
    words = "the worker's container could not be set up (a missing Secret or ConfigMap?)"


class CreateContainerError(WorkerNeverStarted):
    words = "the worker's container could not be created"


class InvalidImageName(WorkerNeverStarted):
    words = "the worker's image name is invalid"


class ErrImageNeverPull(WorkerNeverStarted):
    words = "the worker's image is not on the node and may not be pulled"


class JobCreateFailed(WorkerNeverStarted):
    words = "the worker's Job could not be created"


class JobNameConflict(WorkerNeverStarted):
    words = "the worker's Job name is taken"


class InvalidJob(WorkerNeverStarted):
    words = "the worker's Job is invalid"


class PodDeleted(WorkerDied):
    words = "the worker's pod was deleted before it finished"


class ContainerRemoved(WorkerDied):
    words = "the worker's container was removed before it finished"


class JobDeleted(WorkerDied):
    words = "the worker's Job was deleted before it finished"


class BackoffLimitExceeded(WorkerDied):
    words = "the worker's Job failed"


class WorkerLost(WorkerDied, InfrastructureError):
    """The worker's pod lost its node (evicted, preempted, drained): not the func's doing."""


class Evicted(WorkerLost):
    words = "the worker's pod was evicted from its node"


class StorageUnreachable(WorkerLost):
    words = "the worker could not reach artifact storage (an infrastructure failure, not the func's)"


class OutcomeUnverified(WorkerLost):
    words = ("the worker's outcome document is not signed by its attempt's key (written or replaced by another "
             "writer of the artifact bucket): not adopted")


class NodeRejected(WorkerLost):
    words = ("the node refused the worker's pod (OutOfcpu, OutOfmemory, NodeAffinity, TaintToleration: usage, labels "
             "or a NoExecute taint the scheduler missed)")


# a pod's reason when its kubelet refused it at admission after the scheduler placed it (usage the scheduler did not
# know of, labels that changed, a NoExecute taint put on the node as the pod was bound to it, its node's own record
# unreadable): pkg/kubelet/lifecycle/predicate.go, "OutOf<resource>" (cpu, memory, pods, ephemeral-storage, an
# extended resource) or one of these. The one list: a pod so refused (phase Failed) is launched again
# (k8s.pods.pod_state), and recorded as NodeRejected once it no longer is (worker_death)
NODE_REJECTIONS = frozenset({"NodeAffinity", "NodeSelectorMismatching", "NodePorts", "InvalidNodeInfo",
                             "TaintToleration"})


def node_rejected(reason: str | None) -> bool:
    """Whether a pod's reason ``reason`` is its kubelet refusing it at admission (:data:`NODE_REJECTIONS`)."""
    return bool(reason) and (reason.startswith("OutOf") or reason in NODE_REJECTIONS)  # type: ignore[union-attr]


class FailedCreate(WorkerNeverStarted):
    words = "Kubernetes could not create the worker's pod"


class FailedCreatePodSandBox(WorkerNeverStarted):
    words = "the worker's pod could not start on its node (its sandbox could not be created)"


class FailedMount(WorkerNeverStarted):
    words = "a volume of the worker's pod could not be mounted"


WORKER_DEATHS: dict[str, type[WorkerDied]] = {
    **{c.__name__: c for c in (
        OOMKilled, DeadlineExceeded, ImagePullBackOff, ErrImagePull, Unschedulable, CreateContainerConfigError,
        CreateContainerError, InvalidImageName, ErrImageNeverPull, JobCreateFailed, JobNameConflict, InvalidJob,
        PodDeleted, ContainerRemoved, JobDeleted, BackoffLimitExceeded, Evicted, StorageUnreachable, FailedCreate,
        FailedCreatePodSandBox, FailedMount, OutcomeUnverified)},
    **dict.fromkeys(NODE_REJECTIONS, NodeRejected)}


def worker_death(reason: str) -> type[WorkerDied]:
    """The WorkerDied class of a worker that ended for ``reason`` (a pod's, a container's, the executor's own):
    :data:`WORKER_DEATHS`', NodeRejected for any kubelet refusal (:func:`node_rejected`), else WorkerDied."""
    return NodeRejected if node_rejected(reason) else WORKER_DEATHS.get(reason, WorkerDied)


class KubernetesForbidden(InfrastructureError):
    """The Kubernetes API keeps refusing this driver (403), or RBAC refused it a worker Job's create: its
    ServiceAccount lacks a Role. Not transient: a restarted driver would meet the same refusal."""

    transient = False
    fix = "give the driver's ServiceAccount what it lacks"


class KubernetesUnauthorized(InfrastructureError):
    """The Kubernetes API does not accept this driver's credentials (401): its ServiceAccount token expired or
    was revoked (the ServiceAccount deleted or re-created, a token Secret deleted).

    Transient, so a driver exits 75 and its Job starts a new pod: the kubelet mounts a freshly issued token in
    it. The running pod cannot get one sooner: the kubernetes client already re-reads its token file every
    minute, so a 401 means the kubelet's copy itself is refused, and the kubelet renews a token only as it nears
    its expiry, not on revocation. A 401 that persists uses up the driver Job's ``backoffLimit``."""

    fix = "if the driver's ServiceAccount was deleted, create it again"

    @classmethod
    def refusing(cls, doing: str, namespace: str, answer: str) -> KubernetesUnauthorized:
        """The error in plain words, for the API server's ``answer`` to this driver's attempt at ``doing``."""
        return cls(f"the Kubernetes API does not accept this driver's credentials to {doing} in namespace {namespace} "
                   f"(401: {answer}): its ServiceAccount token expired or was revoked; the driver restarts with a "
                   "fresh one")


class KubernetesUnanswered(InfrastructureError):
    """The Kubernetes API did not answer a call within its deadline, try after try (a network partition, a load
    balancer or proxy that stopped forwarding: a connection cut without a reset is never answered). An outage:
    transient, as a cut connection is (``k8s.client.retryable``)."""


class DriverJobDeleted(InfrastructureError):
    """The driver's own Job was deleted (or replaced by another of its name) while the driver ran: whoever deleted
    it meant it to stop, and a delete that left its pod running (``kubectl delete --cascade=orphan``, a client
    sending no propagationPolicy: batch/v1 orphans by default) leaves nothing else to stop it. It ends the
    resolution (its workers' Jobs deleted), deletes the pods of its Job, its own last (nothing else would), and
    exits 1. Not transient."""

    transient = False

    def advice(self, resolution_id: str) -> str:
        return f"to finish it after all, continue the resolution: {continue_how(resolution_id)}"
