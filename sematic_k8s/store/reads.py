"""The SQL store's ordinary reads: records by id, lists and counts, and the lighter views a rerun's planner and a
value's reader take. Each is a function of a connection and the tables it reads, which
:class:`~sematic_k8s.store.sql.SqlStore` calls on a connection of its own. The reads of resolutions also select
whether each is silent (the test :func:`~sematic_k8s.store.liveness.silent` gives), which SqlStore marks dead before
it returns them (:mod:`~sematic_k8s.store.liveness`). Cache look-ups are in :mod:`~sematic_k8s.store.cache_reads`."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from typing import Any, TypeVar

import sqlalchemy as sa

from sematic_k8s.error_records import LISTED_RESOLUTION_ERROR_CHARS, clipped, clipped_ends, error_excerpt
from sematic_k8s.store.json_columns import json_value
from sematic_k8s.store.records import UNLISTED, ArtifactRecord, Formats, ResolutionRecord, RunRecord, RunShape
from sematic_k8s.store.tables import CANCELING

R = TypeVar("R")
FormatRow = tuple[str, str, str, bytes | None, bool, int]  # an artifact's id, format, type name, inline bytes (those
# within a bound, :func:`format_rows`), whether it holds inline bytes over the bound, left out, and its size
IDS_PER_QUERY = 500  # ids a read of records by id asks for in one statement

RUN_FIELDS = [f.name for f in dataclasses.fields(RunRecord)]
LISTED_RUN_FIELDS = [f for f in RUN_FIELDS if f not in UNLISTED]  # what listings read of a run
LISTED_BATCH = 100  # rows a listing of runs reads at a time: a run's error may be 500 KB (PostgreSQL: from a cursor)
LISTED_ERROR_CHARS_COLUMN = "sk_error_chars"  # the whole length of a listed resolution's error
RES_FIELDS = [f.name for f in dataclasses.fields(ResolutionRecord)]
ART_FIELDS = [f.name for f in dataclasses.fields(ArtifactRecord)]
_REF_FIELDS = ("input_refs", "output_ref")
VALUES_ONLY = {"artifact": ""}  # run_shapes' stand-in for an output template that references no run


def select_records(conn: sa.Connection, stmt: sa.Select, cls: type[R], fields: list[str]) -> list[R]:
    """The rows of ``stmt`` as records of ``cls`` (its ``fields``)."""
    return [cls(**{f: row[f] for f in fields}) for row in conn.execute(stmt).mappings()]


def first_record(conn: sa.Connection, stmt: sa.Select, cls: type[R], fields: list[str]) -> R | None:
    """The first row of ``stmt`` as a record of ``cls`` (None when there is none)."""
    rows = select_records(conn, stmt.limit(1), cls, fields)
    return rows[0] if rows else None


def listed_runs(conn: sa.Connection, stmt: sa.Select) -> list[RunRecord]:
    """The rows of ``stmt`` (:data:`LISTED_RUN_FIELDS`) as listings give them: each run's error cut to its
    :func:`error_excerpt` as it is read, :data:`LISTED_BATCH` rows at a time, so a resolution of
    thousands of runs that failed with long errors is never held whole (on PostgreSQL a server-side cursor; the
    driver would otherwise fetch every row first). Cut here, not in SQL: extracting a JSON column's fields is no
    faster on SQLite, which parses the JSON either way, and was twice as slow on PostgreSQL (docs/FAULTS.md)."""
    out = []
    for row in conn.execute(stmt.execution_options(stream_results=True, yield_per=LISTED_BATCH)).mappings():
        doc = {f: row[f] for f in LISTED_RUN_FIELDS}
        doc["error"] = error_excerpt(doc["error"])
        out.append(RunRecord(**doc))
    return out


def listed_resolution_columns(t: sa.FromClause) -> list[sa.ColumnElement[Any]]:
    """A resolution's columns as listings read them (:func:`listed_resolutions`): its error (text) cut in SQL to
    its first and last :data:`~sematic_k8s.error_records.LISTED_RESOLUTION_ERROR_CHARS` characters, with its length."""
    most, chars = LISTED_RESOLUTION_ERROR_CHARS, sa.func.length(t.c.error)
    ends = sa.case((chars <= most, t.c.error), else_=sa.func.substr(t.c.error, 1, most, type_=sa.Text)
                   + sa.func.substr(t.c.error, chars - most + 1, type_=sa.Text))
    return [ends.label(f) if f == "error" else t.c[f] for f in RES_FIELDS] + [chars.label(LISTED_ERROR_CHARS_COLUMN)]


def resolution_from_row(row: sa.RowMapping) -> ResolutionRecord:
    """A row of resolutions as a record: whole, or as listings give it when it was read with
    :func:`listed_resolution_columns`: its error :func:`~sematic_k8s.error_records.clipped` to
    :data:`LISTED_RESOLUTION_ERROR_CHARS` characters (``GET /resolutions/{id}`` has it whole)."""
    doc = {f: row[f] for f in RES_FIELDS}
    if LISTED_ERROR_CHARS_COLUMN in row and doc["error"] is not None:
        most = LISTED_RESOLUTION_ERROR_CHARS  # clipped again: SQLite's length() stops at a NUL character
        doc["error"] = clipped(clipped_ends(doc["error"], row[LISTED_ERROR_CHARS_COLUMN], most), most)
    return ResolutionRecord(**doc)


def listed_resolutions(conn: sa.Connection, stmt: sa.Select) -> list[ResolutionRecord]:
    """The rows of ``stmt`` (:func:`listed_resolution_columns`) as listings give them (:func:`resolution_from_row`)."""
    return [resolution_from_row(row) for row in conn.execute(stmt).mappings()]


# -- runs ------------------------------------------------------------------------------------------

def get_run(conn: sa.Connection, runs: sa.Table, run_id: str) -> RunRecord | None:
    return first_record(conn, sa.select(runs).where(runs.c.id == run_id), RunRecord, RUN_FIELDS)


def _starting(column: sa.ColumnElement[str], prefix: str) -> tuple[sa.ColumnElement[bool], ...]:
    """Ids starting with ``prefix``: a range on the primary key (ids are lowercase hex), then the exact test."""
    return column >= prefix, column < prefix + "g", column.startswith(prefix, autoescape=True)


def list_runs(conn: sa.Connection, runs: sa.Table, *, root_id: str | None = None, state: str | None = None,
              func: str | None = None, limit: int = 100, offset: int = 0, id_prefix: str | None = None,
              newest_first: bool = False) -> list[RunRecord]:
    """Runs in creation order (``newest_first``: the reverse), filtered by resolution, state, func (name or
    module:qualname) and the start of their id; listed (:func:`listed_runs`: their source left unread, their errors
    excerpts)."""
    t = runs
    stmt = sa.select(*[t.c[f] for f in LISTED_RUN_FIELDS])
    if root_id is not None:
        stmt = stmt.where(t.c.root_id == root_id)
    if state is not None:
        stmt = stmt.where(t.c.state == state)
    if func is not None:
        stmt = stmt.where(sa.or_(t.c.func_name == func, t.c.func_path == func))
    if id_prefix is not None:
        stmt = stmt.where(*_starting(t.c.id, id_prefix))
    order = (t.c.created_at.desc(), t.c.id.desc()) if newest_first else (t.c.created_at, t.c.id)
    return listed_runs(conn, stmt.order_by(*order).limit(limit).offset(offset))


def run_counts_of(conn: sa.Connection, runs: sa.Table, root_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """``{root_id: {state: runs}}`` for these resolutions (one grouped query per 500 of them)."""
    ids = list(dict.fromkeys(root_ids))
    out: dict[str, dict[str, int]] = {i: {} for i in ids}
    t = runs
    for i in range(0, len(ids), 500):
        stmt = (sa.select(t.c.root_id, t.c.state, sa.func.count())
                .where(t.c.root_id.in_(ids[i:i + 500])).group_by(t.c.root_id, t.c.state))
        for root, state, n in conn.execute(stmt):
            out[root][state] = n
    return out


def waiting_runs(conn: sa.Connection, runs: sa.Table, root_id: str, limit: int = 20) -> dict[str, str]:
    """Up to ``limit`` running runs of a resolution whose worker has not started: run id -> what it waits for
    (their ``notes.waiting``: capacity, quota)."""
    t = runs
    stmt = (sa.select(t.c.id, t.c.notes).where(t.c.root_id == root_id, t.c.state == "running",
                                               sa.cast(t.c.notes, sa.Text).like('%"waiting"%')).limit(limit))
    rows = conn.execute(stmt).all()
    return {run_id: notes["waiting"] for run_id, notes in rows
            if isinstance(notes, dict) and isinstance(notes.get("waiting"), str)}


def runs_of_root(conn: sa.Connection, runs: sa.Table, root_id: str, *, listed: bool = False) -> list[RunRecord]:
    """A resolution's runs, whole (``listed``: as listings give them, :func:`listed_runs`)."""
    if listed:
        return listed_runs(conn, sa.select(*[runs.c[f] for f in LISTED_RUN_FIELDS]).where(runs.c.root_id == root_id))
    return select_records(conn, sa.select(runs).where(runs.c.root_id == root_id), RunRecord, RUN_FIELDS)


