"""The copies of workers' tasks left by resolutions whose end no driver recorded, deleted by the server.

A Kubernetes driver stores the task of a worker too large for a Secret under ``tasks/<resolution>/``
(:func:`~sematic_k8s.specs.tasks_prefix`) and deletes that folder when it records the resolution's end. A resolution
marked dead instead (its last driver killed: the sweeper, a read or a ``continue`` marked it,
:func:`~sematic_k8s.store.liveness.expire_silent`) is recorded with its copies left (``tasks_left``); after each sweep
:class:`LeftCopies` deletes them on a thread of its own (storage out of reach holds that thread, never the sweeper's),
then clears the mark. A resolution marked dead has ended for good (a ``continue`` or a rerun is a resolution of its
own, with a folder of its own): no driver stores copies there again.

Only a storage the server may use is touched: its default or one on its allow-list (:class:`~.storages.Storages`),
never one a record names otherwise; a resolution whose storage is not one of them is logged in one line, its copies
left there for good. A listing or a delete that fails leaves the mark, said once per resolution (and way of failing)
until it succeeds: storage out of reach past its retry window (an outage, which passes by itself) is tried again at
the next sweep; storage that refuses (:func:`refused`: no s3:ListBucket or s3:DeleteObject, credentials refused, a
directory the server may not write) is tried again after 1, 2, 4 ... sweeps, at least every :data:`MAX_BACKOFF`
seconds (in this process's memory: a server restarted tries at its first sweep), its line saying what to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from sematic_k8s.error_records import one_line
from sematic_k8s.specs import tasks_prefix
from sematic_k8s.storage.base import delete as storage_delete
from sematic_k8s.storage.base import keys
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server.storages import ALLOW_ENV, SHOWN_URL, StorageNotAllowed, Storages
from sematic_k8s_server.woken_pass import WokenPass

log = logging.getLogger("sematic_k8s_server")

COPIES_EXECUTOR = "kubernetes"  # the executor whose drivers store copies of workers' tasks
ID = re.compile(r"[0-9a-f]{1,64}")  # a resolution id the API takes: its folder is tasks/<id>/, nothing else
MAX_BACKOFF = 3600.0  # seconds: a storage refusing a resolution's copies is tried again at least this often


def refused(e: BaseException) -> bool:
    """Whether a listing's or delete's failure ``e`` is storage refusing, which does not pass by itself (a permission
    missing, credentials refused: an error naming its ``fix``, a ``PermissionError``), rather than storage out of
    reach (an outage: tried again at the next sweep)."""
    return isinstance(e, PermissionError) or bool(getattr(e, "fix", ""))


@dataclass
class Backoff:
    """A resolution whose storage refused its copies: ``refusals`` in a row, ``skip`` the sweeps left before the next
    try."""

    refusals: int = 0
    skip: int = 0


class LeftCopies(WokenPass):
    """Deletes the task copies of the resolutions :meth:`SqlStore.tasks_left` names, on a daemon thread woken by
    :meth:`wake` (the sweeper's, after each sweep, every ``every`` seconds: a refusal's backoff is at most
    :data:`MAX_BACKOFF` seconds of them)."""

    thread_name = "sk-left-copies"

    def __init__(self, store: SqlStore, storages: Storages, *, every: float) -> None:
        self.store, self.storages = store, storages
        self.most_skipped = max(1, round(MAX_BACKOFF / every))  # sweeps
        super().__init__()
        # resolutions whose failure to delete was logged, and whether as refused (once until it succeeds, or fails
        # the other way)
        self._said: dict[str, bool] = {}
        self.backoffs: dict[str, Backoff] = {}  # the resolutions whose storage refused, waiting for their next try

    def failed(self, e: Exception) -> None:
        orig = getattr(e, "orig", None) or e  # the database may be down for a while: the next sweep tries again
        log.warning("looking for the task copies of dead resolutions failed: %s: %s", type(orig).__name__,
                    one_line(str(orig)))

    def sweep(self) -> list[str]:
        """Delete the copies of every resolution marked with copies left; the ids whose copies are gone. A storage
        that failed is not tried again in this pass (its other resolutions wait for the next)."""
        done, failed = [], set()
        left = self.store.tasks_left()
        for kept in (self.backoffs, self._said):  # of a resolution deleted meanwhile (by another server process)
            for gone in kept.keys() - set(left):
                del kept[gone]
        for res_id in left:
            if self.stopping():
                break
            res = self.store.get_resolution(res_id)
            settings: dict[str, Any] = res.settings if res is not None and isinstance(res.settings, dict) else {}
            if (res is None or not ID.fullmatch(res_id) or settings.get("kind") != "cloud"
                    or settings.get("executor") != COPIES_EXECUTOR):
                self.store.tasks_gone(res_id)  # no driver of it stored copies (or none under a folder of its id)
                continue
            url = settings.get("storage_url") or None
            try:
                storage = self.storages.for_url(url)
            except StorageNotAllowed:
                shown = str(url)[:SHOWN_URL] + ("..." if len(str(url)) > SHOWN_URL else "")
                log.warning("the stored tasks of resolution %s (its end no driver recorded) are left under %s of %s, "
                            "a storage this server may not write (neither its own nor on $%s): delete them there",
                            res_id, tasks_prefix(res_id), shown, ALLOW_ENV)
                self.store.tasks_gone(res_id)
                continue
            if not self._due(res_id) or id(storage) in failed:
                continue
            if self._delete(res_id, storage):
                self.store.tasks_gone(res_id)
                done.append(res_id)
            else:
                failed.add(id(storage))
        return done

    def _due(self, res_id: str) -> bool:
        """Whether to try ``res_id``'s copies in this sweep: unless its storage refused them and its backoff has sweeps
        left to skip (one fewer now)."""
        backoff = self.backoffs.get(res_id)
        if backoff is None or backoff.skip == 0:
            return True
        backoff.skip -= 1
        return False

    def _failed(self, res_id: str, refusal: bool) -> Backoff | None:
        """Note a try that failed: a refusal doubles the sweeps to skip before the next (1, 2, 4 ..., at most
        :attr:`most_skipped`); an outage is tried again at the next sweep. The resolution's backoff, if refused."""
        if not refusal:
            self.backoffs.pop(res_id, None)
            return None
        backoff = self.backoffs.setdefault(res_id, Backoff())
        backoff.refusals += 1
        backoff.skip = min(2 ** (backoff.refusals - 1), self.most_skipped)
        return backoff

    def _delete(self, res_id: str, storage: Any) -> bool:
        """Delete every copy under resolution ``res_id``'s folder of ``storage``; whether that is done (a storage that
        cannot list or delete leaves them, said so): False to try again later."""
        prefix = tasks_prefix(res_id)
        where = getattr(storage, "url", type(storage).__name__)
        found: list[str] | None = None
        gone = 0
        try:
            found = keys(storage, prefix)
            for key in found or []:
                if self.stopping():
                    return False
                if not storage_delete(storage, key):
                    break
                gone += 1
        except Exception as e:  # noqa: BLE001 - out of reach, or refused: tried again at a later sweep
            how = f"{len(found) - gone} stored task(s)" if found is not None else "the stored tasks"
            refusal = refused(e)
            backoff = self._failed(res_id, refusal)
            if self._said.get(res_id) is not refusal:
                self._said[res_id] = refusal
                log.warning("could not delete %s of resolution %s (its end no driver recorded) under %s of %s: %s; %s",
                            how, res_id, prefix, where, one_line(str(e)),
                            "the storage refuses this server: give its storage credentials the right to list and "
                            "delete there (S3: s3:ListBucket, s3:DeleteObject), or delete them there yourself; tried "
                            "again after 1, 2, 4 ... sweeps, at least hourly, meanwhile" if refusal
                            else "tried again at the next sweep")
            else:
                log.debug("could not delete the stored tasks of resolution %s yet: %s%s", res_id, one_line(str(e)),
                          f"; tried again in {backoff.skip + 1} sweeps" if backoff else "")
            return False
        self._said.pop(res_id, None)
        self.backoffs.pop(res_id, None)
        if found is None or gone < len(found):
            log.warning("the stored tasks of resolution %s (its end no driver recorded) are left under %s of %s, a "
                        "storage that cannot %s: delete them there", res_id, prefix, where,
                        "list them" if found is None else "delete them")
        elif gone:
            log.info("deleted %d stored task(s) of resolution %s (its end no driver recorded) under %s of %s",
                     gone, res_id, prefix, where)
        return True
