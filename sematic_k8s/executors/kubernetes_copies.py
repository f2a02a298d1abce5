"""The copies of workers' tasks the Kubernetes executor stores (a task more than a Secret holds is handed over by a
presigned GET of its copy, :func:`~sematic_k8s.executors.remote.task_ref`), and their deletes, off the driver's loop.

A copy no one will read is deleted by a thread of its own (:class:`TaskCopies`), so that storage out of reach holds
that thread, not the loop, for the storage's retry window. At most :data:`PENDING_MAX` deletes wait; a copy past them,
or one whose delete failed (storage refusing it, or out of reach past the retry window: the first failure is logged,
the later ones are counted), is left to the resolution's end. Its end deletes every copy left under the resolution's
folder (:func:`~sematic_k8s.specs.tasks_prefix`), the earlier drivers' too (a driver killed, or restarted, before it
deleted its own: their keys were known to it alone); where that fails, the copies left are noted in one line. An end
no driver records (its last driver killed: the resolution marked dead) is the server's to clean up
(``sematic_k8s_server.copies``). A copy
stored again under a key whose delete waits (the same task presigned within the same second) keeps it: the delete
is dropped, or waited for if it is under way. The executor's close (:meth:`TaskCopies.finish`) or detach
(:meth:`TaskCopies.stop`) stops the thread: a delete retried against storage out of reach ends at its next pause, the
copy left for a resolution's end (the listing of its folder finds it), and the thread is waited for (at most
:data:`STOP_WAIT`): it does not go on, logging, past its owner.
"""

from __future__ import annotations

import logging
import queue
import threading

from sematic_k8s.executors.kubernetes_attempts import KubeStats
from sematic_k8s.retries import RetriesStopped, stopped_by
from sematic_k8s.specs import tasks_prefix
from sematic_k8s.storage.base import Storage, keys
from sematic_k8s.storage.base import delete as storage_delete

log = logging.getLogger("sematic_k8s.k8s")

PENDING_MAX = 1000  # deletes waiting at most: the copies past them are left to the resolution's end
STOP_WAIT = 10.0  # seconds a stop waits for the thread: a pause of S3's own retries under way (<= 8 s) ends first


class TaskCopies:
    """Deletes the stored copies of the tasks of resolution ``root_id`` (known once the executor launches, or from the
    driver's spec), counted in ``stats``."""

    def __init__(self, storage: Storage, stats: KubeStats, root_id: str | None = None) -> None:
        self.storage = storage
        self.stats = stats
        self.root_id = root_id
        self.failed = 0  # deletes that failed (the copy left for the resolution's end)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pending: set[str] = set()  # queued, not yet under way
        self._deleting: str | None = None  # under way
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._halt = threading.Event()  # the thread's retry pauses wait on it (stop, finish)
        self._said = False  # a failure was logged

    def claim(self, key: str) -> None:
        """``key`` is about to be stored (again): a delete of it waiting is dropped, one under way waited for."""
        with self._cond:
            self._pending.discard(key)
            self._cond.wait_for(lambda: self._deleting != key)

    def drop(self, gone: list[str]) -> None:
        """Delete the copies ``gone`` (no one will read them), on the thread."""
        with self._cond:
            if self._stopped:
                return
            for key in gone:
                if key in self._pending:
                    continue
                if len(self._pending) >= PENDING_MAX:
                    self._fail(key, "too many deletes waiting")
                    continue
                self._pending.add(key)
                self._queue.put(key)
            if self._thread is None and self._pending:
                self._thread = threading.Thread(target=self._run, name="task-copies", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """No more deletes (a driver about to be restarted): the ones waiting are tried, a failing one not retried
        (its copy, and those after it, left for the resolution's end), and the thread waited for (:data:`STOP_WAIT`)."""
        with self._cond:
            self._stopped = True
            self._queue.put(None)
        self._end()

    def _end(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(STOP_WAIT)

    def finish(self) -> None:
        """The resolution ended: the deletes waiting are dropped, and every copy left under its folder is deleted,
        from the caller's thread (listing, then deleting each: storage out of reach holds it for the retry window
        once). A listing or a delete that fails is noted in one line, with what is left and where."""
        with self._cond:
            self._stopped = True
            self._pending.clear()
            self._queue.put(None)
        self._end()  # a delete under way, retried, ends: the listing below finds its copy
        if self.root_id is None:
            return
        prefix = tasks_prefix(self.root_id)
        where = getattr(self.storage, "url", type(self.storage).__name__)
        try:
            left = keys(self.storage, prefix)
        except Exception as e:  # noqa: BLE001 - a clean-up: never the resolution's failure
            log.warning("could not list the stored tasks of resolution %s, left in storage under %s of %s: %s",
                        self.root_id, prefix, where, e)
            return
        for i, key in enumerate(left or []):
            if not self._delete(key):
                log.warning("%d stored task(s) of resolution %s left in storage under %s of %s (delete them there)",
                            len(left or []) - i, self.root_id, prefix, where)
                return

    def _run(self) -> None:
        with stopped_by(self._halt):
            self._deletes()

    def _deletes(self) -> None:
        while True:
            key = self._queue.get()
            with self._cond:
                if key is None:
                    return
                if key not in self._pending:  # stored again meanwhile, or the resolution ended
                    continue
                self._pending.discard(key)
                self._deleting = key
            try:
                if not self._delete(key) and self._halt.is_set():
                    return  # stopped: the rest are left too
            finally:
                with self._cond:
                    self._deleting = None
                    self._cond.notify_all()

    def _delete(self, key: str) -> bool:
        """Delete the copy at ``key``; whether it is gone (or the storage cannot delete: it stays)."""
        try:
            if storage_delete(self.storage, key):
                with self._cond:
                    self.stats.tasks_deleted += 1
            return True
        except RetriesStopped:  # its owner closed: said by no one (it is gone), left for the resolution's end
            self.failed += 1
            return False
        except Exception as e:  # noqa: BLE001 - a clean-up: never the run's failure
            self._fail(key, e)
            return False

    def _fail(self, key: str, why: object) -> None:
        """A copy left: the first one logged (naming its run, the key and why), the later ones counted."""
        self.failed += 1
        run = key.split("/")[2] if key.count("/") >= 4 else "?"
        if self._said:
            log.debug("could not delete run %s's stored task %s, left in storage: %s", run, key, why)
            return
        self._said = True
        log.warning("could not delete run %s's stored task %s, left in storage: %s (later failures to delete stored "
                    "tasks are not logged; the resolution's end deletes what is left)", run, key, why)
