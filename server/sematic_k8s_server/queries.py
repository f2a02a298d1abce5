"""The dashboard's read queries over the store's tables: resolutions filtered and grouped by root func, and
run counts by state. Each is a few grouped SQL statements, cheap for thousands of runs (``runs.root_id`` and
``runs.state`` are indexed)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sematic_k8s.errors import CorruptRecord
from sematic_k8s.store import reads
from sematic_k8s.store.records import NEVER_STARTED_KIND
from sematic_k8s.store.sql import SqlStore
from sematic_k8s.store.tables import ResolutionRow, RunRow

_loads: Callable[[str | bytes], Any]
try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - a server installed without its extra
    from json import loads as _loads

RES = ResolutionRow.__table__
RUNS = RunRow.__table__


@dataclass(frozen=True)
class ResolutionFilter:
    """Which resolutions to show: every given condition holds."""

    q: str | None = None  # a substring of the root func, the note or a tag, or an id prefix (any case)
    func: str | None = None  # the root func: its path, or its name (the part after ":")
    state: str | None = None
    tag: str | None = None
    since: dt.datetime | None = None  # created at or after (UTC, naive)
    until: dt.datetime | None = None  # created before

    def where(self) -> list[sa.ColumnElement[bool]]:
        t = RES
        out: list[sa.ColumnElement[bool]] = []
        if self.q:
            like = f"%{_escape(self.q.lower())}%"
            out.append(sa.or_(sa.func.lower(t.c.root_func_path).like(like, escape="\\"),
                              sa.func.lower(sa.func.coalesce(t.c.note, "")).like(like, escape="\\"),
                              sa.func.lower(sa.cast(t.c.tags, sa.Text)).like(like, escape="\\"),
                              t.c.id.like(f"{_escape(self.q.lower())}%", escape="\\")))
        if self.func:
            out.append(sa.or_(t.c.root_func_path == self.func,
                              t.c.root_func_path.like(f"%:{_escape(self.func)}", escape="\\")))
        if self.state:
            out.append(t.c.state == self.state)
        if self.tag:
            out.append(sa.cast(t.c.tags, sa.Text).like(f'%"{_escape(self.tag)}"%', escape="\\"))
        if self.since:
            out.append(t.c.created_at >= self.since)
        if self.until:
            out.append(t.c.created_at < self.until)
        return out


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def pipelines(store: SqlStore, flt: ResolutionFilter, *, limit: int, offset: int, per_func: int,
              history_offset: int = 0) -> dict[str, Any]:
    """Resolutions matching ``flt`` grouped by root func, the func with the newest resolution first:
    ``{"total": groups, "groups": [{"root_func_path", "count", "latest", "states": {state: n},
    "resolutions": [ResolutionRecord, ...] (newest first, ``per_func`` of them from ``history_offset``)}]}``."""
    where = flt.where()
    latest = sa.func.max(RES.c.created_at).label("latest")
    grouped = (sa.select(RES.c.root_func_path, sa.func.count().label("count"), latest)
               .where(*where).group_by(RES.c.root_func_path))
    with store.engine.connect() as conn:
        total = conn.scalar(sa.select(sa.func.count()).select_from(grouped.subquery()))
        rows = conn.execute(grouped.order_by(latest.desc(), RES.c.root_func_path).limit(limit).offset(offset)).all()
        funcs = [r.root_func_path for r in rows]
        states: dict[str, dict[str, int]] = {f: {} for f in funcs}
        if funcs:
            for f, state, n in conn.execute(
                    sa.select(RES.c.root_func_path, RES.c.state, sa.func.count())
                    .where(*where, RES.c.root_func_path.in_(funcs)).group_by(RES.c.root_func_path, RES.c.state)):
                states[f][state] = n
        groups = []
        for r in rows:
            stmt = (sa.select(*reads.listed_resolution_columns(RES))
                    .where(*where, RES.c.root_func_path == r.root_func_path)
                    .order_by(RES.c.created_at.desc(), RES.c.id).limit(per_func).offset(history_offset))
            history = reads.listed_resolutions(conn, stmt)  # their errors clipped, as in every listing
            groups.append({"root_func_path": r.root_func_path, "count": r.count, "latest": r.latest,
                           "states": states[r.root_func_path], "resolutions": history})
    return {"total": total or 0, "groups": groups}


MAX_FUNCS = 1000  # root funcs an answer names for the filter: a client writing a million made every index page huge


def root_funcs(store: SqlStore) -> tuple[list[str], int]:
    """The first :data:`MAX_FUNCS` root funcs that have a resolution, sorted, and how many there are."""
    funcs = sa.select(RES.c.root_func_path).distinct()
    with store.engine.connect() as conn:
        first = list(conn.scalars(funcs.order_by(RES.c.root_func_path).limit(MAX_FUNCS)))
        total = len(first) if len(first) < MAX_FUNCS else conn.scalar(sa.select(sa.func.count()).select_from(
            funcs.subquery()))
    return first, total or 0



_OVERVIEW_COLUMNS = ["id", "parent_id", "func_path", "func_name", "state", "input_refs", "inputs", "cached_from",
                     "notes", "attempts", "created_at", "started_at", "ended_at"]
# whether a run's error names WorkerNeverStarted among its classes, told by the database (the error itself, up to
# half a megabyte, is not read): as JSON text, a name in the mro is the quoted name (a message's quotes are escaped)
_UNSTARTED = f'%"{NEVER_STARTED_KIND}"%'


_JSON_COLUMNS = frozenset({"input_refs", "inputs", "notes"})
_TIME_COLUMNS = frozenset({"created_at", "started_at", "ended_at"})


def overview_rows(store: SqlStore, root_id: str) -> list[Any]:
    """A resolution's runs with only what the overview needs (no source text, no settings, no errors: only whether
    one names WorkerNeverStarted among its classes, ``unstarted``). JSON and
    times are decoded here, not by SQLAlchemy's column types: a 5,000-run resolution's rows in a fifth of the
    time (orjson and ``fromisoformat`` against ``json.loads`` and a regular expression per value)."""
    from sematic_k8s_server.overview import RunRow as OverviewRow

    raw = _JSON_COLUMNS | _TIME_COLUMNS
    unstarted = sa.and_(RUNS.c.error.is_not(None), sa.cast(RUNS.c.error, sa.Text).like(_UNSTARTED))
    stmt = sa.select(*(sa.type_coerce(RUNS.c[c], sa.Text).label(c) if c in raw else RUNS.c[c]
                       for c in _OVERVIEW_COLUMNS), unstarted.label("unstarted")).where(RUNS.c.root_id == root_id)
    json_at = [i for i, c in enumerate(_OVERVIEW_COLUMNS) if c in _JSON_COLUMNS]
    time_at = [i for i, c in enumerate(_OVERVIEW_COLUMNS) if c in _TIME_COLUMNS]
    out = []
    with store.engine.connect() as conn:
        for row in conn.execute(stmt):
            values = list(row)
            for i in json_at:
                v = values[i]
                if isinstance(v, (str, bytes)):  # PostgreSQL's driver decodes JSON
                    try:
                        values[i] = _loads(v)
                    except ValueError as e:  # as the store's own reads say it: which value, and what to do
                        raise CorruptRecord(v if isinstance(v, str) else v.decode(errors="replace"), str(e)) from None
            for i in time_at:
                v = values[i]
                values[i] = dt.datetime.fromisoformat(v) if isinstance(v, str) else v
            values[-1] = bool(values[-1])
            out.append(OverviewRow(*values))
    return out


LABEL_TEXT = 1000  # characters of a text summary kept for a label (which shows far fewer)


def label_summaries(store: SqlStore, ids: Iterable[str]) -> dict[str, Any]:
    """``{artifact id: summary}`` of those of these artifacts whose summary is a scalar (None, a bool, a number, or a
    text, cut to :data:`LABEL_TEXT` characters): what an overview's labels may show (unknown ids, and the others,
    left out). Read a batch of records at a time (:meth:`~sematic_k8s.store.sql.SqlStore.iter_artifacts`): the inputs
    of the thousands of runs an overview may show have summaries of any size (a picture's preview) and inline bytes.
    Was: every one read whole at once."""
    out: dict[str, Any] = {}
    for a in store.iter_artifacts(ids):
        if a.summary is None or isinstance(a.summary, (bool, int, float)):
            out[a.id] = a.summary
        elif isinstance(a.summary, str):
            out[a.id] = a.summary[:LABEL_TEXT]
    return out
