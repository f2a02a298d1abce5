"""The server's sweeper: every few seconds, Resolutions whose resolving process (a local loop or a driver) stopped
heartbeating are marked dead (:meth:`sematic_k8s.store.sql.SqlStore.expire_silent`), so that nothing stays "running"
forever and ``continue`` can pick them up. Silence is judged afresh, from the heartbeat timeout on, once the metadata
database answers again after an outage (:meth:`~.dbfailures.Failures.on_back`, as from the server's start): the
drivers' beats could not land meanwhile, and those riding it out would be marked dead. Reads mark them too, and a
``continue`` the continuation it finds silent; the sweeper covers the ones nobody reads. Whatever marks them, the mark
is told: over PostgreSQL by its own transaction's ``NOTIFY`` (:mod:`sematic_k8s.store.notify`, in any process), on
SQLite by the store to the server (``SqlStore.on_expired``), which tells its live-event followers: the sweeper tells
no one itself. After each sweep, the task copies those marked dead (by anyone) left in storage are deleted, off its
thread (:mod:`~sematic_k8s_server.copies`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sematic_k8s import settings
from sematic_k8s.error_records import one_line
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server import dbfailures

log = logging.getLogger("sematic_k8s_server")


def sweep_interval() -> float:
    """A quarter of the heartbeat timeout, between 0.5 and 10 seconds."""
    return min(10.0, max(0.5, settings.heartbeat_timeout() / 4))


class Sweeper:
    """A daemon thread calling ``store.expire_silent()`` every ``interval`` seconds (the Resolutions it marks are
    told by the store: ``SqlStore.on_expired``); ``after()`` called after each sweep that reached the database,
    whatever it marked (the deletes of the task copies the Resolutions marked dead left, by anyone:
    :class:`~sematic_k8s_server.copies.LeftCopies`)."""

    def __init__(self, store: SqlStore, interval: float | None = None,
                 after: Callable[[], None] | None = None) -> None:
        self.store, self.after = store, after
        self.interval = sweep_interval() if interval is None else interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="sk-sweeper")
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def sweep(self) -> list[str]:
        """Mark the silent Resolutions now; their ids."""
        return self.store.expire_silent()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception as e:  # noqa: BLE001 - the database may be down for a while: try again later
                if dbfailures.is_outage(e):  # said once, and its end told (the silence judged afresh from then)
                    dbfailures.of(self.store.engine).failed(e, "sweeping silent resolutions")
                    continue
                orig = getattr(e, "orig", None) or e  # not SQLAlchemy's statement and parameters
                log.warning("sweeping silent resolutions failed: %s: %s", type(orig).__name__, one_line(str(orig)))
                continue
            if self.after is not None:
                self.after()
