"""Request and response bodies of the REST API (they document it in OpenAPI).

Records are the store's ``to_dict()`` forms: datetimes are ISO 8601 UTC strings ending in ``Z``.
Fields added to the records later pass through unchanged (``extra="allow"``).

Request bodies (and a store write's records) are parsed strictly (:data:`STRICT`): a boolean is JSON ``true`` or
``false``, an integer a JSON number without a fraction; ``"yes"``, ``1``, ``"5"`` or ``true`` where the other goes
is a 422 naming the field, never taken as what lax parsing would make of it. Times travel as ISO 8601 text.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator, with_config
from starlette.exceptions import HTTPException
from typing_extensions import NotRequired, TypedDict

from sematic_k8s import limits

HEX_ID = r"^[0-9a-f]{1,64}$"
SHA256 = r"^[0-9a-f]{64}$"
TAG = limits.TAG_PATTERN


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class RunOut(_Record):
    """One execution of one func call (listings leave out its func's source and give an excerpt of its error:
    ``RunDetail`` has them whole)."""

    id: str
    root_id: str
    parent_id: str | None = None
    func_path: str
    func_name: str
    state: str = Field(description="created, scheduled, running, resolved, failed or canceled")
    input_refs: dict[str, Any] = Field(default_factory=dict, description="param -> JSON template of its source")
    inputs: dict[str, str] = Field(default_factory=dict, description="param -> artifact id")
    output_ref: Any = Field(None, description="a composition's returned structure (JSON template)")
    output_id: str | None = None
    cache_key: str | None = None
    cached_from: str | None = None
    original_run_id: str | None = None
    source_hash: str | None = None
    source_file: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    error: dict[str, Any] | None = Field(
        None, description="{type, message, traceback, mro} as recorded; in listings an excerpt: {type, message "
                          "(at most 1,000 characters: its start and end with how much was cut), excerpt: true, "
                          "message_chars, traceback_chars (the whole lengths)}")
    attempts: int = 0
    notes: dict[str, Any] = Field(default_factory=dict)
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None


class RunDetail(RunOut):
    """One run whole, its func's source and its whole error included."""

    source_text: str | None = Field(None, description="its func's source as recorded (listings leave it out)")


class ResolutionOut(_Record):
    """One execution of a whole pipeline; its id is its root Run's id."""

    id: str
    root_func_path: str
    state: str = Field(description="created (its driver is starting), running, canceling, resolved, failed or canceled")
    settings: dict[str, Any] = Field(default_factory=dict)
    rerun_of: str | None = None
    image: str | None = None
    build_hash: str | None = None
    error: str | None = Field(None, description="why it failed; in listings at most 2,000 characters (its start and "
                                                "end with how much was cut): GET /resolutions/{id} has it whole")
    created_at: str | None = None
    ended_at: str | None = None
    heartbeat_at: str | None = Field(None, description="when its resolving process last said it was alive")
    labels_version: int = Field(0, description="changes of its tags and note so far: what a change of them names")
    driver_epoch: int = Field(0, description="takeovers by drivers so far: the epoch of its newest driver, which a "
                                             "write's `fence` names")


class ArtifactOut(_Record):
    """An immutable serialized value (sha256 content id) and its JSON summary."""

    id: str
    format: str
    type_name: str
    summary: Any = None
    size: int
    created_at: str | None = None


class Problem(_Record):
    """Every error's body (4xx and 5xx alike); some carry more fields beside ``detail`` (a rerun's ``command``)."""

    detail: str = Field(description="one line: what went wrong and what to do")
    errors: list[dict[str, Any]] | None = Field(None, description="a 422's problems one by one (loc, type, msg; "
                                                                  "never the input), the first 100")


class Page(BaseModel):
    limit: int
    offset: int


class ResolutionPage(Page):
    items: list[ResolutionOut]


class RunPage(Page):
    items: list[RunOut]


class RunList(BaseModel):
    items: list[RunOut]


class ArtifactList(BaseModel):
    items: list[ArtifactOut]


