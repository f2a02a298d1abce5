"""What the store records: Resolutions, Runs and Artifacts, as plain dataclasses."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# a Resolution the server's rerun action recorded (claimed) before starting its driver, until that driver records it
# (here, not in tables: drivers read it without importing SQLAlchemy)
CLAIMED = "created"
ENDED_STATES = ("resolved", "failed", "canceled")  # a Resolution's final states (tables.ENDED, without SQLAlchemy)

_now, _combine, _UTC = dt.datetime.now, dt.datetime.combine, dt.timezone.utc


def utcnow() -> dt.datetime:
    """The time now in UTC, naive (as the store records times). ``combine`` drops the zone: the same value as
    ``.replace(tzinfo=None)``, about 1 us less a call (planning makes two per run: its record's and an input's)."""
    now = _now(_UTC)
    return _combine(now, now.time())


@dataclass(slots=True)
class RunRecord:
    """One execution of one func call."""

    id: str
    root_id: str
    parent_id: str | None
    func_path: str
    func_name: str
    state: str
    input_refs: dict[str, Any] = field(default_factory=dict)  # param -> JSON template (graph.py)
    inputs: dict[str, str] = field(default_factory=dict)  # param -> artifact id, once known
    output_ref: Any = None  # a composition's returned structure (JSON template)
    output_id: str | None = None  # artifact id of the output
    cache_key: str | None = None
    cached_from: str | None = None  # the run whose output a cache hit reused
    original_run_id: str | None = None  # the run a rerun cloned this one from
    source_hash: str | None = None
    source_file: str | None = None
    source_text: str | None = None  # the func's source code, as recorded when the run was created
    settings: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None  # {"type", "message", "traceback", "mro"}; listed: error_records.error_excerpt
    attempts: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None

    def to_dict(self, leave_out: Collection[str] = ()) -> dict[str, Any]:
        """The record's JSON form, without the fields named in ``leave_out``."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in leave_out}

    def never_started(self) -> bool:
        """Whether its code never began: :func:`never_started`."""
        return never_started(self.started_at, self.attempts, self.notes, error_kinds(self.error))

    def listed(self) -> dict[str, Any]:
        """:meth:`to_dict` as listings give it: without :data:`UNLISTED` (the run's own read has them; a listing's
        reads also cut its ``error`` to an excerpt, ``sematic_k8s.error_records.error_excerpt``)."""
        return self.to_dict(UNLISTED)


NEVER_STARTED_KIND = "WorkerNeverStarted"  # errors.WorkerNeverStarted, as a run's recorded error names it in its mro


def never_started(started_at: object, attempts: int | None, notes: dict[str, Any] | None,
                  error_kinds: Collection[str] = ()) -> bool:
    """Whether a run's code never began: never handed to an executor (no ``started_at``, which is when it was
    handed over, not when its code began), or its first attempt waits (or waited, canceled meanwhile) for its worker
    to start (``notes.waiting``), or failed as a worker that never started (``WorkerNeverStarted`` among its error's
    classes: an image not pulled, a pod not scheduled or made). The one rule the CLI and the server's overview
    follow; the dashboard's ``started.js`` is its copy in JavaScript."""
    if started_at is None:
        return True
    waiting = (notes or {}).get("waiting")
    first = (attempts if attempts is not None else 1) <= 1
    return first and ((isinstance(waiting, str) and bool(waiting)) or NEVER_STARTED_KIND in error_kinds)


def error_kinds(error: dict[str, Any] | None) -> list[str]:
    """The class names a recorded error's ``mro`` lists (none for a record without one)."""
    mro = (error or {}).get("mro") if isinstance(error, dict) else None
    return [k for k in mro if isinstance(k, str)] if isinstance(mro, list) else []


IN_RESOLVER_HOME = "home"  # a resolution's ``settings.storage``: its artifacts and logs are in its resolver's home


