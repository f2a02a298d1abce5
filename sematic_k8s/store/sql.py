"""The SQL store: SQLAlchemy 2 over SQLite (embedded default) or PostgreSQL.

:class:`SqlStore` is the one class the resolvers, the CLI and the server call. It opens the database (SQLite's
pragmas, WAL checkpoints off the writers' path, the reserve kept for a full disk), writes each batch in one
transaction, retried after a deadlock, and leaves the rest to the modules beside it, each a set of functions of a
connection and the tables they touch:

- :mod:`~sematic_k8s.store.guards`: what a write checks before it lands (fencing, ordered writes, ended
  resolutions, resolved runs, contradicting artifact records);
- :mod:`~sematic_k8s.store.texts`: a record's text holding a NUL character, refused naming it (a resolution's
  error kept escaped), before anything is written;
- :mod:`~sematic_k8s.store.writes`: the statements of a batch's records (insert if absent, updates in id order);
- :mod:`~sematic_k8s.store.bulk`: the embedded resolver's fast paths, cache hits and a rerun's clones;
- :mod:`~sematic_k8s.store.reads` and :mod:`~sematic_k8s.store.cache_reads`: the reads, and the cache look-ups;
- :mod:`~sematic_k8s.store.kept`: secrets the database keeps for the processes that write it directly;
- :mod:`~sematic_k8s.store.liveness`: resolutions whose process stopped heartbeating, marked dead, but for one whose
  beat waits for a SQLite file's write lock (:mod:`~sematic_k8s.store.inflight`);
- :mod:`~sematic_k8s.store.tables`, :mod:`~sematic_k8s.store.json_columns`: the tables, and their JSON columns' text.

Writes are idempotent: every insert is "insert if absent" (artifacts are content-addressed; a batch whose
first attempt landed may be sent again), and updates set fields. They are also ordered per driver: a batch
numbered within its driver epoch (``Batch.sequence``) that is not newer than the last one applied changes nothing,
and a heartbeat never goes back. Reading a Resolution whose resolving process stopped heartbeating marks it dead
first (:meth:`SqlStore.expire_silent`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event

from sematic_k8s import limits, settings
from sematic_k8s.error_records import one_line
from sematic_k8s.errors import DatabaseUnopenable, DiskFull, LabelsChanged, TooManyTags
from sematic_k8s.store import (
    bulk,
    cache_reads,
    checkpoints,
    dbclock,
    diskfull,
    guards,
    inflight,
    kept,
    liveness,
    locked,
    lockwait,
    pgrefusals,
    readonly,
    reads,
    redacted_url,
    schema,
    sqlite_file,
    sqlite_unusable,
    texts,
    writes,
)
from sematic_k8s.store.json_columns import json_text, json_value
from sematic_k8s.store.records import (
    CLAIMED,
    RUN_DEFAULTS,
    ArtifactRecord,
    Batch,
    Formats,
    ResolutionRecord,
    RunRecord,
    RunShape,
    check_resolution_updates,
    utcnow,
)
from sematic_k8s.store.tables import (  # noqa: F401 - the state names, where the server and the CLI import them
    CANCELED,
    CANCELING,
    ENDED,
    FAILED,
    LIVE,
    RESOLVED,
    RUNNING,
    UNFINISHED_RUNS,
    ArtifactRow,
    Base,
    ResolutionRow,
    RunRow,
)

R = TypeVar("R")
P = ParamSpec("P")
WHOLE_RUNS_BATCH = 16  # runs a streamed read of a resolution's runs holds at a time: each may be a megabyte whole
WHOLE_ARTIFACTS_BATCH = 8  # artifact records a streamed read holds at a time: a client's summary and inline
# bytes are bounded only by its write's size
log = logging.getLogger("sematic_k8s")

# a new row's owner, unless the server gave one (the writer's API key): every row of an insert has the same columns
_OWNED: dict[str, Any] = {"owner": None}
_RUN_ROW = RUN_DEFAULTS | _OWNED
_RES_ROW: dict[str, Any] = _OWNED | {"held_by": None}  # a claim's holder: set by the server's claim only
_HITS_SQL = cache_reads.HITS_SQL  # find_hits' statement, where tests read it to explain its query plan


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={schema.SQLITE_BUSY_MS}")  # first: WAL mode may wait for another process
    schema.use_wal(dbapi_conn)  # a fresh file's switch waits for another process's, as a write waits its turn
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA wal_autocheckpoint={checkpoints.BACKSTOP_PAGES}")  # checkpoints run off the writers' path
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _unopenable(url: str, exc: Exception) -> DatabaseUnopenable:
    """The database at ``url`` could not be opened (``exc``: a URL no installed driver takes, a file that cannot be
    made, a server that does not answer): one line naming it, its password hidden."""
    file = sqlite_file(url)
    found = sqlite_unusable(exc, str(file) if file else None)
    if found is not None:  # there, and its own fix: not the settings'
        unusable = DatabaseUnopenable(*found)
        unusable.in_settings = False
        return unusable
    orig = getattr(exc, "orig", None) or exc
    error = DatabaseUnopenable(f"cannot open the metadata database {redacted_url(url)}: "
                               f"{one_line(str(orig)) or type(orig).__name__}",
                               f"check ${settings.DB_URL_ENV} or --home (a resolver: home=DIR)")
    error.unreachable = _unreachable(exc)
    return error


# PostgreSQL's SQLSTATEs of a connection answered no until its settings change: invalid authorization (class 28: the
# credentials, pg_hba.conf, no such role), no such database, no CONNECT privilege on it
REFUSED_CLASS, REFUSED_STATES = "28", frozenset({"3D000", "42501"})


def _unreachable(exc: Exception) -> bool:
    """Whether a database server did not answer the connection (refused, timed out, its name not found yet, starting
    up, shutting down, no connection to spare), rather than answered no (the credentials, the database's name, its
    CONNECT privilege): something that may pass by itself. Told by the refusal's SQLSTATE, in no language (libpq keeps
    it to itself: :mod:`~sematic_k8s.store.pgrefusals` learns it, connecting once more); one not learned is taken
    for no answer (the next try learns it)."""
    if not isinstance(exc, sa.exc.OperationalError) or isinstance(exc.orig, sqlite3.Error):
        return False
    pgrefusals.learn(exc)
    sqlstate = pgrefusals.sqlstate(exc) or ""
    return not (sqlstate.startswith(REFUSED_CLASS) or sqlstate in REFUSED_STATES)


DEADLOCK_ATTEMPTS = 5
RETRIED_SQLSTATES = frozenset({"40P01", "40001"})  # PostgreSQL: deadlock detected, serialization failure


class SqlStore:
    """Store over any SQLAlchemy URL. Brings the schema to head on first use (:func:`schema.migrate`, safe
    with several processes at once) unless ``create=False``. ``stale_after``: seconds without a heartbeat
    after which a running Resolution is dead (default $SEMATIC_K8S_HEARTBEAT_TIMEOUT, read when used).
    DatabaseUnopenable when the database cannot be opened (every opener, the embedded store's and the server's)."""

    bulk_clones = True  # takes Batch.clones (a rerun's reused runs copied in the database: bulk.clone_runs)

    def __init__(self, url: str, *, create: bool = True, stale_after: float | None = None,
                 **engine_kwargs: Any) -> None:
        self.url = url
        self.stale_after = stale_after
        self._awake_since: float | None = None  # judge_from_now: silence judged only once up for the timeout
        self._checkpoints: checkpoints.Checkpointer | None = None
        self._reserve: diskfull.Reserve | None = None
        self._beats: inflight.Beats | None = None  # a SQLite file's beats on their way (waiting for its lock)
        self._told_expired: list[Callable[[list[str]], None]] = []  # on_expired's
        try:
            self.engine = sa.create_engine(url, **{"json_serializer": json_text, "json_deserializer": json_value,
                                                   **engine_kwargs})
            diskfull.listen(self.engine)
            if self.engine.dialect.name == "postgresql":
                readonly.listen(self.engine, self._held_up)  # its beats refused meanwhile: see _held_up
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
                if self.engine.url.database not in (None, "", ":memory:"):
                    locked.listen(self.engine, schema.SQLITE_BUSY_MS / 1000)
                    self._beats = inflight.Beats(self.engine.url.database, schema.SQLITE_BUSY_MS / 1000)
                    self._reserve = diskfull.Reserve(self.engine.url.database + "-reserve")
                    self._checkpoints = checkpoints.Checkpointer(self.engine.url.database, tend=self._reserve.keep)
            if create:
                schema.migrate(self.engine)
        except (ImportError, ValueError, sa.exc.SQLAlchemyError) as e:  # not StopsForAFix: those say what to do
            raise _unopenable(url, e) from None
        if self._reserve is not None:
            self._reserve.keep()
        self._runs = Base.metadata.tables[RunRow.__tablename__]
        self._res = Base.metadata.tables[ResolutionRow.__tablename__]
        self._arts = Base.metadata.tables[ArtifactRow.__tablename__]

    def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.close()
        self.engine.dispose()

    # -- writes -----------------------------------------------------------------------------------

    def write(self, batch: Batch, conflicts: set[str] | None = None, replays: set[str] | None = None,
              canceled: set[str] | None = None) -> None:
        """Apply ``batch`` in one transaction; an artifact already present is left as it is. Updated rows
        are locked in the order of their ids, as every writer does (several server processes updating the same
        runs); a transaction the database aborted all the same to break a deadlock is run again, up to
        :data:`DEADLOCK_ATTEMPTS` times. ``conflicts``, when given, gets the ids of the artifacts written without
        bytes whose record differs from the recorded one (format, type or size; see :meth:`replace_artifact`).
        A batch that ends a resolution and finds the disk full is written again in the room the database's
        reserve gives back (:mod:`~sematic_k8s.store.diskfull`); other writes raise ``DiskFull``.
        A batch applied already (its ``sequence`` not above the recorded one, see :func:`guards.refuse_stale`)
        changes nothing and raises nothing; ``replays``, when given, gets the id of the resolution that showed it.
        A failed end of a resolution found ``canceling`` is recorded canceled (:func:`guards.kept_cancels`);
        ``canceled``, when given, gets the ids of those, once committed (and, for a batch applied already, the id of
        the resolution whose failed end it holds, if the record shows it so recorded: what its first attempt told).
        ValueError, nothing written, for a batch setting a resolution's tags or note (people's: label_resolution),
        its labels_version or its driver_epoch (the store's; :func:`records.check_resolution_updates`), or for a
        record's text holding a NUL character (naming it; a resolution's error is kept with ``\\x00`` in its place:
        :func:`texts.checked`)."""
        if not batch:
            return
        check_resolution_updates(batch.resolution_updates)
        batch = texts.checked(batch)
        beating = [r for r, fields in batch.resolution_updates.items() if "heartbeat_at" in fields]
        with self._beats.on_the_way(beating) if self._beats is not None and beating else contextlib.nullcontext():
            try:
                self._write_retrying(batch, conflicts, replays, canceled)
            except DiskFull as e:
                ending = [r for r, fields in batch.resolution_updates.items() if fields.get("state") in ENDED]
                if not ending or self._reserve is None or not self._reserve.release():
                    raise
                log.warning("%s: recording the end of resolution %s in the room its reserve gave back", e.problem,
                            ", ".join(ending))
                self._write_retrying(batch, conflicts, replays, canceled)

    def _write_retrying(self, batch: Batch, conflicts: set[str] | None, replays: set[str] | None,
                        canceled: set[str] | None) -> None:
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            found: set[str] | None = None if conflicts is None else set()
            try:
                kept = self._write(batch, found)
                if conflicts is not None and found:
                    conflicts |= found
                if canceled is not None:
                    canceled |= kept
                if self._checkpoints is not None:
                    self._checkpoints.wrote()
                return
            except guards.Replayed as e:
                if replays is not None:
                    replays.add(e.resolution_id)
                if canceled is not None and e.canceled:
                    canceled.add(e.resolution_id)
                return
            except sa.exc.OperationalError as e:
                if attempt == DEADLOCK_ATTEMPTS or getattr(e.orig, "sqlstate", None) not in RETRIED_SQLSTATES:
                    raise

    def _write(self, batch: Batch, conflicts: set[str] | None) -> set[str]:
        """One attempt of :meth:`write`; the ids of the resolutions whose failed end it recorded canceled."""
        marked: list[str] = []  # continuations found silent, marked dead in this transaction: told once it commits

        def expire(ids: list[str]) -> list[str]:
            found = self._expire(conn, ids)
            marked.extend(found)
            return found

        with self.engine.begin() as conn:
            guards.hold_write_lock(conn)  # SQLite: before the guards read (a batch may hold no insert before it)
            res_updates = batch.resolution_updates
            if res_updates or batch.fence or batch.sequence:  # first: refused, or applied already, it writes nothing
                res_updates = guards.refuse_stale(conn, self._res, res_updates, batch.fence, batch.sequence)
                res_updates = guards.sequenced(res_updates, batch.sequence)
            if batch.new_resolutions:
                guards.refuse_second_continue(conn, self._res, batch.new_resolutions, expire)
                writes.replace_claims(conn, self._res, batch.new_resolutions)  # its driver's record, in its place
            writes.insert_absent(conn, self._res, [_RES_ROW | r for r in batch.new_resolutions])
            for rows in guards.chunks(list(batch.artifacts.values())):
                if conflicts is not None:  # asked by a writer that can read the bytes (the server)
                    conflicts |= guards.conflicting_artifacts(conn, self._arts, rows)
                writes.insert_artifacts(conn, self._arts, rows)
            for rows in guards.chunks(list(batch.new_runs.values())):
                writes.insert_absent(conn, self._runs, [_RUN_ROW | r for r in rows])
            bulk.clone_runs(conn, self._runs, list(batch.clones.values()))
            for hits in guards.chunks(list(batch.hits.values())):
                bulk.insert_hits(conn, self._runs, hits)
            if batch.run_updates:
                guards.refuse_unresolving(conn, self._runs, batch.run_updates)
            writes.update(conn, self._runs, batch.run_updates)
            writes.update(conn, self._res, res_updates)
        self._tell_expired(marked)
        return {r for r, fields in res_updates.items()  # (guards.kept_cancels)
                if fields.get("state") == CANCELED and batch.resolution_updates.get(r, {}).get("state") == FAILED}

    def end_claim(self, resolution_id: str, error: str) -> bool:
        """Record as failed, with ``error``, a resolution still ``CLAIMED`` (the server's rerun action recorded it, and
        could not start its driver); whether it was. One its driver recorded meanwhile is left as it is. A NUL
        character in ``error`` is kept as ``\\x00`` (:func:`~sematic_k8s.limits.text_field`)."""
        t = self._res
        error = limits.text_field(error)
        with self.engine.begin() as conn:
            guards.hold_write_lock(conn)
            return bool(conn.execute(sa.update(t).where(t.c.id == resolution_id, t.c.state == CLAIMED).values(
                state=FAILED, error=error, ended_at=dbclock.now(conn.dialect.name))).rowcount)

    def note_claim(self, resolution_id: str, waiting: str | None) -> bool:
        """Note on a resolution still ``CLAIMED`` what its driver's launch waits for (``settings.waiting``: its image,
        while its registry does not answer), or that it waits no more (None); whether it was still claimed. Its
        driver's record, written in the claim's place, has no such note."""
        t = self._res
        with self.engine.begin() as conn:
            guards.hold_write_lock(conn)
            row = conn.execute(sa.select(t.c.settings).where(t.c.id == resolution_id, t.c.state == CLAIMED)).first()
            if row is None:
                return False
            settings = {k: v for k, v in (row.settings or {}).items() if k != "waiting"}
            return bool(conn.execute(sa.update(t).where(t.c.id == resolution_id, t.c.state == CLAIMED).values(
                settings={**settings, "waiting": waiting} if waiting else settings)).rowcount)

    def beat_claims(self, holder: str, resolution_ids: Iterable[str]) -> list[str]:
        """Stamp with the database's clock the heartbeat of each of these claims still ``CLAIMED`` and held by
        ``holder`` (the server process launching their drivers: ``held_by``), as a resolving process beats its
        resolution (on SQLite, known to be on its way while it waits for the lock: :mod:`~.inflight`); the ids beaten.
        A claim ended meanwhile (failed as silent, canceled, its driver's record in its place) is left as it is."""
        ids = sorted(set(resolution_ids))
        if not ids:
            return []
        t = self._res
        with self._beats.on_the_way(ids) if self._beats is not None else contextlib.nullcontext():
            with self.engine.begin() as conn:
                guards.hold_write_lock(conn)
                held = sa.and_(t.c.id.in_(ids), t.c.state == CLAIMED, t.c.held_by == holder)
                beaten = list(conn.scalars(sa.select(t.c.id).where(held)))
                if beaten:
                    conn.execute(sa.update(t).where(held).values(heartbeat_at=dbclock.now(conn.dialect.name)))
                return beaten

    def let_go_of_claim(self, resolution_id: str, holder: str) -> bool:
        """The launch of a claim's driver by ``holder`` ended with the driver started: the claim, if still
        ``CLAIMED`` and held by it, is held no more, its heartbeat stamped now (the driver's grace counts from here:
        :data:`~.liveness.CLAIM_GRACE`); whether it was."""
        t = self._res
        with self.engine.begin() as conn:
            guards.hold_write_lock(conn)
            return bool(conn.execute(sa.update(t).where(t.c.id == resolution_id, t.c.state == CLAIMED,
                                                         t.c.held_by == holder)
                                     .values(held_by=None, heartbeat_at=dbclock.now(conn.dialect.name))).rowcount)

    def take_over(self, resolution_id: str) -> int:
        """Make the calling driver the resolution's only writer: bump its driver epoch in one atomic update and
        return the new one, which the driver's batches then carry (``Batch.fence``); those of any driver that took
        it over before are refused from now on (:func:`~sematic_k8s.store.guards.refuse_stale`). The epoch's write
        sequence starts again (``driver_seq`` 0: any numbered write of the new driver is newer). LookupError when
        it is not recorded."""
        t = self._res
        stmt = (sa.update(t).where(t.c.id == resolution_id)
                .values(driver_epoch=t.c.driver_epoch + 1, driver_epoch_at=utcnow(), driver_seq=0)
                .returning(t.c.driver_epoch))
        with self.engine.begin() as conn:
            guards.hold_write_lock(conn)
            epoch = conn.scalar(stmt)
        if epoch is None:
            raise LookupError(f"resolution {resolution_id} is not recorded: nothing to take over")
        return int(epoch)

    def kept_secret(self, name: str) -> bytes:
        """The random secret this database keeps as ``name`` for the processes that write it directly, made on first
        need (:func:`~sematic_k8s.store.kept.kept_secret`): the same for each of them and after a restart."""
        return kept.kept_secret(self.engine, name)

    def replace_artifact(self, recorded: ArtifactRecord, written: dict[str, Any]) -> bool:
        """Replace the record of an artifact stored without bytes in its record by ``written`` (its format, type,
        summary and size), if it is still ``recorded``: what a writer whose record the stored bytes verify calls
        after :meth:`write` reported a conflict. Whether it replaced it."""
        t = self._arts
        stmt = (sa.update(t).where(t.c.id == recorded.id, t.c.inline.is_(None),
                                   *(t.c[k] == getattr(recorded, k) for k in guards.TRUTH_FIELDS))
                .values({k: written.get(k) for k in ("format", "type_name", "summary", "size")}))
        with self.engine.begin() as conn:
            guards.hold_write_lock(conn)
            return bool(conn.execute(stmt).rowcount)

    def request_cancel(self, resolution_id: str) -> str | None:
        """Mark a running Resolution "canceling"; returns its state after the request (None when unknown). Its
        resolution loop notices at its next flush and cancels; a Resolution whose process is already silent is
        marked dead instead (see :meth:`expire_silent`). One still ``CLAIMED`` (no driver recorded it yet) is
        "canceled" at once: a driver that comes for it finds it ended, and stops."""
        t = self._res
        self.get_resolution(resolution_id)  # expires it if its process is gone
        with self.engine.begin() as conn:
            conn.execute(sa.update(t).where(t.c.id == resolution_id, t.c.state == CLAIMED).values(
                state=CANCELED, error="canceled before its driver recorded it",
                ended_at=dbclock.now(conn.dialect.name)))
            conn.execute(sa.update(t).where(t.c.id == resolution_id, t.c.state == RUNNING).values(state=CANCELING))
            return conn.scalar(sa.select(t.c.state).where(t.c.id == resolution_id))

    def label_resolution(self, resolution_id: str, *, add: Iterable[str] = (), remove: Iterable[str] = (),
                         note: str | None = None, set_note: bool = False,
                         labels_version: int | None = None) -> ResolutionRecord | None:
        """Add and remove tags (kept sorted, each once) and, with ``set_note``, replace the note (None or ""
        clears it). Returns the resolution as it now is (None when unknown). A change that changes something adds
        one to the resolution's ``labels_version``; given the version the change was made to (as read), a change
        made to an older one raises LabelsChanged and changes nothing, unless it is already in effect (the same
        change landing again, or someone else's alike: no error). Without it the change is made whatever the
        labels are. TooManyTags, and nothing changes, for more tags than a resolution has
        (:data:`~sematic_k8s.limits.TAGS`); ValueError for a version the resolution never had, or for a tag added or
        a note holding a NUL character (as the server's ``POST .../labels`` refuses them: naming it)."""
        t = self._res
        add = list(add)
        texts.refuse_nul(None, {"note": note} | {f"add[{i}]": tag for i, tag in enumerate(add)},
                         ["note", *(f"add[{i}]" for i in range(len(add)))])
        with self.engine.begin() as conn:
            guards.hold_write_lock(conn)
            stmt = sa.select(t.c.tags, t.c.note, t.c.labels_version).where(t.c.id == resolution_id)
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            row = conn.execute(stmt).first()
            if row is None:
                return None
            if labels_version is not None and labels_version > row.labels_version:
                raise ValueError(f"labels_version {labels_version} is newer than resolution {resolution_id}'s "
                                 f"({row.labels_version}): send the labels_version read with its labels")
            tags = sorted((set(row.tags or []) | set(add)) - set(remove))
            if len(tags) > max(limits.TAGS, len(set(row.tags or []))):  # no more than an older version recorded: ok
                raise TooManyTags(resolution_id, len(tags), limits.TAGS)
            now_note = (note if set_note else row.note) or None
            if tags != list(row.tags or []) or now_note != (row.note or None):  # a change in effect changes nothing
                if labels_version is not None and labels_version != row.labels_version:
                    raise LabelsChanged(resolution_id, row.tags, row.note)
                conn.execute(sa.update(t).where(t.c.id == resolution_id).values(
                    tags=tags, note=now_note, labels_version=t.c.labels_version + 1))
        return self.get_resolution(resolution_id)

    # -- reads (store/reads.py), each on a connection of its own ----------------------------------

    def _read(self, read: Callable[Concatenate[sa.Connection, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``read(connection, *args, **kwargs)`` on a connection of its own."""
        with self.engine.connect() as conn:
            return read(conn, *args, **kwargs)

    def get_run(self, run_id: str) -> RunRecord | None:
        return self._read(reads.get_run, self._runs, run_id)

    def list_runs(self, *, root_id: str | None = None, state: str | None = None, func: str | None = None,
                  limit: int = 100, offset: int = 0, id_prefix: str | None = None,
                  newest_first: bool = False) -> list[RunRecord]:
        return self._read(reads.list_runs, self._runs, root_id=root_id, state=state, func=func, limit=limit,
                          offset=offset, id_prefix=id_prefix, newest_first=newest_first)

    def run_counts(self, root_id: str) -> dict[str, int]:
        """How many runs of a resolution are in each state."""
        return self.run_counts_of([root_id])[root_id]

    def run_counts_of(self, root_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        return self._read(reads.run_counts_of, self._runs, root_ids)

    def waiting_runs(self, root_id: str, limit: int = 20) -> dict[str, str]:
        return self._read(reads.waiting_runs, self._runs, root_id, limit)

    def runs_of_root(self, root_id: str, *, listed: bool = False) -> list[RunRecord]:
        """A resolution's runs, whole; ``listed``: as listings give them (their source left unread, their errors
        excerpts: :func:`reads.listed_runs`)."""
        return self._read(reads.runs_of_root, self._runs, root_id, listed=listed)

    def iter_runs_of_root(self, root_id: str) -> Iterator[RunRecord]:
        """A resolution's runs, whole, as the server streams them: the ids of those recorded now, then their runs
        :data:`WHOLE_RUNS_BATCH` at a time, each batch on a connection of its own, returned before its runs are
        yielded (a slow or gone reader holds no connection, and never more than a batch of runs). The ids are read
        at once (a database out of reach raises here, not midway through)."""
        ids = self._read(reads.run_ids_of_root, self._runs, root_id)

        def batches() -> Iterator[RunRecord]:
            for i in range(0, len(ids), WHOLE_RUNS_BATCH):
                yield from self._read(reads.runs_by_id, self._runs, ids[i:i + WHOLE_RUNS_BATCH])

        return batches()

    def run_shapes(self, root_id: str) -> list[RunShape]:
        return self._read(reads.run_shapes, self._runs, self._arts, root_id)

    def runs_by_id(self, ids: Iterable[str], *, refs_known: Collection[str] = ()) -> list[RunRecord]:
        return self._read(reads.runs_by_id, self._runs, ids, refs_known=refs_known)

    def get_resolution(self, resolution_id: str) -> ResolutionRecord | None:
        return self._read_judged(lambda conn, silent: reads.get_resolution(conn, self._res, resolution_id, silent))

    def list_resolutions(self, *, state: str | None = None, limit: int = 100, offset: int = 0,
                         id_prefix: str | None = None) -> list[ResolutionRecord]:
        return self._read_judged(lambda conn, silent: reads.list_resolutions(
            conn, self._res, silent, state=state, limit=limit, offset=offset, id_prefix=id_prefix))

    def cancel_requested(self, resolution_id: str) -> bool:
        return self._read(reads.cancel_requested, self._res, resolution_id)

    def get_artifact(self, artifact_id: str) -> ArtifactRecord | None:
        return self._read(reads.get_artifact, self._arts, artifact_id)

    def artifacts(self, ids: Iterable[str]) -> list[ArtifactRecord]:
        """The records of those of these artifacts recorded, whole, in a list (one query per
        :data:`reads.IDS_PER_QUERY` ids; the server streams them instead: :meth:`iter_artifacts`)."""
        return self._read(reads.get_artifacts, self._arts, ids)

    def iter_artifacts(self, ids: Iterable[str]) -> Iterator[ArtifactRecord]:
        """The recorded artifacts of these ids (each once), as the server streams them (``POST /store/artifacts``:
        up to 10,000 ids of records others wrote): :data:`WHOLE_ARTIFACTS_BATCH` at a time
        (:meth:`_batches`), so never more than a batch of records is held."""
        return self._batches(reads.get_artifacts, ids, WHOLE_ARTIFACTS_BATCH)

    def iter_artifact_formats(self, ids: Iterable[str], inline_bytes: int) -> Iterator[reads.FormatRow]:
        """:func:`reads.format_rows` of these ids, as the server streams them (``POST /store/artifact_formats``):
        inline bytes over ``inline_bytes`` left out (flagged), :data:`reads.IDS_PER_QUERY` rows at a time
        (:meth:`_batches`), each row bounded by ``inline_bytes`` and its type name."""
        return self._batches(lambda conn, arts, chunk: reads.format_rows(conn, arts, chunk, inline_bytes), ids,
                             reads.IDS_PER_QUERY)

    def _batches(self, read: Callable[[sa.Connection, sa.Table, list[str]], list[R]], ids: Iterable[str],
                 size: int) -> Iterator[R]:
        """``read(connection, artifacts, ids)`` of these ids (each once) ``size`` at a time, each batch on a
        connection of its own, returned before its rows are yielded (a slow or gone reader holds no connection).
        The first batch is read at once (a database out of reach raises here, not midway through)."""
        wanted = list(dict.fromkeys(ids))
        first = self._read(read, self._arts, wanted[:size])

        def batches() -> Iterator[R]:
            yield from first
            for i in range(size, len(wanted), size):
                yield from self._read(read, self._arts, wanted[i:i + size])

        return batches()

    def artifact_formats(self, ids: Iterable[str]) -> dict[str, Formats]:
        return self._read(reads.artifact_formats, self._arts, ids)

    def output_formats(self, root_id: str) -> dict[str, Formats]:
        return self._read(reads.output_formats, self._runs, self._arts, root_id)

    # -- cache look-ups (store/cache_reads.py) ---------------------------------------------------

    def find_cached(self, cache_key: str) -> RunRecord | None:
        return self._read(cache_reads.find_cached, self._runs, cache_key)

    def find_cached_many(self, cache_keys: Iterable[str]) -> dict[str, RunRecord]:
        return self._read(cache_reads.find_cached_many, self._runs, cache_keys)

    def find_trusted(self, cache_keys: Iterable[str],
                     trust: cache_reads.Trust) -> tuple[dict[str, RunRecord], set[str]]:
        return self._read(cache_reads.find_trusted, self._runs, cache_keys, trust)

    def find_hits(self, cache_keys: Iterable[str]) -> dict[str, cache_reads.Hit]:
        return self._read(cache_reads.find_hits, cache_keys)

    # -- liveness (store/liveness.py) ------------------------------------------------------------

    def _read_judged(self, read: Callable[[sa.Connection, sa.ColumnElement[bool]], tuple[R, list[str]]]) -> R:
        """``read(connection, silent)``: resolutions read with whether each is silent (:func:`liveness.silent`,
        selected with them: the database's clock, in the read's own statement). Only when some are is there a write:
        they are marked dead (:meth:`expire_silent`, its own transaction, unless they beat meanwhile) and read
        again."""
        stale_after = liveness.timeout(self.stale_after)
        silent = (liveness.silent(self._res, self.engine.dialect.name, stale_after)
                  if liveness.judging(self._awake_since, stale_after) else sa.false())
        found, silent_ids = self._read(read, silent)
        if silent_ids and liveness.expire_for_read(self.expire_silent, silent_ids):
            found, _ = self._read(read, silent)
        return found

    def _expire(self, conn: sa.Connection, ids: Iterable[str] | None = None) -> list[str]:
        """:func:`liveness.expire_silent` in the transaction of ``conn``, which holds the write lock (SQLite), so that
        a beat on its way (:mod:`~sematic_k8s.store.inflight`) is known, and cannot land meanwhile. None while silence
        is not judged yet (:meth:`judge_from_now`)."""
        stale_after = liveness.timeout(self.stale_after)
        if not liveness.judging(self._awake_since, stale_after):
            return []
        return liveness.expire_silent(conn, self._res, self._runs, stale_after, ids,
                                      self._beats.on_its_way if self._beats is not None else None)

    def bound_lock_waits(self, seconds: float, *, per_transaction: bool = False) -> None:
        """PostgreSQL: every session from now (set once, as the pool connects; ``per_transaction``, behind a
        transaction-pooling PgBouncer: set in each transaction, none on the session) waits at most ``seconds`` (or an
        operator's shorter ``lock_timeout``) for a lock another session holds, then raises ``TableLocked``
        (:mod:`~sematic_k8s.store.lockwait`; a server's requests, not its migration). A store
        judging from its start (a server) judges again from then: the beats that waited were held up by it, as by
        its own outage, and a beat sent again queues behind a marking that waited meanwhile."""
        if self.engine.dialect.name == "postgresql":
            lockwait.listen(self.engine, seconds, self._held_up, per_transaction=per_transaction)

    def _held_up(self) -> None:
        """A lock wait past its bound, a write refused by a read-only database: the beats of the resolutions it
        records were refused too, and their resolvers send them again; a store judging from its start (a server)
        judges from now (was: a read-only window past the heartbeat timeout ended every live resolution at its
        end)."""
        if self._awake_since is not None:
            self.judge_from_now()

    def judge_from_now(self) -> None:
        """Judge no Resolution silent (mark none dead, by a sweep, a read or a ``continue``) until this process has
        been up for the heartbeat timeout from now (:func:`liveness.judging`): a server, whose own outage silences the
        drivers that record through it, calls this as it starts."""
        self._awake_since = time.monotonic()

    def tasks_left(self) -> list[str]:
        """The ended Resolutions marked dead whose task copies may still be in storage (:func:`liveness.tasks_left`):
        what the server's sweeper deletes, then clears (:meth:`tasks_gone`)."""
        return self._read(liveness.tasks_left, self._res)

    def tasks_gone(self, resolution_id: str) -> None:
        """Resolution ``resolution_id``'s task copies are deleted (or left for good, said so): no longer
        :meth:`tasks_left`."""
        t = self._res
        with self.engine.begin() as conn:
            guards.hold_write_lock(conn)
            conn.execute(sa.update(t).where(t.c.id == resolution_id, t.c.tasks_left.is_not(None))
                         .values(tasks_left=None))

    def expire_silent(self, ids: Iterable[str] | None = None) -> list[str]:
        """Mark dead every running (or canceling) Resolution, of ``ids`` or all, whose resolving process has not
        heartbeated for ``stale_after`` seconds of the database's clock, and its unfinished runs
        (:func:`liveness.expire_silent`, in a transaction of its own holding the write lock). Returns the ids marked.
        All of them (``ids`` None) are first looked for in a read: a sweep that finds none takes no lock. None while
        silence is not judged yet (:meth:`judge_from_now`). Those marked are told (:meth:`on_expired`) once it
        committed."""
        if not liveness.judging(self._awake_since, liveness.timeout(self.stale_after)):
            return []
        if ids is None:
            ids = self._read(liveness.silent_ids, self._res, liveness.timeout(self.stale_after))
        ids = list(ids)
        if not ids:
            return []
        with self.engine.begin() as conn:
            guards.hold_write_lock(conn)
            marked = self._expire(conn, ids)
        self._tell_expired(marked)
        return marked

    def on_expired(self, tell: Callable[[list[str]], None]) -> Callable[[], None]:
        """Have ``tell(ids)`` called with the ids of the Resolutions this store marks dead, whatever marks them (a
        sweep or a read, :meth:`expire_silent`; a write recording a ``continue``, which marks a silent continuation
        of the same resolution in its own transaction: :func:`guards.refuse_second_continue`): once each, after the
        transaction that marked them committed (never for one rolled back). A server on SQLite tells its live-event
        followers (on PostgreSQL the marking transaction told every server's: :func:`liveness.expire_silent`).
        A ``tell`` that raises is logged, and the read or write that marked them goes on. Returns what stops it."""
        self._told_expired.append(tell)

        def stop() -> None:
            if tell in self._told_expired:
                self._told_expired.remove(tell)

        return stop

    def _tell_expired(self, marked: list[str]) -> None:
        """Tell :meth:`on_expired`'s listeners the Resolutions marked dead by a transaction that committed."""
        if not marked:
            return
        for tell in list(self._told_expired):
            try:
                tell(marked)
            except Exception:  # noqa: BLE001 - a listener's failure (a server's publish): the mark stands
                log.warning("could not tell that resolution(s) %s were marked dead", ", ".join(marked),
                            exc_info=True)
