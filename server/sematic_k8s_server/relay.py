"""Live events between server processes (uvicorn workers, replicas) through PostgreSQL's LISTEN/NOTIFY.

Over PostgreSQL every process sends the events of the writes it recorded with ``NOTIFY`` (after they commit;
:mod:`sematic_k8s.store.notify`, through which any process marking resolutions dead tells its marks too)
and hands every notification it hears, its own included, to its event bus: a dashboard following one process
sees the writes recorded by all of them. A listener that loses its connection reconnects and tells its
subscribers ``{"type": "overflow"}`` (refetch what you show), as a subscriber that fell behind is told. A listener
that hears nothing for :data:`QUIET_SECONDS` sends itself a ping through the database (as any event is sent): one not
heard within as long again means its connection went silent (a dropped flow, a hung backend, no reset to tell it), and
it reconnects so.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
import sqlalchemy as sa

from sematic_k8s.error_records import one_line
from sematic_k8s.store.notify import CHANNEL, events_of, notify
from sematic_k8s_server.events import EventBus

log = logging.getLogger("sematic_k8s_server")
RECONNECT_SECONDS = 1.0
START_SECONDS = 5.0
QUIET_SECONDS = 10.0  # a listener that heard nothing for this long pings itself; unheard as long again: reconnect
CONNECT_SECONDS = 10
PING = "ping"  # the type of a listener's ping to itself: heard by every listener, handed to no bus


class Unheard(Exception):
    """The listener's connection went silent: its own ping was not heard."""


def libpq_url(engine: sa.Engine) -> str:
    """The engine's database as a libpq URL (for a connection of its own, outside the pool)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class PgRelay:
    """Sends events with ``NOTIFY`` over ``engine``; a daemon thread ``LISTEN``s and feeds ``bus``.

    :meth:`publish` hands the events to a sender thread, which sends, in order, all those handed to it while it
    was busy in one transaction: a write's answer does not wait for its events, and under load many writes'
    events share one round trip."""

    def __init__(self, engine: sa.Engine, bus: EventBus) -> None:
        self.engine, self.bus = engine, bus
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[dict[str, Any]] = []
        self._wake = threading.Condition()
        self._sender: threading.Thread | None = None
        self._dropped = False  # a notification not of a server's making was dropped (and said)

    def publish(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        with self._wake:
            self._pending.extend(events)
            self._wake.notify()

    def send(self, events: list[dict[str, Any]]) -> None:
        """``NOTIFY`` ``events`` now, in one transaction."""
        with self.engine.begin() as conn:
            notify(conn, events)

    def start(self) -> None:
        """Start listening; returns once the listener is connected (or after a few seconds if it cannot be),
        so that a server taking requests hears the events of every write from then on."""
        if self._thread is None:
            self._sender = threading.Thread(target=self._send_pending, daemon=True, name="sk-events-out")
            self._sender.start()
            self._thread = threading.Thread(target=self._listen, daemon=True, name="sk-events")
            self._thread.start()
            self._listening.wait(START_SECONDS)

    def stop(self) -> None:
        """Stop listening, once the events handed to :meth:`publish` are sent."""
        self._stop.set()
        with self._wake:
            self._wake.notify()
        for thread in (self._sender, self._thread):
            if thread is not None:
                thread.join(5)

    def _send_pending(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._stop.is_set():
                    self._wake.wait()
                events, self._pending = self._pending, []
            if not events:
                return  # stopped, nothing left
            try:
                self.send(events)
            except Exception as e:  # noqa: BLE001 - recorded all the same: the dashboard shows it when it refetches
                orig = getattr(e, "orig", None) or e
                log.warning("live events not sent: %s: %s", type(orig).__name__, one_line(str(orig)))

    def _heard(self, payload: str) -> None:
        """Hand a notification's events to the bus; one not of a server's making (:func:`events_of`) is dropped, said
        once in this process (then at debug level: whoever sends them may send many). Was: it ended the listener."""
        try:
            events = events_of(payload)
        except ValueError as e:
            later = "" if self._dropped else "; later ones are logged at debug level"
            log.log(logging.DEBUG if self._dropped else logging.WARNING,
                    "live events: dropped a notification on %s that no server sent (%s): %r%s", CHANNEL,
                    one_line(str(e))[:200], payload[:200], later)
            self._dropped = True
            return
        events = [e for e in events if e.get("type") != PING]  # a listener's ping to itself: for no bus
        if events:
            self.bus.publish(events)

    def _listen(self) -> None:
        first, failing = True, False
        while not self._stop.is_set():
            try:
                with psycopg.connect(libpq_url(self.engine), autocommit=True, connect_timeout=CONNECT_SECONDS) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    if failing:
                        log.warning("live events: the PostgreSQL listener is connected again")
                    if not first:  # events may have been missed while disconnected
                        self.bus.overflow()
                    first, failing = False, False
                    self._hear(conn)
            except (psycopg.Error, OSError, Unheard) as e:
                if self._stop.is_set():
                    return
                if not failing:  # once per outage, not at every try
                    log.warning("live events: the PostgreSQL listener failed (%s: %s); reconnecting every %g s",
                                type(e).__name__, one_line(str(e)), RECONNECT_SECONDS)
                failing = True
            self._stop.wait(RECONNECT_SECONDS)

    def _hear(self, conn: psycopg.Connection[Any]) -> None:
        """Hand what ``conn`` hears to the bus until stopped; :class:`Unheard` once it went silent (a ping unheard)."""
        heard, pinged = time.monotonic(), None
        while not self._stop.is_set():
            for note in conn.notifies(timeout=1.0):
                heard, pinged = time.monotonic(), None  # anything heard: the connection delivers
                self._heard(note.payload)
            now = time.monotonic()
            if pinged is not None and now - pinged > QUIET_SECONDS:
                raise Unheard(f"its connection heard nothing, not even its own ping, for {now - heard:.0f} s")
            if pinged is None and now - heard > QUIET_SECONDS:
                pinged = now
                self.publish([{"type": PING}])