def in_resolver_home(res: ResolutionRecord | None) -> bool:
    """Whether a resolution records that its artifacts and logs stay in the home of the LocalResolver that resolved
    it, on the machine where it ran (it recorded through a server): a reader elsewhere (that server, a CLI through
    it) cannot reach them, and a log it does not find there says nothing of what the run printed. The record names
    no path: nothing is read from it."""
    return res is not None and (res.settings or {}).get("storage") == IN_RESOLVER_HOME


def claim_waiting(res: ResolutionRecord) -> str | None:
    """What the launch of a resolution the server claimed (a rerun, not yet recorded by its driver) waits for, as it
    noted it (``settings.waiting``: its driver's image, while its registry does not answer); None for any other.
    The dashboard's ``resolution.js`` reads it the same way."""
    waiting = (res.settings or {}).get("waiting") if res.state == CLAIMED else None
    return waiting if isinstance(waiting, str) and waiting else None


_CANCEL_ASKED = re.compile(r"ResolutionCanceled: resolution \S+ was canceled(?:: (.*))?", re.S)


def canceled_notice(error: str | None, when: str | None) -> str:
    """A canceled resolution's end as a notice, not an error: when (``when``, its end as the reader shows times; None:
    unknown), and how, as its recorded ``error`` says it: a cancel asked of it (with the func body it interrupted),
    its resolving process interrupted (Ctrl-C), the cancel landing after its resolver went silent. Who asked is not
    recorded. The one rule the CLI follows; the dashboard's ``started.js`` (``resolutionCanceledText``) is its copy
    in JavaScript."""
    at = f" at {when}" if when else ""
    text = (error or "").strip()
    asked = _CANCEL_ASKED.fullmatch(text)
    if not text or (asked and not asked.group(1)):
        return f"Canceled{at}, as asked (sematic-k8s cancel, the dashboard or the API)."
    if asked:
        return f"Canceled{at}, as asked: {asked.group(1)}."
    if re.match(r"KeyboardInterrupt\b", text):
        return f"Canceled{at}: its resolving process was interrupted (Ctrl-C)."
    return f"Canceled{at}: {text}"


# what listings of runs leave out (reads leave it unread: None): a func's source may be long, and a page of runs holds
# hundreds (often of one func); the run's own read has it (``GET /runs/{id}``, ``sematic-k8s runs show``)
UNLISTED = frozenset({"source_text"})


# an artifact's format, type name, inline bytes and recorded size (None: not known, an older server's answer): what
# reading its value takes, and the size a cache hit's or a rerun's check of its stored bytes compares
# (storage.base.unmatched)
Formats = tuple[str, str, bytes | None, int | None]


class RunShape(NamedTuple):
    """What planning a rerun reads of each recorded run (see ``SqlStore.run_shapes``): not a whole record."""

    id: str
    root_id: str
    parent_id: str | None
    state: str
    input_refs: dict[str, Any]
    output_ref: Any
    output_id: str | None
    output: Formats | None = None  # its output artifact's (format, type name, inline bytes, size)


@dataclass(slots=True)
class ResolutionRecord:
    """One execution of a whole pipeline; its id is its root Run's id."""

    id: str
    root_func_path: str
    state: str
    settings: dict[str, Any] = field(default_factory=dict)
    rerun_of: str | None = None
    image: str | None = None
    build_hash: str | None = None
    error: str | None = None
    created_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    tags: list[str] | None = None  # set by people (API, CLI, dashboard), never by the resolution loop
    note: str | None = None
    heartbeat_at: dt.datetime | None = None  # when its resolving process last said it was alive
    labels_version: int = 0  # changes of its tags and note so far: what a change of them names (label_resolution)
    driver_epoch: int = 0  # takeovers so far (SqlStore.take_over): the epoch of its newest driver, which fences writes

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(slots=True)
class ArtifactRecord:
    """An immutable serialized value; ``id`` is its sha256 content id. A small one keeps its bytes ``inline``
    (in its record, not a file of its own in artifact storage); ``to_dict`` gives them in base64."""

    id: str
    format: str
    type_name: str
    summary: Any
    size: int
    created_at: dt.datetime | None = None
    inline: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    return v.isoformat() + "Z" if isinstance(v, dt.datetime) else v


