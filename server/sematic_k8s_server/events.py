"""Live state for the dashboard: events fanned out to Server-Sent Events subscribers.

Writes happen on worker threads; each subscriber owns an asyncio queue on the server's event loop,
fed with ``call_soon_threadsafe``. A subscriber that falls too far behind gets ``{"type": "overflow"}``
(refetch what you show) instead of the events it missed. :class:`StreamSlots` bounds the streams one principal holds
open at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Collection
from typing import Any

from sematic_k8s.store.notify import resolution_event
from sematic_k8s.store.records import Batch
from sematic_k8s.store.tables import CANCELED, FAILED

QUEUE_SIZE = 10_000


class Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop, root_id: str | None) -> None:
        self.loop, self.root_id = loop, root_id
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False
        self.ended = False  # the server is stopping: the stream ends

    def offer(self, event: dict[str, Any]) -> None:  # on the event loop
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True

    def overflow(self) -> None:  # on the event loop
        """Events were lost: the stream tells its follower to refetch now, not at its next event or keep-alive."""
        self.overflowed = True
        try:
            self.queue.put_nowait(None)  # wakes the stream up; a full queue wakes it anyway
        except asyncio.QueueFull:
            pass

    def end(self) -> None:  # on the event loop
        self.ended = True
        try:
            self.queue.put_nowait(None)  # wakes the stream up; a full queue ends it at its next event
        except asyncio.QueueFull:
            pass

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event; None when the server is stopping; TimeoutError when none came within ``timeout``."""
        if self.ended:
            return None
        return await asyncio.wait_for(self.queue.get(), timeout)


class EventBus:
    """Thread-safe publish; subscribe/unsubscribe from the event loop."""

    def __init__(self) -> None:
        self._subs: set[Subscriber] = set()
        self._lock = threading.Lock()
        self.ended = False

    def subscribe(self, root_id: str | None) -> Subscriber:
        sub = Subscriber(asyncio.get_running_loop(), root_id)
        with self._lock:
            self._subs.add(sub)
            if self.ended:
                sub.end()
        return sub

    def end(self) -> None:
        """The server is stopping: every stream ends (now, and any opened still)."""
        with self._lock:
            self.ended = True
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.end)
            except RuntimeError:  # its loop is closed: the server stopped
                pass

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def active(self) -> bool:
        return bool(self._subs)

    def overflow(self) -> None:
        """Tell every subscriber that events were lost (they refetch what they show), at once."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.overflow)
            except RuntimeError:  # its loop is closed: the server is stopping
                pass

    def publish(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            for event in events:
                if sub.root_id is None or sub.root_id == event.get("root_id"):
                    try:
                        sub.loop.call_soon_threadsafe(sub.offer, event)
                    except RuntimeError:  # its loop is closed: the server is stopping
                        break


class StreamSlots:
    """Live-event streams open in this process, by holder (an API key's id; ``local mode``'s one principal): at most
    ``limit`` each, so that one credential cannot hold thousands of sockets and queues. Used on the event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def take(self, holder: str) -> bool:
        """A slot for one more stream of ``holder``: False when it holds ``limit`` already."""
        if self._open[holder] >= self.limit:
            return False
        self._open[holder] += 1
        return True

    def give_back(self, holder: str) -> None:
        """A stream of ``holder`` ended (however: its end, its client gone, reset or killed)."""
        self._open[holder] -= 1
        if self._open[holder] <= 0:
            del self._open[holder]


class RootIndex:
    """run id -> root id, learned from new runs (so updates, which lack it, can be routed)."""

    LIMIT = 500_000

    def __init__(self) -> None:
        self._roots: dict[str, str] = {}

    def learn(self, batch: Batch) -> None:
        if len(self._roots) > self.LIMIT:
            self._roots.clear()
        for run_id, fields in batch.new_runs.items():
            self._roots[run_id] = fields.get("root_id", "")

    def get(self, run_id: str) -> str | None:
        return self._roots.get(run_id)

    def put(self, run_id: str, root_id: str) -> None:
        self._roots[run_id] = root_id


LIVE_RUN_FIELDS = frozenset({"state", "attempts"})  # a run's fields told with their values (the dashboard shows both)
# a run's fields the dashboard shows that an update may set without its state (the resolver's note of what a running
# run waits for, refreshed as its image is pulled): told only as changed, the page re-reads what it shows
SHOWN_RUN_FIELDS = frozenset({"notes", "inputs", "output_id", "error"})


def told(fields: dict[str, Any]) -> bool:
    """Whether a run update of ``fields`` is told to live-event subscribers: it sets one of ``LIVE_RUN_FIELDS`` or
    ``SHOWN_RUN_FIELDS``."""
    return not (LIVE_RUN_FIELDS.isdisjoint(fields) and SHOWN_RUN_FIELDS.isdisjoint(fields))


def batch_events(batch: Batch, root_of: Any, canceled: Collection[str] = ()) -> list[dict[str, Any]]:
    """One event per new Run and Resolution in ``batch``, per Run whose state or attempts it sets (a retry may set
    its attempts alone: the event then has its ``attempts`` and no state), and per Resolution whose state it sets,
    in the order they happened. Runs whose update sets only ``SHOWN_RUN_FIELDS`` make one event per resolution
    (``changed``: the fields set, ``id``: the run's, null when several): a driver noting what many runs wait for,
    once a second, sends one event a second, not one per run. ``canceled``: resolutions whose failed end the store
    recorded canceled (a cancel accepted before it: ``SqlStore.write``), told as recorded."""
    events = []
    for res in batch.new_resolutions:
        events.append(resolution_event(res["id"], res.get("state")))
    for run_id, fields in batch.new_runs.items():
        events.append({"type": "run", "id": run_id, "root_id": fields.get("root_id"), "state": fields.get("state")})
    shown: dict[str | None, tuple[list[str], set[str]]] = {}  # root id -> runs, fields set
    for run_id, fields in batch.run_updates.items():
        if not LIVE_RUN_FIELDS.isdisjoint(fields):
            event = {"type": "run", "id": run_id, "root_id": root_of(run_id), "state": fields.get("state")}
            if "attempts" in fields:
                event["attempts"] = fields["attempts"]
            events.append(event)
        elif told(fields):
            ids, names = shown.setdefault(root_of(run_id), ([], set()))
            ids.append(run_id)
            names.update(SHOWN_RUN_FIELDS.intersection(fields))
    for root_id, (ids, names) in shown.items():
        events.append({"type": "run", "id": ids[0] if len(ids) == 1 else None, "root_id": root_id, "state": None,
                       "changed": sorted(names)})
    for res_id, fields in batch.resolution_updates.items():  # last: a resolution ends after its runs
        if "state" in fields:
            kept = res_id in canceled and fields["state"] == FAILED
            events.append(resolution_event(res_id, CANCELED if kept else fields["state"]))
    return events
