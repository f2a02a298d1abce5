"""A recorded resolution of any size, written straight to a store (no funcs run): ``pipeline`` fans out
``n`` runs of ``add(x=i, y=1)``, ``prepare`` feeds them, and ``total`` sums them. Used by the dashboard's
browser test and by ``bench.dashboard``."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sematic_k8s import serialization
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord

T0 = dt.datetime(2026, 1, 5, 9, 0, 0)


def record_fanout(store: Any, n: int, *, running: int = 0, func_module: str = "sweep", owner: str | None = None) -> str:
    """Record a resolution with ``n + 3`` runs; the last ``running`` adds still running (and with them the
    pipeline and ``total`` unfinished). ``owner``: the API key id recorded as its writer's (that key then writes its
    runs through the server). Returns its id."""
    root = uuid.uuid4().hex
    batch = Batch()
    done = running == 0

    def art(value: Any) -> str:
        s = serialization.serialize(value)
        batch.artifacts[s.id] = {**s.record(), "created_at": T0}
        return s.id

    one = art(1)
    end = T0 + dt.timedelta(seconds=2 + n // 50 + 2)
    batch.add_resolution(ResolutionRecord(id=root, root_func_path=f"{func_module}:pipeline",
                                          state="resolved" if done else "running", settings={"kind": "local"},
                                          created_at=T0, ended_at=end if done else None))
    n_art = art(n)
    batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path=f"{func_module}:pipeline",
                            func_name="pipeline", state="resolved" if done else "running",
                            input_refs={"n": {"artifact": n_art}}, inputs={"n": n_art},
                            created_at=T0,
                            started_at=T0, ended_at=end if done else None))
    prep = uuid.uuid4().hex
    batch.add_run(RunRecord(id=prep, root_id=root, parent_id=root, func_path=f"{func_module}:prepare",
                            func_name="prepare", state="resolved", input_refs={"n": {"artifact": n_art}},
                            inputs={"n": n_art}, output_id=one, created_at=T0 + dt.timedelta(milliseconds=1),
                            started_at=T0 + dt.timedelta(milliseconds=2), ended_at=T0 + dt.timedelta(seconds=1)))
    adds = []
    for i in range(n):
        rid = uuid.uuid4().hex
        adds.append(rid)
        x = art(i)
        still = i >= n - running
        start = T0 + dt.timedelta(seconds=1, milliseconds=10 * (i % 100))
        batch.add_run(RunRecord(
            id=rid, root_id=root, parent_id=root, func_path=f"{func_module}:add", func_name="add",
            state="running" if still else "resolved",
            input_refs={"x": {"artifact": x}, "y": {"run": prep}}, inputs={"x": x, "y": one},
            output_id=None if still else art(i + 1), created_at=T0 + dt.timedelta(milliseconds=5, microseconds=i),
            started_at=start, ended_at=None if still else start + dt.timedelta(seconds=1 + (i % 7) / 10)))
    total = uuid.uuid4().hex
    batch.add_run(RunRecord(
        id=total, root_id=root, parent_id=root, func_path=f"{func_module}:total", func_name="total",
        state="resolved" if done else "created", input_refs={"xs": {"list": [{"run": a} for a in adds]}},
        created_at=T0 + dt.timedelta(seconds=1, milliseconds=5),
        started_at=end - dt.timedelta(seconds=1) if done else None, ended_at=end if done else None))
    for row in [*batch.new_resolutions, *batch.new_runs.values()] if owner is not None else []:
        row["owner"] = owner  # written in the store itself: through the server, the writer's key is the owner
    store.write(batch)
    return root
