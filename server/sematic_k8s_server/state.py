"""The state every endpoint shares, one per app (``app.state.server``): store, storage, settings, auth, events,
reruns."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from typing import Any

from sematic_k8s import settings
from sematic_k8s.storage.base import Storage
from sematic_k8s.store.guards import Replayed
from sematic_k8s.store.notify import resolution_event
from sematic_k8s.store.records import CLAIMED, Batch
from sematic_k8s.store.sql import FAILED, SqlStore
from sematic_k8s_server import auth, db, dbfailures, scopes, verdicts, writes
from sematic_k8s_server.claim_beats import ClaimBeats
from sematic_k8s_server.coalesce import Coalescer
from sematic_k8s_server.config import ServerConfig
from sematic_k8s_server.copies import LeftCopies
from sematic_k8s_server.events import EventBus, RootIndex, StreamSlots, batch_events, told
from sematic_k8s_server.liveness import Sweeper, sweep_interval
from sematic_k8s_server.readiness import Readiness
from sematic_k8s_server.relay import PgRelay
from sematic_k8s_server.reruns import Reruns
from sematic_k8s_server.storages import Storages
from sematic_k8s_server.token_secrets import LeftTokens
from sematic_k8s_server.unstarted import UnstartedDrivers

log = logging.getLogger("sematic_k8s_server")
NOT_RELAYED = (f"${settings.DB_POOLER_ENV}=transaction: live events do not cross server processes (a LISTEN needs a "
               "session of its own, which transaction pooling does not keep): with --workers N or several replicas, "
               "a dashboard follows only the writes of the server process it is connected to (the others' show on a "
               "reload); for all of them live, run one server process, or connect through PostgreSQL itself or a "
               "session-pooling PgBouncer (the setting unset)")


class Server:
    """What the endpoints share: the store, artifact storage, settings, auth, live events, rerun launching."""

    def __init__(self, store: SqlStore, storage: Storage, config: ServerConfig, authenticator: auth.Authenticator,
                 reruns: Reruns, self_url: str | None) -> None:
        self.store, self.storage, self.config, self.auth = store, storage, config, authenticator
        self.reruns, self.self_url = reruns, self_url
        self.storages = Storages(storage, config.allowed_storages)  # where recorded artifacts and logs may be read
        self.bus = EventBus()
        self.streams = StreamSlots(config.max_streams_per_key)  # live-event streams open, by API key
        # over PostgreSQL, events go through the database: every process (uvicorn workers, replicas) sees them all;
        # not behind PgBouncer's transaction pooling, whose server sessions keep no LISTEN: each process's its own
        relayed = store.engine.dialect.name == "postgresql" and not db.transaction_pooled()
        self.relay = PgRelay(store.engine, self.bus) if relayed else None
        self.roots = RootIndex()
        self.known = scopes.Known()  # what the write checks read of owners (scopes.check_batch)
        # SQLite allows one writer: serialize writes here rather than make clients wait on busy_timeout
        sqlite = store.engine.dialect.name == "sqlite"
        self.write_lock: Any = threading.Lock() if sqlite else contextlib.nullcontext()
        every = sweep_interval()
        self.copies = LeftCopies(store, self.storages, every=every)  # task copies left by resolutions marked dead
        launches = config.reruns  # token Secrets left by cut launches: in the rerun namespace, and those configured
        rerun_ns = [launches.executor_settings.get("namespace")] if launches.launcher == "kubernetes" else []
        swept = rerun_ns + list(config.token_sweep_namespaces)
        self.tokens = LeftTokens(store, swept, rerun_ns) if swept else None
        self.sweeper = Sweeper(store, every, after=self._swept)
        # driver containers its Docker launches left created, never started (a server killed mid-launch)
        self.unstarted = UnstartedDrivers(store) if launches.launcher == "docker" else None
        self.claim_beats = ClaimBeats(store)  # the rerun claims this process launches, beaten until each launch ends
        # every resolution marked dead in this process (the sweeper's, a read's, a continue's), told once committed
        self._unheard = store.on_expired(self._expired)
        self.writes: Coalescer[Batch, set[str]] = Coalescer(self.write_many)  # one writer per process
        # credentials checked again by requests that stay open (live events): those waiting share one query
        self.credentials: Coalescer[str | None, auth.Principal] = Coalescer(authenticator.authenticate_many, calls=2)
        self.readiness = Readiness(store.engine)

    def start(self) -> None:
        """Start the background work: the sweeper of silent resolutions (and of the task copies those marked dead
        left), the events listener. No resolution is
        judged silent before the server has been up for the heartbeat timeout (``SqlStore.judge_from_now``): a
        silence that began before it started may be its own outage, which the drivers ride out."""
        self.store.judge_from_now()
        dbfailures.of(self.store.engine).on_back(self.store.judge_from_now)  # so after its database's outage
        self.sweeper.start()
        if self.relay is not None:
            self.relay.start()
        elif self.store.engine.dialect.name == "postgresql":  # behind transaction pooling: said once, at the start
            log.warning("%s", NOT_RELAYED)

    def _swept(self) -> None:
        """After each sweep: the task copies, the token Secrets and the Docker driver containers left unstarted are
        looked for, each on its own thread."""
        self.copies.wake()
        if self.tokens is not None:
            self.tokens.wake()
        if self.unstarted is not None:
            self.unstarted.wake()

    def stopping(self) -> None:
        """A signal asked the server to stop: live event streams end, and it is no longer ready."""
        self.readiness.stopping = True
        self.bus.end()

    def close(self) -> None:
        """Stop the background work."""
        self.reruns.close()
        self.claim_beats.stop()
        self.sweeper.stop()
        self._unheard()
        self.copies.stop()
        if self.tokens is not None:
            self.tokens.stop()
        if self.unstarted is not None:
            self.unstarted.stop()
        if self.relay is not None:
            self.relay.stop()
        self.readiness.close()

    def publish(self, events: list[dict[str, Any]]) -> None:
        """Tell live-event subscribers (of every server process) what changed."""
        if self.relay is None:
            if events and self.bus.active:
                self.bus.publish(events)
            return
        self.relay.publish(events)  # sent by its thread (a failure is logged there)

    def resolution_changed(self, res_id: str, state: str | None) -> None:
        """Tell live-event subscribers that resolution ``res_id`` changed outside :meth:`write` (a cancel, the claim
        of a rerun noted or ended); ``state``: its state now."""
        self.publish([resolution_event(res_id, state)])

    def claim(self, batch: Batch) -> None:
        """Record the claim of a rerun (``Reruns.claim``: its resolution ``created`` before its driver is launched),
        told live once its transaction committed, as a write's new resolution is: the list shows its row at once,
        before its launch notes anything. A refused claim (``ContinuedAlready``) raises, and tells nothing."""
        with self.write_lock:
            self.store.write(batch)
        self.publish(batch_events(batch, self.root_of))

    def note_claim(self, res_id: str, waiting: str | None) -> None:
        """Note on the claim of a rerun what its driver's launch waits for (None: no more; ``SqlStore.note_claim``),
        told live while it is still claimed: the list and its page show it without a reload."""
        with self.write_lock:
            noted = self.store.note_claim(res_id, waiting)
        if noted:
            self.resolution_changed(res_id, CLAIMED)

    def end_claim(self, res_id: str, error: str, *, unpooled: bool = False) -> None:
        """Record failed, with ``error``, the claim of a rerun whose driver could not be started
        (``SqlStore.end_claim``), told live if it was still claimed. ``unpooled``: through the claim beats
        (:meth:`~.claim_beats.ClaimBeats.end_claim`: over PostgreSQL, connections of their own; on SQLite the
        requests' store), not the requests' pool, which may be what failed, and beaten no more."""
        with self.write_lock:
            ended = (self.claim_beats.end_claim if unpooled else self.store.end_claim)(res_id, error)
        if ended:
            self.resolution_changed(res_id, FAILED)

    def _expired(self, ids: list[str]) -> None:
        """Resolutions ``ids`` were marked dead in this process (``SqlStore.on_expired``: by the sweeper, a read, the
        transaction of a ``continue`` that found its earlier continuation silent), committed: each told live once, in
        its state now (failed; canceled, when a cancel had been asked), to this process's followers. Over PostgreSQL
        the transaction that marked them told them already, to every server process's followers, as it does in any
        process marking them (:mod:`sematic_k8s.store.notify`): nothing more to tell."""
        log.warning("resolution(s) %s: the resolver (or the server launching the rerun) stopped responding; marked "
                    "dead", ", ".join(ids))
        if self.relay is not None or not self.bus.active:
            return
        events = []
        for res_id in ids:
            res = self.store.get_resolution(res_id)
            if res is not None:
                events.append(resolution_event(res_id, res.state))
        self.publish(events)

    def write(self, batch: Batch) -> set[str]:
        """Record ``batch`` and tell live-event subscribers what changed; the ids of the resolutions whose failed end
        it holds and recorded canceled (``SqlStore.write``'s ``canceled``: its writer is told). Heartbeats are
        stamped with the database's clock (the one its sweeper, and every reader, judges them with), whatever the
        client's says."""
        result = self.write_many([batch])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def write_many(self, batches: list[Batch]) -> list[BaseException | set[str]]:
        """:meth:`write` for each of ``batches`` (those of concurrent requests), in as few transactions as
        gives each the result it would have had alone (:mod:`~sematic_k8s_server.writes`); each one's error, or
        what :meth:`write` returns for it. A batch applied already (a retried request's first attempt landing late)
        is answered as written (what its first attempt recorded canceled too), and tells subscribers nothing (its
        events would set what they show back)."""
        conflicts: set[str] = set()
        canceled: set[str] = set()  # failed ends recorded canceled: a cancel accepted before them (told so)
        with self.write_lock:
            results = writes.write_all(functools.partial(self.store.write, conflicts=conflicts, canceled=canceled),
                                       batches)
        for artifact_id in sorted(conflicts):  # rare: a record written ahead, or a hostile one after the true one
            verdicts.settle(self.store, self.storage, artifact_id,
                            [b.artifacts[artifact_id] for b in batches if artifact_id in b.artifacts], self.write_lock)
        written = [b for b, result in zip(batches, results, strict=True) if result is None]
        answers = [_canceled_ends(b, canceled) if result is None or isinstance(result, Replayed) else result
                   for b, result in zip(batches, results, strict=True)]
        for batch in written:
            self.roots.learn(batch)
        if written and self.config.api_keys_required:  # local mode checks no owners
            self.known.written(self.store, written)
        if self.relay is None and not self.bus.active:
            return answers
        unknown = {r for b in written for r, f in b.run_updates.items() if told(f) and self.roots.get(r) is None}
        if unknown:
            for run_id, root in scopes.roots_of(self.store, unknown).items():  # one query, not one per run
                self.roots.put(run_id, root)
        self.publish([event for batch in written for event in batch_events(batch, self.root_of, canceled)])
        return answers

    def root_of(self, run_id: str) -> str | None:
        root = self.roots.get(run_id)
        if root is None:
            run = self.store.get_run(run_id)
            if run is not None:
                root = run.root_id
                self.roots.put(run_id, root)
        return root


def _canceled_ends(batch: Batch, canceled: set[str]) -> set[str]:
    """Of the resolutions ``canceled`` (their failed end recorded canceled by the writes of concurrent requests), those
    whose failed end ``batch`` holds: what its writer is told (one batch of a merged group changes a resolution's
    state, :func:`~sematic_k8s_server.writes.groups`; another one's, sent again, was recorded the same way)."""
    return {r for r, fields in batch.resolution_updates.items() if r in canceled and fields.get("state") == FAILED}
