"""The driver's read of its own Job (the owner of its workers' Jobs), every ``owner_check`` seconds, off its loop.

Deleted (or another Job of its name) while the driver runs, that Job was deleted without its pod, which nothing would
restart or clean up after: :class:`~sematic_k8s.errors.DriverJobDeleted`, so the resolution ends and its workers'
Jobs are deleted. The read is made by a daemon thread of its own, one at a time (:class:`OwnerCheck`), so that a
Kubernetes API that does not answer holds that thread for the read's tries (3 x $SEMATIC_K8S_KUBE_TIMEOUT), not the
loop (its watch events, its workers' ends, a cancel, its launches); the loop takes the read's result on its next pass
(a read ended by what is not an Exception too: a failed read, and the next one is made).
A read that fails is said at debug level, and once per outage in a warning when the reads have failed for
:data:`OWNER_UNREAD` seconds, then once when the Job is read again (by the loop, never by the thread). The executor's
close or detach (:meth:`OwnerCheck.stop`) waits for a read under way :data:`STOP_WAIT` seconds at most: one held by a
silent API is left to its deadline, neither said nor tried again (:func:`~sematic_k8s.retries.stopped_by`).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass

from kubernetes.client.exceptions import ApiException

from sematic_k8s.errors import DriverJobDeleted
from sematic_k8s.executors.kubernetes_attempts import KubeStats
from sematic_k8s.k8s.client import Backoff, NamespacedApi, api_message
from sematic_k8s.retries import RetriesStopped, pause, stopped_by

log = logging.getLogger("sematic_k8s.k8s")
OWNER_UNREAD = 60.0  # seconds the reads of the driver's own Job may fail before it is said (once per outage)
STOP_WAIT = 2.0  # seconds a stop waits for a read under way (one the API answers ends well within)


@dataclass(frozen=True)
class Read:
    """One read of the driver's Job ``name``, begun at ``began``: the uid found (None: not found, 404), or why it
    could not be read (``failed``)."""

    name: str
    began: float
    uid: str | None = None
    failed: str | None = None


class OwnerCheck:
    """Reads the driver's own Job every ``every`` seconds on a thread (:meth:`check`), through ``kube`` with
    ``backoff`` (its pauses end at :meth:`stop`), counted in ``stats.owner_reads``."""

    def __init__(self, kube: NamespacedApi, every: float, backoff: Backoff, stats: KubeStats) -> None:
        self.kube, self.every, self.stats = kube, every, stats
        self.backoff = dataclasses.replace(backoff, sleep=pause)  # on the thread: wait on its stop flag
        self.checked = time.monotonic()  # when the last read began
        self.gone = False  # found deleted (DriverJobDeleted): its pods are left to the driver to delete
        self.unread: float | None = None  # when the reads began failing (if they do)
        self.said = False  # that outage was said (OWNER_UNREAD)
        self._reading = False  # a read is under way, or its result not yet taken
        self._results: queue.Queue[Read] = queue.Queue()
        self._halt = threading.Event()  # set by stop(): the thread's pauses end, its failures are not said
        self._thread: threading.Thread | None = None

    def check(self, owner: tuple[str, str] | None, now: float) -> None:
        """Take the result of the read that ended, if any (DriverJobDeleted when ``owner``, (name, uid), is deleted or
        replaced), and begin the next read once ``every`` seconds passed since the last one began and none is under
        way."""
        if owner is None:
            return
        try:
            read = self._results.get_nowait()
        except queue.Empty:
            pass
        else:
            self._reading = False
            self._judge(read, owner[1])
        if self._reading or self._halt.is_set() or now - self.checked < self.every:
            return
        self.checked, self._reading = now, True
        self.stats.owner_reads += 1
        self._thread = threading.Thread(target=self._read, args=(owner[0], now), name="sk-owner-read", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """No more reads: one under way is waited for :data:`STOP_WAIT` seconds at most, then left (its result and its
        failure untold: a held try ends at its deadline and is not tried again)."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(STOP_WAIT)

    def _read(self, name: str, began: float) -> None:
        """The thread: read Job ``name`` (its tries), its :class:`Read` to the loop, which takes it and may read
        again: one whatever ends the read (a failure that is not an Exception too, a SystemExit or an interrupt, told
        as an Exception's is, then raised on), but when stopped (then no one takes it)."""
        read: Read | None = None
        try:
            read = self._tried(name, began)
        except BaseException as e:
            read = Read(name, began, failed=f"{type(e).__name__}: {e}")
            raise
        finally:
            if read is not None:
                self._results.put(read)

    def _tried(self, name: str, began: float) -> Read | None:
        """Read Job ``name`` (its tries): the uid found (None: not found), why it failed, or None when stopped."""
        with stopped_by(self._halt):
            try:
                job = self.kube.read_job(name, self.backoff)
            except RetriesStopped:  # stopped: no one takes it
                return None
            except ApiException as e:
                if e.status != 404:  # busy, or not allowed: the watches go on; asked again later
                    return Read(name, began, failed=f"{e.status} {api_message(e)}")
                job = None
            except Exception as e:  # noqa: BLE001 - unreachable for now: said once if it lasts (_unread)
                return Read(name, began, failed=f"{type(e).__name__}: {e}")
        uid = job.metadata.uid if job is not None and job.metadata is not None else None
        return Read(name, began, uid=uid)

    def _judge(self, read: Read, uid: str) -> None:
        """The loop takes ``read``: a failure said as :meth:`_unread` says it; the Job read again said if its outage
        was; not found, or another uid than ``uid``: DriverJobDeleted."""
        if read.failed is not None:
            self._unread(read)
            return
        if self.said:
            log.warning("the driver's Job %s is read again, after %.0f s: a deletion of it is found again", read.name,
                        time.monotonic() - (self.unread or read.began))
        self.unread, self.said = None, False
        if read.uid != uid:
            self.gone = True
            raise DriverJobDeleted(
                f"the driver's Job {read.name} was deleted while the driver ran: this driver stops, and its workers' "
                "Jobs and its own pod are deleted (a delete that left its pod running, kubectl delete "
                "--cascade=orphan, ends it too)")

    def _unread(self, read: Read) -> None:
        """The read failed: at debug level, but once per outage in a warning when the reads have failed for
        :data:`OWNER_UNREAD` seconds (the driver goes on: its watches, its runs)."""
        log.debug("reading the driver's Job %s: %s", read.name, read.failed)
        self.unread = read.began if self.unread is None else self.unread
        failing = time.monotonic() - self.unread
        if not self.said and failing >= OWNER_UNREAD:
            self.said = True
            log.warning("the driver's Job %s could not be read for %.0f s (%s): a deletion of it is not found until "
                        "the Kubernetes API answers; the driver goes on", read.name, failing, read.failed)
