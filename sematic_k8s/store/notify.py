"""Live events through PostgreSQL's ``NOTIFY``: their channel, their payloads, and their sending in a transaction.

Every server process ``LISTEN``s on :data:`CHANNEL` and hands what it hears to its followers
(:mod:`sematic_k8s_server.relay`), which sends its writes' events through :func:`notify`. So does any process
that marks resolutions dead on a PostgreSQL database (:func:`~sematic_k8s.store.liveness.expire_silent`: a server,
the CLI or a LocalResolver on the database's URL), in the transaction that marks them: the mark is told, to every
server's followers, when it commits, and never when it is rolled back.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

CHANNEL = "sematic_k8s_events"
MAX_PAYLOAD = 7000  # bytes; PostgreSQL's limit is 8000


def resolution_event(res_id: str, state: str | None) -> dict[str, Any]:
    """The live event of a change to resolution ``res_id`` (its state now; a change that keeps it, such as the note
    on a claim of what its driver's launch waits for, says the state it still has): the pages showing it re-read
    it. Every resolution event is made here."""
    return {"type": "resolution", "id": res_id, "root_id": res_id, "state": state}


def payloads(events: list[dict[str, Any]]) -> list[str]:
    """``events`` as JSON arrays of at most :data:`MAX_PAYLOAD` bytes each."""
    out, chunk, size = [], list[str](), 2
    for event in events:
        text = json.dumps(event, separators=(",", ":"))
        if chunk and size + len(text) + 1 > MAX_PAYLOAD:
            out.append("[" + ",".join(chunk) + "]")
            chunk, size = [], 2
        chunk.append(text)
        size += len(text) + 1
    if chunk:
        out.append("[" + ",".join(chunk) + "]")
    return out


def events_of(payload: str) -> list[dict[str, Any]]:
    """The events of a payload heard on :data:`CHANNEL` (:func:`payloads` made it); ValueError saying why for one not
    of their making: any role that may connect to the database may ``NOTIFY`` there (text that is no JSON, a JSON
    value that is no list of events, each an object with a text ``type``)."""
    events = json.loads(payload)  # JSONDecodeError: a ValueError
    if not isinstance(events, list):
        raise ValueError(f"a JSON {type(events).__name__}, not a list of events")
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ValueError("an event that is no JSON object with a text 'type'")
    return events


def notify(conn: sa.Connection, events: list[dict[str, Any]]) -> None:
    """``NOTIFY`` ``events`` in the transaction of ``conn`` (a PostgreSQL connection): heard by every server's
    listener once it commits, in order."""
    for payload in payloads(events):
        conn.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))