class Edge(BaseModel):
    """A value flowing from ``source``'s output (null: from outside) into ``destination``'s input
    ``param`` (param null: into the composition's output; destination null: out of the pipeline)."""

    source: str | None
    destination: str | None
    param: str | None
    artifact_id: str | None


class GraphOut(BaseModel):
    resolution: ResolutionOut
    runs: list[RunOut]
    edges: list[Edge]


# a request body's parsing: a JSON value of another type is refused, never converted (was: {"admin": "yes"} made an
# admin key, a write's "attempts": true was recorded as 1, "labels_version": "3" was taken as 3)
STRICT = ConfigDict(strict=True)


class _Request(BaseModel):
    """A request's body: a field it does not take is a 422 naming it, never dropped (``{"tag": ...}`` for ``add``,
    ``{"max_parallelism": 4}`` on a rerun were answered 200, and nothing asked for was done); each field of its
    type (:data:`STRICT`)."""

    model_config = ConfigDict(extra="forbid", **STRICT)


class RerunIn(_Request):
    rerun_from: str | None = Field(None, pattern=HEX_ID,
                                   description="a run of this resolution; null re-runs the whole resolution")
    mode: Literal["from", "continue"] = Field(
        "from", description="from: re-execute the run and what depends on it; continue (root only): re-execute "
                            "only what did not succeed")


class RerunOut(BaseModel):
    resolution_id: str = Field(description="the new resolution (its root run id)")
    rerun_of: str


class TokenIn(_Request):
    rerun_from: str | None = Field(None, pattern=HEX_ID,
                                   description="the run the resolution re-runs from: its resolution becomes readable")


class TokenOut(BaseModel):
    token: str = Field(description="the driver's credential (X-API-Key), shown only now")
    resolution_id: str
    reads_from: str | None
    expires_at: str = Field(description="when it stops working at the latest (it also does when the resolution "
                                        "ends)")


class TokensRevokedOut(BaseModel):
    resolution_id: str
    revoked: int = Field(description="how many of its tokens minted with the caller's key were revoked now")


class ApiKeyIn(_Request):
    name: str = Field(description="1 to 128 printable characters, no space at either end (checked where the key is "
                                  "made, as for `api-keys create`)")
    admin: bool = Field(False, description="an admin key: it may also manage keys")
    read_only: bool = Field(False, description="a read-only key: it may only read (GET); never with admin")


class ApiKeyOut(BaseModel):
    id: str
    name: str
    admin: bool
    read_only: bool
    role: Literal["admin", "user", "read-only"]
    created_at: str
    revoked_at: str | None = None


class WhoAmI(BaseModel):
    name: str = Field(description="the API key's name (local mode: 'local mode')")
    role: Literal["admin", "user", "read-only", "local"] = Field(
        description="what it may do: read-only keys only read (GET); local: anything (local mode, no keys)")
    actions_by: Literal["team", "owner"] = Field(
        "team", description="whose resolutions a user key may act on (--actions-by): team: any; owner: its own")


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="the key itself, shown only now (only its hash is stored)")


class Revoked(BaseModel):
    revoked: int = Field(description="how many keys were revoked by this request")


class CancelOut(BaseModel):
    resolution_id: str
    state: str


class Health(BaseModel):
    ok: bool


class ArtifactIds(BaseModel):
    model_config = STRICT

    ids: list[Annotated[str, Field(pattern=SHA256)]] = Field(max_length=10_000)  # content ids, never free text


class FormatIds(BaseModel):
    model_config = STRICT

    ids: list[Annotated[str, Field(pattern=SHA256)]] = Field(max_length=limits.FORMAT_IDS)


class ArtifactFormat(BaseModel):
    """What reading an artifact's value takes: its format and type, and its bytes when its record holds them."""

    id: str
    format: str
    type_name: str
    inline: str | None = Field(description=f"the bytes its record holds, in base64 (at most {limits.INLINE_BYTES:,})")
    inline_large: bool = Field(description=f"its record holds more than {limits.INLINE_BYTES:,} bytes, left out "
                                           "here: read it whole (POST /store/artifacts)")
    size: int = Field(description="its bytes' length as recorded (a cache hit's check of its stored bytes)")