def run_ids_of_root(conn: sa.Connection, runs: sa.Table, root_id: str) -> list[str]:
    """The ids of a resolution's runs, in order (a streamed read of them whole reads them by these:
    :meth:`~sematic_k8s.store.sql.SqlStore.iter_runs_of_root`)."""
    return list(conn.execute(sa.select(runs.c.id).where(runs.c.root_id == root_id).order_by(runs.c.id)).scalars())


def run_shapes(conn: sa.Connection, runs: sa.Table, artifacts: sa.Table, root_id: str) -> list[RunShape]:
    """A resolution's runs with what planning a rerun needs (ids, state, refs, output, and the output artifact
    as :func:`artifact_formats` gives it), not the rest (func, source, settings, notes, errors):
    :func:`runs_of_root`, much lighter, in one query. Refs that reference no run (only values) are not decoded:
    ``input_refs`` is then ``{}`` and a non-null ``output_ref`` is :data:`VALUES_ONLY` (read the run whole for
    them)."""
    t, a = runs, artifacts
    cols = [t.c[f] if f not in _REF_FIELDS else sa.cast(t.c[f], sa.Text) for f in RunShape._fields[:-1]]
    stmt = (sa.select(*cols, a.c.format, a.c.type_name, a.c.inline, a.c.size)
            .select_from(t.outerjoin(a, a.c.id == t.c.output_id)).where(t.c.root_id == root_id))
    rows = conn.execute(stmt).fetchall()
    loads = json_value
    return [RunShape(run_id, root, parent, state, loads(refs) if refs and '"run"' in refs else {},
                     None if output is None or output == "null" else
                     loads(output) if '"run"' in output else VALUES_ONLY, output_id,
                     None if fmt is None else (fmt, type_name, inline, size))
            for run_id, root, parent, state, refs, output, output_id, fmt, type_name, inline, size in rows]


