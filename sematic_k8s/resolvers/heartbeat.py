"""A resolving process's heartbeat: ``heartbeat_at`` on its Resolution, carried by the loop's own batches
and, while the loop is busy or idle (a long inline func, a wait on workers), written by a timer thread every
$SEMATIC_K8S_HEARTBEAT_INTERVAL seconds. The store stamps each beat with the database's clock, not this process's
(:mod:`sematic_k8s.store.dbclock`). A Resolution whose heartbeat stops for $SEMATIC_K8S_HEARTBEAT_TIMEOUT seconds is
marked dead by the server and by any reader (:meth:`sematic_k8s.store.sql.SqlStore.expire_silent`).

The same thread writes the loop's pending records for it while the loop runs a func body on its own thread (the
LocalResolver's default, ``max_parallelism=1``) for longer than ``lag`` seconds: the run and its parents are then
seen as running (``runs list``, the dashboard, ``logs --follow``), not only once the body returns. And it calls the
loop's ``watch`` every ``watch_every`` seconds: the loop's look, while it runs a body, for a cancel that should
interrupt that body (:mod:`sematic_k8s.executors.interrupts`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sematic_k8s import settings
from sematic_k8s.errors import ResolutionEnded
from sematic_k8s.store.base import Store
from sematic_k8s.store.records import Batch, utcnow

log = logging.getLogger("sematic_k8s")


class Heartbeat:
    """Beats for Resolution ``root_id`` in ``store`` until stopped."""

    def __init__(self, store: Store, root_id: str, interval: float | None = None, *,
                 fence: dict[str, int] | None = None, flush: Callable[[], None] | None = None,
                 lag: float = 0.5, watch: Callable[[], None] | None = None, watch_every: float = 1.0) -> None:
        self.store, self.root_id = store, root_id
        self.fence = {} if fence is None else fence  # the loop's (Recorder.fence): its beats are fenced the same
        self.interval = settings.heartbeat_interval() if interval is None else interval
        self.last = time.monotonic()
        self.flush, self.lag = flush, lag  # writes the loop's pending records; how long a busy loop may hold them
        self.watch = watch
        # how long this thread sleeps at most: its beats, the busy loop's records, the watch
        self.tick = min(lag if flush is not None else self.interval,
                        watch_every if watch is not None else self.interval)
        self._busy_since: float | None = None  # when the loop went into a func body on its own thread
        self._busy_lock = threading.Lock()  # held while this thread flushes: the loop waits for it to come back
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self) -> bool:
        """Whether the next batch should carry a beat (half an interval since the last)."""
        return time.monotonic() - self.last >= self.interval / 2

    def carry(self, batch: Batch) -> None:
        """Add a beat to ``batch`` (the loop's next write)."""
        batch.resolution_updates.setdefault(self.root_id, {})["heartbeat_at"] = utcnow()
        self.last = time.monotonic()

    def busy(self) -> None:
        """The loop is about to run a func body on its own thread: its records stay unwritten meanwhile."""
        self._busy_since = time.monotonic()

    def back(self) -> None:
        """The loop is back from the body (once this thread's flush of its records, if one is under way, ended).
        A Ctrl-C while it waits for that flush is raised once the flush ended: the loop then aborts, writing the same
        batch, which it may not do while this thread writes it."""
        interrupted: KeyboardInterrupt | None = None
        while True:
            try:
                self._busy_lock.acquire()
                break
            except KeyboardInterrupt as e:  # a lock's wait is interrupted by signals: wait on
                interrupted = e
        try:
            self._busy_since = None
        finally:
            self._busy_lock.release()
        if interrupted is not None:
            raise interrupted

    def _flush_for_busy_loop(self) -> None:
        """Write the loop's pending records once it has been in one body for ``lag`` seconds (once per body)."""
        since = self._busy_since
        if self.flush is None or since is None or time.monotonic() - since < self.lag:
            return
        with self._busy_lock:
            if self._busy_since != since:
                return  # back meanwhile: the loop writes its records itself
            self._busy_since = None  # once for this body: nothing more is recorded until it returns
            try:
                self.flush()
            except Exception as e:  # noqa: BLE001 - the loop keeps its batch and meets the same error when it writes
                log.warning("resolution %s: records not written while a func runs: %s: %s", self.root_id,
                            type(e).__name__, e)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"sk-heartbeat-{self.root_id[:8]}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(max(0.05, min(self.last + self.interval - time.monotonic(), self.tick))):
            self._flush_for_busy_loop()
            if self.watch is not None:
                try:
                    self.watch()
                except Exception as e:  # noqa: BLE001 - a look that failed: the next tick looks again
                    log.warning("resolution %s: could not look for a cancel: %s: %s", self.root_id,
                                type(e).__name__, e)
            if time.monotonic() - self.last < self.interval:
                continue  # the loop's own batches carried one
            try:
                self.store.write(Batch(resolution_updates={self.root_id: {"heartbeat_at": utcnow()}},
                                       fence=dict(self.fence)))
            except ResolutionEnded as e:
                # marked dead, or taken over by another driver (DriverReplaced), meanwhile: ``last`` stays as it was,
                # so the loop's next write carries a beat (that write, refused the same way, stops the loop; none of
                # its runs' updates lands)
                log.warning("%s", e)
                return
            except Exception as e:  # noqa: BLE001 - an outage the store already rode out: beat again later
                log.warning("resolution %s: heartbeat not recorded: %s: %s", self.root_id, type(e).__name__, e)
            self.last = time.monotonic()  # after the write: until it lands, the loop's own writes carry beats
