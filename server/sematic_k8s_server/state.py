"""The state every endpoint shares, one per app (``app.state.server``): store, storage, auth, events, reruns."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from sematic_k8s.graph import CANCELED, FAILED, RESOLVED
from sematic_k8s.storage.base import Storage
from sematic_k8s.store.records import Batch, ResolutionRecord, utcnow
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server import auth
from sematic_k8s_server.events import EventBus, RootIndex, batch_events
from sematic_k8s_server.liveness import Sweeper
from sematic_k8s_server.reruns import RerunLauncher, RerunRequest
from sematic_k8s_server.storages import Storages


class Server:
    """What the endpoints share: the store, artifact storage, auth, live events, rerun launching."""

    def __init__(self, store: SqlStore, storage: Storage, authenticator: auth.Authenticator,
                 launcher: RerunLauncher | None, self_url: str | None) -> None:
        self.store, self.storage, self.auth = store, storage, authenticator
        self.launcher, self.self_url = launcher, self_url
        self.storages = Storages(storage)  # where recorded artifacts and logs may be read (create_app: allow-list)
        self.bus = EventBus()
        self.roots = RootIndex()
        # SQLite allows one writer: serialize writes here rather than make clients wait on busy_timeout
        sqlite = store.engine.dialect.name == "sqlite"
        self.write_lock: Any = threading.Lock() if sqlite else contextlib.nullcontext()
        self.sweeper = Sweeper(store, self._expired)

    def close(self) -> None:
        """Stop the background work (the sweeper of silent resolutions)."""
        self.sweeper.stop()

    def _expired(self, ids: list[str]) -> None:
        events = []
        for res_id in ids:
            res = self.store.get_resolution(res_id)
            if res is not None:
                events.append({"type": "resolution", "id": res_id, "root_id": res_id, "state": res.state})
        if events and self.bus.active:
            self.bus.publish(events)

    def write(self, batch: Batch) -> None:
        """Record ``batch`` and tell live-event subscribers what changed. Heartbeats are stamped with this
        server's clock (the one its sweeper compares them with), whatever the client's says."""
        now = utcnow()
        for fields in [*batch.resolution_updates.values(), *batch.new_resolutions]:
            if fields.get("heartbeat_at") is not None:
                fields["heartbeat_at"] = now
        with self.write_lock:
            self.store.write(batch)
        self.roots.learn(batch)
        if self.bus.active:
            self.bus.publish(batch_events(batch, self.root_of))

    def root_of(self, run_id: str) -> str | None:
        root = self.roots.get(run_id)
        if root is None:
            run = self.store.get_run(run_id)
            if run is not None:
                root = run.root_id
                self.roots.put(run_id, root)
        return root

    def rerun_failed(self, request: RerunRequest, message: str) -> None:
        """A rerun process ended badly: make sure its resolution says so."""
        res = self.store.get_resolution(request.new_id)
        batch = Batch()
        if res is None:
            batch.add_resolution(ResolutionRecord(
                id=request.new_id, root_func_path=request.root_func_path, state=FAILED, rerun_of=request.rerun_of,
                settings={"kind": "local", "rerun_of": request.rerun_of, "rerun_from": request.rerun_from,
                          "rerun_mode": request.mode},
                error=message, created_at=utcnow(), ended_at=utcnow()))
        elif res.state not in (RESOLVED, FAILED, CANCELED):
            batch.resolution_updates[request.new_id] = {"state": FAILED, "error": message, "ended_at": utcnow()}
        if batch:
            self.write(batch)