def runs_by_id(conn: sa.Connection, runs: sa.Table, ids: Iterable[str], *,
               refs_known: Collection[str] = ()) -> list[RunRecord]:
    """Whole runs by id (those recorded; one query per 500), except the ``input_refs`` of those in
    ``refs_known``: left ``{}``, not decoded (a rerun's planner has them from :func:`run_shapes`, and a fan-in's
    are thousands of refs)."""
    wanted = list(dict.fromkeys(ids))
    t = runs
    cols = [sa.cast(t.c[f], sa.Text).label(f) if f == "input_refs" else t.c[f] for f in RUN_FIELDS]
    out = []
    for i in range(0, len(wanted), 500):
        for row in conn.execute(sa.select(*cols).where(t.c.id.in_(wanted[i:i + 500]))).mappings():
            doc = dict(row)
            refs = doc["input_refs"]
            doc["input_refs"] = {} if doc["id"] in refs_known or not refs else json_value(refs)
            out.append(RunRecord(**doc))
    return out


# -- resolutions -----------------------------------------------------------------------------------

SILENT = "sk_silent"  # the label of the silence test a read of resolutions selects with their columns


def judged_resolutions(conn: sa.Connection, stmt: sa.Select, silent: sa.ColumnElement[bool]
                       ) -> tuple[list[ResolutionRecord], list[str]]:
    """The resolutions ``stmt`` selects (:func:`resolution_from_row`), and the ids of those for which ``silent``
    holds, asked in the same statement (with the database's clock, as it reads them: no statement or transaction of
    its own)."""
    rows = conn.execute(stmt.add_columns(silent.label(SILENT))).mappings().all()
    return [resolution_from_row(row) for row in rows], [row["id"] for row in rows if row[SILENT]]


def get_resolution(conn: sa.Connection, resolutions: sa.Table, resolution_id: str, silent: sa.ColumnElement[bool]
                   ) -> tuple[ResolutionRecord | None, list[str]]:
    """The resolution (None when unknown), and its id if ``silent`` holds for it (see :func:`judged_resolutions`)."""
    stmt = sa.select(resolutions).where(resolutions.c.id == resolution_id).limit(1)
    found, silent_ids = judged_resolutions(conn, stmt, silent)
    return (found[0] if found else None), silent_ids