class CacheHit(NamedTuple):
    """What a cache look-up gives of the run a hit reuses (``SqlStore.find_hits``)."""

    id: str
    output_id: str | None
    source_hash: str | None


class CachedRun(NamedTuple):
    """A new Run that is a cache hit (resolved without executing, pointing at the Run it reused in
    ``cached_from``), whole: what :meth:`Batch.add_hit` takes. A SQL store writes a batch's hits together
    without per-field processing; elsewhere (the HTTP store) each is a new run as :meth:`fields` gives it."""

    id: str
    root_id: str
    parent_id: str | None
    func_path: str
    func_name: str
    source_file: str | None
    source_text: str | None
    source_hash: str | None
    settings: dict[str, Any]
    input_refs: dict[str, Any]
    inputs: dict[str, str]
    output_id: str
    cache_key: str
    cached_from: str
    source_changed: bool  # its notes: {"cache": {"hit": cached_from, "source_changed": ...}}
    original_run_id: str | None
    created_at: dt.datetime | None
    ended_at: dt.datetime  # also its started_at: a hit starts and ends at once

    def fields(self) -> dict[str, Any]:
        """The run's fields, as :meth:`Batch.add_run` records a new run."""
        doc = self._asdict()
        changed = doc.pop("source_changed")
        doc.update(state="resolved", started_at=self.ended_at,
                   notes={"cache": {"hit": self.cached_from, "source_changed": changed}})
        return doc


LABELS = ("tags", "note")  # a resolution's fields that are people's (label_resolution), never a batch's to set
STORE_KEPT = ("labels_version", "driver_epoch")  # a resolution's fields the store alone sets


def check_resolution_updates(resolution_updates: dict[str, dict[str, Any]]) -> None:
    """ValueError for a batch that sets a resolution's tags or note, or what the store alone keeps of it
    (``STORE_KEPT``). Tags and note are people's, changed only through ``label_resolution`` (which counts them in
    ``labels_version``, so a late change undoes nothing newer); a writer setting them beside it would overwrite a
    change unseen. A batch setting ``driver_epoch`` would undo a takeover (the replaced driver's writes let in
    again), one setting ``labels_version`` a person's change. The one rule the HTTP layer and the store apply."""
    for res_id, fields in resolution_updates.items():
        set_here = [f for f in LABELS if f in fields]
        if set_here:
            raise ValueError(f"the batch sets the {' and '.join(set_here)} of resolution {res_id}: a resolution's tags "
                             "and note are people's, changed with its labels (POST /api/v1/resolutions/<id>/labels, "
                             "`sematic-k8s resolutions tag|note`); leave them out of the batch")
        kept = [f for f in STORE_KEPT if f in fields]
        if kept:
            raise ValueError(f"the batch sets the {' and '.join(kept)} of resolution {res_id}: the store alone sets a "
                             "resolution's labels_version (changes of its tags and note) and driver_epoch (takeovers "
                             f"by drivers); leave {'them' if len(kept) > 1 else 'it'} out of the batch")


def check_sequence(fence: dict[str, int], sequence: dict[str, int]) -> None:
    """ValueError for a batch numbering a resolution it does not fence (``Batch.sequence``: a write is numbered
    within the driver epoch it carries): the one rule the HTTP layer and the store both apply."""
    for res_id in sequence:
        if res_id not in fence:
            raise ValueError(f"resolution {res_id} has a sequence but no fence: a write is numbered within its driver "
                             "epoch: give the epoch in the batch's fence too")


