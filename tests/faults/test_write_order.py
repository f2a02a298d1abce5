"""A driver's writes land in the order it sent them, whatever the network does: a request held up past the client's
timeout (a proxy on loopback holding it back), retried, then delivered after the retry and the driver's next write
landed, is answered as written and sets nothing back (docs/FAULTS.md, "Several writers at once")."""

from __future__ import annotations

import json
import uuid

import pytest

from outages import HoldingProxy
from sematic_k8s.store import http
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow

MARK = b'"step":1'  # in the held request's body: the first of the two updates of one run


@pytest.mark.parametrize("in_parts", [False, True], ids=["whole", "in-parts"])
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_write_whose_first_attempt_lands_last_sets_nothing_back(tmp_path, db_server, monkeypatch, db,
                                                                   in_parts) -> None:
    """Batch N (a run running, its notes) is held back on its first attempt until the client's read times out
    (2 s); its retry lands, then batch N+1 (the run failed, other notes); only then does the first attempt of N
    reach the server. It is answered 200 and changes nothing: the run stays failed with N+1's notes (before: it went
    back to running with N's notes, although N+1 had landed). ``in-parts``: N is larger than the client's part
    size, and the part held back is the one with the update (each part is numbered)."""
    if in_parts:
        monkeypatch.setattr(http, "WRITE_BYTES", 16 * 1024)
    server = db_server
    proxy = HoldingProxy(server.port, hold=lambda req: req.startswith(b"POST /api/v1/store/write") and MARK in req)
    store = HttpStore(proxy.url, timeout=2.0, retry_window=60)
    reader = HttpStore(server.url)
    try:
        root, run_id = uuid.uuid4().hex, uuid.uuid4().hex
        seed = Batch()
        seed.add_resolution(ResolutionRecord(id=root, root_func_path="m:p", state="running", created_at=utcnow(),
                                             heartbeat_at=utcnow()))
        for rid in (root, run_id):
            seed.add_run(RunRecord(id=rid, root_id=root, parent_id=None if rid == root else root, func_path="m:f",
                                   func_name="f", state="created", created_at=utcnow()))
        store.write(seed)
        fence = {root: store.take_over(root)}

        first = Batch(resolution_updates={root: {"heartbeat_at": utcnow()}}, fence=fence)
        if in_parts:  # ~40 KB of new runs ahead of the update: sent in parts, the update in the last one
            for i in range(100):
                first.add_run(RunRecord(id=f"{i:032x}", root_id=root, parent_id=root, func_path="m:f", func_name="f",
                                        state="created", source_text="x" * 300, created_at=utcnow()))
        first.update_run(run_id, state="running", attempts=1, started_at=utcnow(), notes={"step": 1})
        store.write(first)  # its first attempt held back, the retry answered
        assert proxy.held is not None and MARK in proxy.held
        assert reader.get_run(run_id).notes == {"step": 1}

        second = Batch(fence=fence)
        second.update_run(run_id, state="failed", ended_at=utcnow(), notes={"step": 2},
                          error={"type": "ValueError", "message": "boom", "traceback": ""})
        store.write(second)

        status, body = proxy.release()  # the first attempt of N arrives last
        assert (status, json.loads(body)) == (200, {"ok": True})
        run = reader.get_run(run_id)
        assert (run.state, run.notes, run.error["message"]) == ("failed", {"step": 2}, "boom")
        assert reader.get_resolution(root).state == "running"
        if in_parts:
            assert len(reader.runs_of_root(root)) == 102
    finally:
        store.close()
        reader.close()
        proxy.close()
