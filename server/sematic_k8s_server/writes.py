"""Concurrent requests' batches recorded in one transaction, with the result each would have had alone.

:func:`groups` merges batches, in the order they arrived, into as few as it can while keeping the outcome of
writing them one after the other: inserts are "insert if absent" (the first one wins) and updates set fields
(the last one wins), so they merge, except that a batch inserting a row that an earlier one updated starts a
new group (merged, its insert would run before that update); so does one fencing a resolution the group ends
(merged, its fence would be checked against the resolution before its end), one whose fence gives a resolution
another driver epoch than the group's (merged, one driver's writes would be checked against the other's epoch),
one numbered for a resolution the group already holds a number of (``Batch.sequence``: each of a driver's writes is
checked against the last one applied, and a late first attempt merged with a later write would land with it), one
recording an artifact otherwise than the group (merged, its record would not be checked against the other), and
one changing what an earlier one changed of a resolution's state or a run's state or output (each such change is
checked against what is recorded: merged, the later one would hide the earlier one's refusal). A merged group
refused as stale, or holding a batch applied already (which leaves the whole group unwritten), is written again
batch by batch, so a fence only ever refuses its own batch, and a sequence only ever skips its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import sqlalchemy.exc

from sematic_k8s.errors import CancelRequested, ContinuedAlready, ResolutionEnded, RunResolved
from sematic_k8s.store.guards import Replayed
from sematic_k8s.store.records import Batch
from sematic_k8s.store.sql import ENDED
from sematic_k8s.store.texts import NulText

OUTAGE = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)  # the database, not the batch
_FINAL = frozenset({"state", "output_id"})  # a resolved run's fields that no update may change


class Write(Protocol):
    """``SqlStore.write``: ``replays`` gets the resolution whose sequence showed the batch applied already."""

    def __call__(self, batch: Batch, *, replays: set[str] | None = None) -> None: ...


def groups(batches: Sequence[Batch]) -> list[tuple[Batch, list[int]]]:
    """``batches`` merged: each merged batch with the indices of the batches it holds."""
    out: list[tuple[Batch, list[int]]] = []
    for i, b in enumerate(batches):
        if out and _joins(out[-1][0], b):
            _merge(out[-1][0], b)
            out[-1][1].append(i)
        else:
            merged = Batch()
            _merge(merged, b)
            out.append((merged, [i]))
    return out


def _joins(group: Batch, b: Batch) -> bool:
    ended = {r for r, fields in group.resolution_updates.items() if fields.get("state") in ENDED}
    settled = {r for r, fields in group.run_updates.items() if not _FINAL.isdisjoint(fields)}
    return (not any(run_id in group.run_updates for run_id in b.new_runs)
            and not any(res.get("id") in group.resolution_updates for res in b.new_resolutions)
            and all(group.fence.get(r, epoch) == epoch for r, epoch in b.fence.items())
            and group.sequence.keys().isdisjoint(b.sequence)  # one numbered write per resolution: each is checked
            # a resolution's end refuses what follows it, so neither merges with another change of its state, nor
            # with a driver's write fenced on it (checked against what is recorded: merged, it would land after the end)
            and not any(r in ended or (r in group.resolution_updates and "state" in fields)
                        for r, fields in b.resolution_updates.items())
            and ended.isdisjoint(b.fence)
            # nor does a change of a run's state or output (once resolved, they are final: each one is checked)
            and not any(r in settled and not _FINAL.isdisjoint(fields) for r, fields in b.run_updates.items())
            # another record of an artifact: each one is checked against what is recorded (merged, one is dropped)
            and all(_same_artifact(group.artifacts[a], fields) for a, fields in b.artifacts.items()
                    if a in group.artifacts))


def _same_artifact(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("format", "type_name", "size", "summary", "inline"))


def _merge(group: Batch, b: Batch) -> None:
    group.fence.update(b.fence)
    group.sequence.update(b.sequence)
    present = {res.get("id") for res in group.new_resolutions}
    group.new_resolutions.extend(res for res in b.new_resolutions if res.get("id") not in present)
    for target, source in ((group.artifacts, b.artifacts), (group.new_runs, b.new_runs)):
        for row_id, fields in source.items():
            target.setdefault(row_id, fields)
    for target, source in ((group.run_updates, b.run_updates), (group.resolution_updates, b.resolution_updates)):
        for row_id, fields in source.items():
            target[row_id] = {**target[row_id], **fields} if row_id in target else dict(fields)


def write_all(write: Write, batches: Sequence[Batch]) -> list[BaseException | None]:
    """``write`` each merged group; when a group conflicts with recorded data (a second ``continue`` of a resolution
    included) or has a bad value (a record's text holding a NUL character: named as in its own batch), or holds a
    batch applied already, its batches one by one, so that only the faulty ones fail and only the replayed ones are
    skipped. Each batch's error,
    :class:`~sematic_k8s.store.guards.Replayed` for one applied already (nothing of it written: answered as written,
    but no event), or None."""
    results: list[BaseException | None] = [None] * len(batches)
    for merged, members in groups(batches):
        replays: set[str] = set()
        try:
            write(merged, replays=replays)
        except (sqlalchemy.exc.StatementError, ResolutionEnded, RunResolved, ContinuedAlready, CancelRequested,
                NulText) as e:
            if len(members) == 1 or isinstance(e, OUTAGE):
                for i in members:
                    results[i] = e
                continue
            _one_by_one(write, batches, members, results)  # an IntegrityError or a bad value: find whose
        except Exception as e:  # noqa: BLE001 - e.g. the database is down: every request of the group is told
            for i in members:
                results[i] = e
        else:
            if replays and len(members) == 1:
                results[members[0]] = Replayed(min(replays))
            elif replays:  # nothing of the group was written: the others' batches still are
                _one_by_one(write, batches, members, results)
    return results


def _one_by_one(write: Write, batches: Sequence[Batch], members: list[int],
                results: list[BaseException | None]) -> None:
    for i in members:
        replays: set[str] = set()
        try:
            write(batches[i], replays=replays)
        except Exception as e:  # noqa: BLE001 - that request's answer
            results[i] = e
        else:
            results[i] = Replayed(min(replays)) if replays else None