@dataclass
class Batch:
    """Writes that land together in one transaction.

    ``runs`` maps run id -> fields: a full RunRecord dict for a new run, changed fields otherwise.
    ``clones`` (SQL stores only, see ``SqlStore.bulk_clones``): new run id -> a run of a rerun reused as it was
    recorded, copied inside the database from its ``original_run_id`` with the fields given here.
    ``hits``: new run id -> a new run that is a cache hit, whole (:class:`CachedRun`).
    ``fence``: resolution id -> the driver epoch its writer took it over with (``SqlStore.take_over``): the store
    refuses the whole batch when another driver took it over since (``DriverReplaced``). Checked, not written.
    ``sequence``: resolution id -> this write's number among those its driver sent in that epoch (the HTTP store
    numbers each request it sends for a fenced batch, see ``HttpStore.write``): the store applies a batch whose
    number is not above the last one it applied as already applied (nothing of it is written again: a retried
    request's first attempt landing after later writes sets nothing back), and records the number otherwise.
    Only for resolutions the batch fences.
    ``in_order``: False for a fenced batch that is not one of its driver's own writes (a CloudResolver recording that
    the driver it followed died, fenced with the epoch it saw): checked against the fence, never numbered.
    A batch never sets a resolution's tags or note, nor what the store alone keeps of it
    (:func:`check_resolution_updates`).
    """

    new_runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_resolutions: list[dict[str, Any]] = field(default_factory=list)
    resolution_updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    clones: dict[str, dict[str, Any]] = field(default_factory=dict)
    hits: dict[str, CachedRun] = field(default_factory=dict)
    fence: dict[str, int] = field(default_factory=dict)
    sequence: dict[str, int] = field(default_factory=dict)
    in_order: bool = True

    def add_run(self, run: RunRecord) -> None:
        """A new run: its fields, without those at their defaults (``RUN_DEFAULTS``, filled in when written:
        a batch of 100,000 new runs stays small)."""
        fields = {}
        for name in _RUN_NAMES:
            v = getattr(run, name)
            if v is None or (v == {} and type(v) is dict) or (name == "attempts" and v == 0):
                continue
            fields[name] = v
        self.new_runs[run.id] = fields

    def clone_run(self, run_id: str, original_run_id: str, **fields: Any) -> None:
        """A reused run: ``original_run_id``'s record copied as resolved, with ``fields`` (root_id, parent_id,
        input_refs, output_ref, created_at) and ``notes.reused_from``; refs given as None are the original's."""
        self.clones[run_id] = {"id": run_id, "original_run_id": original_run_id, **fields}

    def add_hit(self, run: CachedRun) -> None:
        """A new run that is a cache hit, in place of its record as planned (``new_runs``), if any."""
        self.new_runs.pop(run.id, None)
        self.hits[run.id] = run

    def add_resolution(self, res: ResolutionRecord) -> None:
        """A new resolution's record (its labels' version and driver epoch are the store's: 0 in the store)."""
        self.new_resolutions.append({f.name: getattr(res, f.name) for f in dataclasses.fields(res)
                                     if f.name not in STORE_KEPT})

    def update_run(self, run_id: str, **fields: Any) -> None:
        target = self.new_runs.get(run_id)
        if target is None:
            target = self.run_updates.setdefault(run_id, {})
        target.update(fields)

    def beats_only(self) -> bool:
        """Whether the batch records heartbeats and nothing else: such a write commutes with every other one (the
        store keeps the latest heartbeat), so it needs no place in its writer's order (``sequence``)."""
        return (not (self.new_runs or self.run_updates or self.new_resolutions or self.artifacts or self.clones
                     or self.hits) and all(fields.keys() == {"heartbeat_at"}
                                           for fields in self.resolution_updates.values()))

    def __bool__(self) -> bool:
        return bool(self.new_runs or self.run_updates or self.new_resolutions
                    or self.resolution_updates or self.artifacts or self.clones or self.hits)


_RUN_NAMES = tuple(f.name for f in dataclasses.fields(RunRecord))
# what a new run's fields left out of a batch stand for (every RunRecord field that may be None, {} or 0)
RUN_DEFAULTS: dict[str, Any] = {name: None for name in _RUN_NAMES} | {
    "input_refs": {}, "inputs": {}, "settings": {}, "notes": {}, "attempts": 0}