def list_resolutions(conn: sa.Connection, resolutions: sa.Table, silent: sa.ColumnElement[bool], *,
                     state: str | None = None, limit: int = 100, offset: int = 0, id_prefix: str | None = None
                     ) -> tuple[list[ResolutionRecord], list[str]]:
    """Resolutions, newest first, those in ``state`` and whose id starts with ``id_prefix`` if given, listed
    (:func:`listed_resolution_columns`: their errors clipped); and the ids of those for which ``silent`` holds (see
    :func:`judged_resolutions`)."""
    t = resolutions
    stmt = sa.select(*listed_resolution_columns(t))
    if state is not None:
        stmt = stmt.where(t.c.state == state)
    if id_prefix is not None:
        stmt = stmt.where(*_starting(t.c.id, id_prefix))
    stmt = stmt.order_by(t.c.created_at.desc(), t.c.id).limit(limit).offset(offset)
    return judged_resolutions(conn, stmt, silent)


def cancel_requested(conn: sa.Connection, resolutions: sa.Table, resolution_id: str) -> bool:
    return conn.scalar(sa.select(resolutions.c.state).where(resolutions.c.id == resolution_id)) == CANCELING


# -- artifacts -------------------------------------------------------------------------------------

def get_artifact(conn: sa.Connection, artifacts: sa.Table, artifact_id: str) -> ArtifactRecord | None:
    return first_record(conn, sa.select(artifacts).where(artifacts.c.id == artifact_id), ArtifactRecord, ART_FIELDS)


def get_artifacts(conn: sa.Connection, artifacts: sa.Table, ids: Iterable[str]) -> list[ArtifactRecord]:
    """The records of those of these artifacts recorded, whole (each once; one query per :data:`IDS_PER_QUERY`)."""
    wanted = list(dict.fromkeys(ids))
    stmt = sa.select(artifacts)
    return [record for i in range(0, len(wanted), IDS_PER_QUERY) for record in select_records(
        conn, stmt.where(artifacts.c.id.in_(wanted[i:i + IDS_PER_QUERY])), ArtifactRecord, ART_FIELDS)]


def artifact_formats(conn: sa.Connection, artifacts: sa.Table, ids: Iterable[str]) -> dict[str, Formats]:
    """``{id: (format, type_name, inline bytes, size)}`` of these artifacts (those recorded): what reading their
    values takes, and checking their stored bytes, without the summaries (:func:`get_artifacts`, lighter; one query per
    :data:`IDS_PER_QUERY` ids)."""
    return {row[0]: (row[1], row[2], row[3], row[5]) for row in format_rows(conn, artifacts, ids)}


def format_rows(conn: sa.Connection, artifacts: sa.Table, ids: Iterable[str],
                inline_bytes: int | None = None) -> list[FormatRow]:
    """:func:`artifact_formats` as rows (:data:`FormatRow`); ``inline_bytes``: inline bytes longer than this are
    left out (None), the row saying they were (a record of a client's making: its inline bytes are bounded only by
    its write's size), so that a row is never larger than this and its type name."""
    wanted = list(dict.fromkeys(ids))
    t = artifacts
    inline: sa.ColumnElement[Any] = t.c.inline
    over: sa.ColumnElement[bool] = sa.false()
    if inline_bytes is not None:
        over = sa.func.coalesce(sa.func.length(t.c.inline) > inline_bytes, sa.false())
        inline = sa.case((over, sa.null()), else_=t.c.inline)
    out: list[FormatRow] = []
    for i in range(0, len(wanted), IDS_PER_QUERY):
        stmt = sa.select(t.c.id, t.c.format, t.c.type_name, inline, over, t.c.size).where(
            t.c.id.in_(wanted[i:i + IDS_PER_QUERY]))
        out.extend((row[0], row[1], row[2], row[3], bool(row[4]), row[5]) for row in conn.execute(stmt))
    return out


def output_formats(conn: sa.Connection, runs: sa.Table, artifacts: sa.Table, root_id: str) -> dict[str, Formats]:
    """:func:`artifact_formats` of the outputs of a resolution's runs, in one query (a rerun's reused values)."""
    t, a = runs, artifacts
    stmt = (sa.select(a.c.id, a.c.format, a.c.type_name, a.c.inline, a.c.size)
            .select_from(t.join(a, a.c.id == t.c.output_id)).where(t.c.root_id == root_id))
    return {row[0]: (row[1], row[2], row[3], row[4]) for row in conn.execute(stmt).fetchall()}