class ArtifactFormats(BaseModel):
    items: list[ArtifactFormat]


class CacheKeys(BaseModel):
    model_config = STRICT

    keys: list[Annotated[str, Field(pattern=SHA256)]] = Field(max_length=1000)


UNTOLD = "(its id not told)"  # a skipped run's, in POST /store/cached (where an older client prints the run's id)


class CachedRuns(BaseModel):
    items: dict[str, RunOut]  # cache key -> the most recent resolved run with it (keys that hit)
    skipped: dict[str, str] = Field(default_factory=dict, description="cache key (one that missed) -> "
                                    f"{UNTOLD!r}: it has a resolved run, skipped as another API key's (one this "
                                    "server does not trust), whose id the asker is not told")


class CancelRequested(BaseModel):
    cancel_requested: bool


# -- a batch's records, as clients write them: each field of its type, within its column's size; no other field --

Id = Annotated[str, StringConstraints(pattern=HEX_ID)]
ArtifactKey = Annotated[str, StringConstraints(pattern=SHA256)]
Timestamp = str | None  # ISO 8601, parsed (and refused when it is not one) by batch_from_json
Created = str  # a record's created_at: a Timestamp, never null (its column is NOT NULL); a new record's is required
# a record's text, within its column's length. A NUL character in it is the store's to refuse (store.texts, for
# every write: a 422 naming the field, problems), as is one in a resolution's error its to escape (limits.text_field)
Text16 = Annotated[str, StringConstraints(max_length=16)]  # the lengths of the database's columns
Text64 = Annotated[str, StringConstraints(max_length=64)]
Text256 = Annotated[str, StringConstraints(max_length=256)]
Text512 = Annotated[str, StringConstraints(max_length=512)]
Note = Annotated[str, StringConstraints(max_length=limits.NOTE_CHARS)]
INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1  # the database's INTEGER and BIGINT
MAX_BATCH_RECORDS = 100_000  # records (and fences) in one write: more is a 413, which the HTTP store sends in parts
MAX_DEPTH = 128  # a value's levels of objects and arrays; JSON encoders stop at about 255 (orjson's, pydantic's)


def _shallow(value: Any) -> Any:
    """``value``, if its objects and arrays nest at most :data:`MAX_DEPTH` deep: a deeper one would be recorded
    and then fail every read that serializes it (its resolution's, and the listings holding it)."""
    level = [value]
    for _ in range(MAX_DEPTH):
        level = [c for v in level for c in (v.values() if isinstance(v, dict) else v if isinstance(v, list) else ())
                 if isinstance(c, (dict, list))]
        if not level:
            return value
    raise ValueError(f"nested more than {MAX_DEPTH} levels deep: flatten it")


Json = Annotated[Any, AfterValidator(_shallow)]  # a record's free-form JSON value
# an error as recorded: clients clip its message and traceback (sematic_k8s.error_records.clipped) far below this
MAX_ERROR_CHARS = 500_000


