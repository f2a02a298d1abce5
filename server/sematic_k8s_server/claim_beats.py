"""The beats of the rerun claims this server process holds: from its claim until its driver's launch ends, a claim
names its holder (``held_by``: this process, :func:`holder_id`) and the holder stamps its heartbeat every
:func:`~sematic_k8s.store.liveness.holder_beat` seconds ($SEMATIC_K8S_HEARTBEAT_INTERVAL, at most a quarter of the
heartbeat timeout), on a thread of its own (a launch waiting on a slow Kubernetes API or an image
does not hold it). A holder killed (kill -9) or stopped mid-launch goes silent: any replica's sweeper, or a read,
marks the claim failed once :func:`~sematic_k8s.store.liveness.holder_silence` passed, "the server that was launching
this rerun stopped (last heard ...): re-run it", on the database's clock. A stopped holder that comes back finds the
claim ended at its launch's next read of it (right before the Job's create, and after it): no driver.

Each server process (``--workers``, replicas) is a holder of its own and beats only its own claims."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from sematic_k8s import settings
from sematic_k8s.error_records import one_line
from sematic_k8s.store import liveness
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server import db

log = logging.getLogger("sematic_k8s_server")
FALLBACK_BEAT = settings.DEFAULT_HEARTBEAT_INTERVAL  # seconds between beats, the last resort (ClaimBeats._fallback)
_ids: dict[int, str] = {}  # pid -> holder id: a forked process is a holder of its own


def holder_id() -> str:
    """This process's name as a claim's holder: its host, pid and a random part (64 characters at most)."""
    pid = os.getpid()
    if pid not in _ids:
        _ids[pid] = f"{socket.gethostname()[:32]}:{pid}:{uuid.uuid4().hex[:12]}"
    return _ids[pid]


class ClaimBeats:
    """Beats the claims this process holds (:meth:`hold` to :meth:`launched` or :meth:`let_go`), on a daemon thread
    started with the first hold. Its writes go to the store, not through the server's write lock: on SQLite a beat
    waiting for the database's lock is known to be on its way (:mod:`sematic_k8s.store.inflight`), not one waiting
    behind the server's other writes."""

    def __init__(self, store: SqlStore, every: float | None = None) -> None:
        self.store = _own(store)
        beat = liveness.holder_beat(liveness.timeout(store.stale_after)) if every is None else every
        self.every = max(liveness.MIN_HOLDER_BEAT, beat)  # never a spinning thread (nan: the least too)
        self._held: set[str] = set()
        self._started: set[str] = set()  # held claims whose driver started, its let-go not recorded yet (:meth:`beat`)
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False  # its last beat failed (logged once until one lands)
        self._shared = store

    @property
    def holder(self) -> str:
        return holder_id()

    def hold(self, res_id: str) -> None:
        """This process is about to claim ``res_id`` and launch its driver: beaten from now on."""
        with self._guard:
            self._held.add(res_id)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, daemon=True, name="sk-claim-beats")
                self._thread.start()

    def launched(self, res_id: str) -> None:
        """Its driver is started: the claim held no more (its driver's grace counts from now), beaten no more once
        that is recorded. A record that failed (the database out of reach a moment) is made again at each beat, the
        claim beaten meanwhile: never left held and silent, failed as its holder's (its driver started)."""
        if not self._let_go_of(res_id, said=False):
            with self._guard:
                if res_id in self._held:
                    self._started.add(res_id)

    def let_go(self, res_id: str) -> None:
        """Its launch ended otherwise (failed, canceled: recorded so): beaten no more."""
        with self._guard:
            self._held.discard(res_id)
            self._started.discard(res_id)

    def end_claim(self, res_id: str, error: str) -> bool:
        """Record the claim ``res_id`` failed with ``error`` (``SqlStore.end_claim``) through the beats' store: not
        the requests' pool (its connections all in use by slower requests: the end would wait as long again for one,
        and likely get none); whether it was still claimed. Beaten no more either way (:meth:`let_go`)."""
        try:
            return self.store.end_claim(res_id, error)
        finally:
            self.let_go(res_id)
            if self._stop.is_set():  # the beats stopped (the server's close): the connection it opened, closed again
                self._close()

    def _let_go_of(self, res_id: str, *, said: bool = True) -> bool:
        """Record that the claim ``res_id`` is held no more (a claim ended meanwhile, or not this holder's: nothing
        to record), then beat it no more; whether it was recorded. A failure is logged unless ``said`` already. Once
        the beats stopped (:meth:`stop`: their own store closed), a launch still running past the stop records it all
        the same (its driver started: never failed as its holder's), and the connection that opened is closed again,
        not left open until the process exits."""
        try:
            self.store.let_go_of_claim(res_id, self.holder)
        except Exception as e:  # noqa: BLE001 - the store: tried again at the next beat, the claim beaten meanwhile
            if not said:
                log.warning("rerun %s: could not record that its driver started (tried again at each beat): %s",
                            res_id, one_line(str(getattr(e, "orig", None) or e)))
            return False
        finally:
            if self._stop.is_set():  # stopped meanwhile, maybe after the store was closed: closed again
                self._close()
        self.let_go(res_id)
        return True

    def beat(self) -> None:
        """Record the let-go of the claims whose driver started (:meth:`launched`) where it failed, then beat the
        claims held now."""
        with self._guard:
            started = list(self._started)
        for res_id in started:
            self._let_go_of(res_id)
        with self._guard:
            held = list(self._held)
        if held:
            self.store.beat_claims(self.holder, held)

    def _run(self) -> None:
        while True:
            waited = False
            try:
                if self._stop.wait(self.every):
                    return
                waited = True
                self.beat()
            except Exception as e:  # noqa: BLE001 - the database may be down a while: beaten again next time; a
                # period no wait takes (inf: OverflowError) is the default's from now on. Never the thread's end:
                # its claims would go silent and be failed as their holder's though it lives
                if not self._failing:
                    orig = getattr(e, "orig", None) or e
                    log.warning("beating the rerun claims this process holds failed: %s: %s", type(orig).__name__,
                                one_line(str(orig)))
                self._failing = True
                if not waited:
                    self.every = self._fallback()
                continue
            self._failing = False

    def _fallback(self) -> float:
        """The period of beats when the one given cannot be waited: the settings' for this store's heartbeat
        timeout, else :data:`FALLBACK_BEAT` (also when the settings' is no wait's either: past
        ``threading.TIMEOUT_MAX``, inf or finite)."""
        try:
            beat = liveness.holder_beat(liveness.timeout(self.store.stale_after))
        except Exception:  # noqa: BLE001 - a setting refused (said at the server's start): the default's
            return FALLBACK_BEAT
        return beat if beat <= threading.TIMEOUT_MAX else FALLBACK_BEAT  # inf too; finite past it raises as inf

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._close()

    def _close(self) -> None:
        """Close the beats' own store's connections (none over SQLite: the requests' store is the server's to close)."""
        if self.store is not self._shared:
            self.store.engine.dispose()


OWN_CONNECTIONS = 2  # of a PostgreSQL server's claim beats: a beat and a let-go at once, never the requests' pool


def _own(store: SqlStore) -> SqlStore:
    """The store the beats write through: over PostgreSQL, one of their own on the same database, of
    :data:`OWN_CONNECTIONS` connections (made when first used), its lock waits bounded as the requests' are. Not the
    requests' pool: all its connections in use by slow requests, a beat waited up to $SEMATIC_K8S_DB_POOL_TIMEOUT
    for one, 4 of them (the holder's silence, 20 s) then went unstamped and a live holder's claims were failed as
    "the server stopped". (The other way, a holder's silence longer than a pool wait plus a lock wait, would have
    every holder that did stop found out that much later.) SQLite's beats share its one writer's file as before."""
    if store.engine.dialect.name != "postgresql":
        return store
    own = SqlStore(store.url, create=False, stale_after=store.stale_after, pool_size=OWN_CONNECTIONS,
                   max_overflow=0, pool_pre_ping=True, pool_timeout=settings.db_pool_timeout(), **db.pooler_options())
    db.bound_lock_waits(own)
    return own
