"""A cache key under which a client recorded many resolved runs (through a server, whose database an embedded
resolver shares; or straight into the database), on SQLite and PostgreSQL: the embedded resolution loop's look-up
(``SqlStore.find_hits``) reads the key's most recent run and its output's record, ranked by the database, not every
run of the key each joined with its output's record (inline bytes and all) and judged in Python."""

from __future__ import annotations

import datetime as dt
import tracemalloc
from typing import Any

from sematic_k8s.store.records import Batch
from sematic_k8s.store.sql import SqlStore
from sematic_k8s.store.tables import Base

FLOODED = 60_000
MiB = 1024 * 1024


def test_a_flooded_cache_keys_look_up_reads_only_its_most_recent_run(db_url: str) -> None:
    """60,000 resolved runs under one key, each output an artifact of 1 KiB kept inline: the look-up gives the most
    recent run with its output's format and bytes, and Python's allocations peak under 8 MiB meanwhile. Was: every run
    of the key fetched with its output's inline bytes (about 90 MB here) before the most recent was kept."""
    store = SqlStore(db_url)
    key, t0 = "c" * 64, dt.datetime(2026, 1, 1)
    try:
        batch = Batch()
        outputs = [f"{n:064x}" for n in range(3)]
        for n, art in enumerate(outputs):
            batch.artifacts[art] = {"id": art, "format": "json", "type_name": "bytes", "summary": None, "size": 1024,
                                    "created_at": t0, "inline": bytes([n]) * 1024}
        store.write(batch)

        def row(n: int) -> dict[str, Any]:
            return {"id": f"{n:032x}", "root_id": "a" * 32, "func_path": "m:f", "func_name": "f", "state": "resolved",
                    "cache_key": key, "created_at": t0, "ended_at": t0 + dt.timedelta(seconds=n),
                    "output_id": outputs[n % 3], "inputs": {}, "input_refs": {}, "notes": {}, "settings": {}}

        runs = Base.metadata.tables["runs"]
        with store.engine.begin() as conn:
            for start in range(0, FLOODED, 20_000):
                conn.execute(runs.insert(), [row(n) for n in range(start, start + 20_000)])
        store.find_hits(["d" * 64])  # warm: the connection, the statement
        tracemalloc.start()
        try:
            hits = store.find_hits([key])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        store.close()
    (hit, formats), = hits.values()
    newest = FLOODED - 1
    assert (hit.id, hit.output_id) == (f"{newest:032x}", outputs[newest % 3])
    assert formats == ("json", "bytes", bytes([newest % 3]) * 1024, 1024)
    assert peak < 8 * MiB, f"the look-up allocated {peak // MiB} MiB"