def _error_sized(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (a run's error), if its JSON text is at most :data:`MAX_ERROR_CHARS` long: every read that lists
    or shows it would carry a larger one whole."""
    if len(json.dumps(doc)) > MAX_ERROR_CHARS:
        raise ValueError(f"an error of more than {MAX_ERROR_CHARS} characters: clip its message and traceback "
                         "(sematic_k8s.error_records.error_info does)")
    return doc


ErrorDoc = Annotated[dict[str, Any], AfterValidator(_shallow), AfterValidator(_error_sized)]
ErrorText = Annotated[str, StringConstraints(max_length=MAX_ERROR_CHARS)]  # a resolution's error (NULs: store.texts)


def _source_sized(text: str) -> str:
    """``text`` (a func's source), if at most :data:`~sematic_k8s.limits.SOURCE_TEXT_CHARS` long."""
    if len(text) > limits.SOURCE_TEXT_CHARS:
        raise ValueError(f"a source of {len(text):,} characters: a run records at most {limits.SOURCE_TEXT_CHARS:,}; "
                         "clip it to its start and end (sematic_k8s.limits.source_excerpt does)")
    return text


def _path_sized(path: str) -> str:
    if len(path) > limits.PATH_CHARS:
        raise ValueError(f"a path of {len(path):,} characters: a run records at most {limits.PATH_CHARS:,} (the "
                         "longest path a file has); record the func's file path alone")
    return path


def _json_sized(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (settings, notes), if its JSON text is at most :data:`~sematic_k8s.limits.JSON_BYTES` long: every
    listing of its record carries it."""
    size = limits.json_size(doc)
    if size > limits.JSON_BYTES:
        raise ValueError(f"{size:,} bytes of JSON: a record keeps at most {limits.JSON_BYTES:,} here; keep large data "
                         "out of settings and notes (pass it to a func as an input: an artifact)")
    return doc


def _few_tags(tags: list[str] | None) -> list[str] | None:
    if tags is not None and len(tags) > limits.TAGS:
        raise ValueError(f"{len(tags):,} tags: a resolution has at most {limits.TAGS}; remove some")
    return tags


SourceText = Annotated[str, AfterValidator(_source_sized)]
SourcePath = Annotated[str, AfterValidator(_path_sized)]
SmallObject = Annotated[dict[str, Any], AfterValidator(_shallow), AfterValidator(_json_sized)]  # settings, notes
Tag = Annotated[str, StringConstraints(pattern=TAG)]

_LEAF_LENGTHS = {"run": range(1, 65), "artifact": range(64, 65)}  # lowercase hex: run ids, sha256 content ids
_KEYS = (str, int, float, bool, type(None))  # a dict's keys next to Futures (graph.to_json)
_TEMPLATE_FORM = ('a value\'s template: {"artifact": SHA256}, {"run": ID}, {"list": [...]}, {"tuple": [...]} or '
                  '{"dict": [[KEY, ...], ...]}')


def _template(doc: Any) -> Any:
    """``doc``, if it is a value's JSON template (:func:`sematic_k8s.graph.to_json`) at most :data:`MAX_DEPTH`
    deep, which the graph, the overview and rerun planning walk; else ValueError."""
    todo = [(doc, 1)]
    while todo:
        node, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"nested more than {MAX_DEPTH} levels deep: flatten it")
        if type(node) is not dict or len(node) != 1:
            raise ValueError(f"not {_TEMPLATE_FORM}")
        (kind, x), = node.items()
        if kind in _LEAF_LENGTHS:
            if type(x) is not str or len(x) not in _LEAF_LENGTHS[kind] or x.strip("0123456789abcdef"):
                raise ValueError(f"not {_TEMPLATE_FORM}")
        elif kind in ("list", "tuple") and type(x) is list:
            todo.extend((item, depth + 2) for item in x)
        elif kind == "dict" and type(x) is list and all(type(p) is list and len(p) == 2 and isinstance(p[0], _KEYS)
                                                         for p in x):
            todo.extend((p[1], depth + 3) for p in x)
        else:
            raise ValueError(f"not {_TEMPLATE_FORM}")
    return doc


Template = Annotated[Any, AfterValidator(_template)]


RECORD = ConfigDict(extra="forbid", **STRICT)  # a batch's record: no other field, each of its type
RunState = Literal["created", "scheduled", "running", "resolved", "failed", "canceled"]
ResolutionState = Literal["running", "canceling", "resolved", "failed", "canceled"]


@with_config(RECORD)
class _RunFields(TypedDict, total=False):
    parent_id: Id | None
    input_refs: dict[str, Template]
    inputs: dict[str, ArtifactKey]
    output_ref: Template | None
    output_id: ArtifactKey | None
    cache_key: ArtifactKey | None
    cached_from: Id | None
    original_run_id: Id | None
    source_hash: Text64 | None
    source_file: SourcePath | None
    source_text: SourceText | None
    settings: SmallObject
    error: ErrorDoc | None
    attempts: Annotated[int, Field(ge=0, le=INT32_MAX)]
    notes: SmallObject
    started_at: Timestamp
    ended_at: Timestamp


@with_config(RECORD)
class RunUpdate(_RunFields, total=False):
    """Fields of a recorded run to set (never its id or its resolution)."""

    func_path: Text512
    func_name: Text256
    state: RunState
    created_at: Created


@with_config(RECORD)
class NewRun(_RunFields):
    """A new run: the fields of ``RunOut``."""

    id: Id
    root_id: Id
    func_path: Text512
    func_name: Text256
    state: RunState
    created_at: Created


@with_config(RECORD)
class _ResolutionFields(TypedDict, total=False):
    settings: SmallObject
    rerun_of: Id | None
    image: Text512 | None
    build_hash: Text64 | None
    error: ErrorText | None
    ended_at: Timestamp
    tags: Annotated[list[Tag] | None, AfterValidator(_few_tags)]
    note: Note | None
    heartbeat_at: Timestamp


@with_config(RECORD)
class ResolutionUpdate(_ResolutionFields, total=False):
    """Fields of a recorded resolution to set (never its id)."""

    root_func_path: Text512
    state: ResolutionState
    created_at: Created


@with_config(RECORD)
class NewResolution(_ResolutionFields):
    """A new resolution: the fields of ``ResolutionOut``."""

    id: Id
    root_func_path: Text512
    state: ResolutionState
    created_at: Created


@with_config(RECORD)
class NewArtifact(TypedDict):
    """An artifact's record; ``inline``: its bytes in base64, checked against its id."""

    id: ArtifactKey
    format: Text16
    type_name: Text512
    summary: NotRequired[Json]
    size: Annotated[int, Field(ge=0, le=INT64_MAX)]
    created_at: Created
    inline: NotRequired[str | None]


class BatchIn(BaseModel):
    """Writes applied in one transaction (sematic_k8s.store.records.Batch as JSON): new records keyed by their
    id, and the fields to set on recorded ones."""

    model_config = STRICT

    new_runs: dict[Id, NewRun] = Field(default_factory=dict)
    run_updates: dict[Id, RunUpdate] = Field(default_factory=dict)
    new_resolutions: list[NewResolution] = Field(default_factory=list)
    resolution_updates: dict[Id, ResolutionUpdate] = Field(default_factory=dict)
    artifacts: dict[ArtifactKey, NewArtifact] = Field(default_factory=dict)
    fence: dict[Id, int] = Field(default_factory=dict, description="resolution id -> the driver epoch its writer "
                                 "took it over with: refused (409) if another driver took it over since")
    sequence: dict[Id, Annotated[int, Field(ge=1, le=INT64_MAX)]] = Field(
        default_factory=dict, description="resolution id (one the batch fences) -> this request's number among its "
        "driver's writes in that epoch: a request whose number is not above the last one applied was applied "
        "already (a retry's first attempt landing late), and is answered as written without changing anything")

    @model_validator(mode="before")
    @classmethod
    def _not_too_many(cls, doc: Any) -> Any:
        """413 (before any record is validated) for more than :data:`MAX_BATCH_RECORDS` records, as for a body
        over the byte cap: a million tiny ones in a few MB cost the server gigabytes and seconds to take in."""
        if isinstance(doc, dict):
            n = sum(len(v) for v in doc.values() if isinstance(v, (dict, list)))
            if n > MAX_BATCH_RECORDS:
                raise HTTPException(413, f"a batch of {n} records: this server takes at most {MAX_BATCH_RECORDS} in "
                                         "one request; send it in parts (the HTTP store does so by itself)")
        return doc

    @model_validator(mode="before")
    @classmethod
    def _known_sections(cls, doc: Any) -> Any:
        """422 naming the sections this server does not know (a newer client's): dropped, their records would be
        lost while the write was answered as done."""
        if isinstance(doc, dict) and (unknown := [k for k in doc if k not in cls.model_fields]):
            names = ", ".join(repr(str(k)[:64]) for k in unknown[:5]) + (
                f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise HTTPException(422, f"body section(s) {names}: not part of a store write this server knows, so "
                                     "nothing was recorded: upgrade the server, or use a client of its version")
        return doc


class Written(BaseModel):
    ok: bool
    canceled: list[str] | None = Field(None, description="the resolutions whose failed end the batch holds and that "
                                                         "were recorded canceled instead (a cancel accepted before "
                                                         "it landed wins); absent when none")


class TakenOver(BaseModel):
    driver_epoch: int = Field(description="the epoch the calling driver now holds; its writes carry it in `fence`")


# -- the dashboard's views: pipelines index, labels, a resolution's overview -----------------------------


class ResolutionWithCounts(ResolutionOut):
    run_counts: dict[str, int] | None = Field(None, description="runs by state (for resolutions not ended)")


class PipelineGroup(BaseModel):
    """The resolutions of one root func that match the filters."""

    root_func_path: str
    count: int
    latest: str | None = Field(description="when the newest one was created")
    states: dict[str, int] = Field(description="resolutions by state")
    resolutions: list[ResolutionWithCounts] = Field(description="newest first, a page of them")


class PipelinesOut(BaseModel):
    total: int = Field(description="root funcs matching the filters")
    limit: int
    offset: int
    funcs: list[str] = Field(description="the root funcs that have a resolution, sorted, the first 1,000 (for a "
                                         "filter)")
    funcs_total: int = Field(description="how many root funcs have a resolution")
    groups: list[PipelineGroup]


class LabelsIn(_Request):
    add: list[str] = Field(default_factory=list, max_length=limits.TAGS, description="tags to add")
    remove: list[str] = Field(default_factory=list, max_length=limits.TAGS, description="tags to remove")
    note: Note | None = Field(None, description=f'replace the note ("" clears it; at most {limits.NOTE_CHARS:,} '
                                                'characters, no NUL); null: keep')
    labels_version: int | None = Field(None, ge=0, le=INT64_MAX, description=(
        "the resolution's labels_version this change was made to (as read): 409, and nothing changed, when its "
        "labels changed since (someone else's change, or this is a late copy of an older one) and this change is "
        "not already in effect; null: make it whatever they are"))

    @model_validator(mode="before")
    @classmethod
    def _no_note_was(cls, data: Any) -> Any:
        """An edit conditioned on the older ``note_was`` (clients before labels_version) is refused, not made
        unconditionally."""
        if isinstance(data, dict) and "note_was" in data:
            raise ValueError("note_was is no longer taken: send labels_version, the resolution's labels_version as "
                             "read (reload the dashboard, or upgrade the sematic-k8s client)")
        return data

    def model_post_init(self, _: Any) -> None:
        import re

        for tag in [*self.add, *self.remove]:
            if not re.match(TAG, tag):
                raise ValueError(f"bad tag {tag!r}: 1-64 letters, digits and _ . : = / - (starting with a letter "
                                 "or digit)")
        if both := sorted(set(self.add) & set(self.remove)):  # was: removed, the add dropped unsaid
            raise ValueError(f"tag {both[0]!r} is both added and removed: send it in add or in remove")


class CountsOut(BaseModel):
    resolution_id: str
    state: str
    counts: dict[str, int] = Field(description="runs by state")
    total: int
    waiting: dict[str, str] = Field(default_factory=dict, description="running runs whose worker has not started "
                                    "(at most 20): run id -> what it waits for (capacity, quota)")
    driver_epoch: int = Field(0, description="the epoch of its newest driver (a follower recording that driver's "
                                             "death fences that record with it)")


class OverviewOut(BaseModel):
    """A resolution's graph at a glance: runs, and groups of sibling runs of one func (fan-outs)."""

    resolution: ResolutionOut
    nodes: list[dict[str, Any]] = Field(description='kind "run" or "group" (count, states, total, offset, shown)')
    edges: list[dict[str, Any]] = Field(description="source and destination node ids, and the params fed")
    counts: dict[str, int] = Field(description="all runs by state")
    total_runs: int
    page: int = Field(description="runs of an expanded group shown at a time")
    waiting: dict[str, str] = Field(default_factory=dict, description="running runs whose worker has not started "
                                    "(at most 20): run id -> what it waits for (capacity, quota), as in /counts")
    actions_refused: str | None = Field(None, description="why the caller's key may not cancel, re-run, continue, "
                                        "label or note this resolution (a server started with --actions-by owner: "
                                        "another key recorded it); null when it may")
