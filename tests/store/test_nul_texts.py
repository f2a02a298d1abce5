"""An embedded store (no server) keeps the server's rule for NUL characters in a record's text, on SQLite and
PostgreSQL alike: refused naming the record and the field, nothing of the write recorded; a resolution's error kept
with ``\\x00`` in its place. Was: SQLite kept the NUL (its ``length()`` stops at it), PostgreSQL refused the write
naming no field (``DataError``: "PostgreSQL text fields cannot contain NUL (0x00) bytes"), a failure's record
with it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from sematic_k8s.store.records import Batch, CachedRun, utcnow
from sematic_k8s.store.sql import SqlStore

NOW = utcnow()
NUL = "a\x00b"
RUN = {"root_id": "r0", "parent_id": None, "func_path": "m:f", "func_name": "f", "state": "created",
       "created_at": NOW}
ART = "c" * 64


def _hit(**fields: Any) -> CachedRun:
    return CachedRun(**{"id": "h", "root_id": "r0", "parent_id": None, "func_path": "m:f", "func_name": "f",
                        "source_file": None, "source_text": None, "source_hash": None, "settings": {},
                        "input_refs": {}, "inputs": {}, "output_id": "d" * 64, "cache_key": "e" * 64,
                        "cached_from": "a", "source_changed": False, "original_run_id": None, "created_at": NOW,
                        "ended_at": NOW, **fields})


REFUSED = [
    (Batch(new_runs={"b": {"id": "b", **RUN, "func_name": NUL}}), "new_runs[b].func_name"),
    (Batch(new_runs={"b": {"id": "b", **RUN, "source_text": NUL}}), "new_runs[b].source_text"),
    (Batch(run_updates={"a": {"func_path": NUL}}), "run_updates[a].func_path"),
    (Batch(new_resolutions=[{"id": "r1", "root_func_path": NUL, "state": "running", "created_at": NOW}]),
     "new_resolutions[0].root_func_path"),
    (Batch(resolution_updates={"r0": {"image": NUL}}), "resolution_updates[r0].image"),
    (Batch(artifacts={ART: {"id": ART, "format": "json", "type_name": NUL, "size": 1, "created_at": NOW}}),
     f"artifacts[{ART}].type_name"),
    (Batch(hits={"h": _hit(func_name=NUL)}), "hits[h].func_name"),
]


@pytest.mark.parametrize(("batch", "where"), REFUSED,
                         ids=[w.split("[")[0] + "." + w.split(".")[-1] for _, w in REFUSED])
def test_a_nul_character_in_a_records_text_is_refused_naming_it(
        running_store: Callable[[dict[str, str]], SqlStore], batch: Batch, where: str) -> None:
    store = running_store({"a": "resolved"})
    batch.new_runs.setdefault("c", {"id": "c", **RUN})  # a clean record beside it: not written either
    with pytest.raises(ValueError, match=re.escape(where) + r" holds a NUL character .*: remove it"):
        store.write(batch)
    assert store.get_run("c") is None and store.get_run("b") is None and store.get_run("h") is None
    assert store.get_resolution("r1") is None and store.get_artifact(ART) is None
    res, run = store.get_resolution("r0"), store.get_run("a")
    assert res is not None and res.image is None and run is not None and run.func_path == "m:f"


def test_labels_holding_a_nul_character_are_refused_naming_them(
        running_store: Callable[[dict[str, str]], SqlStore]) -> None:
    store = running_store({"a": "running"})
    with pytest.raises(ValueError, match=r"^note holds a NUL character"):
        store.label_resolution("r0", note=NUL, set_note=True)
    with pytest.raises(ValueError, match=r"^add\[1\] holds a NUL character"):
        store.label_resolution("r0", add=["ok", NUL])
    res = store.get_resolution("r0")
    assert res is not None and (res.tags, res.note, res.labels_version) == (None, None, 0)


def test_a_resolutions_error_holding_a_nul_character_is_kept_escaped(
        running_store: Callable[[dict[str, str]], SqlStore]) -> None:
    """The failure is recorded: the resolution's error (text) says ``\\x00``, the run's (JSON) keeps the message as
    it was; the batch the caller gave is left as it was. A claim ended with such an error (``end_claim``) alike."""
    store = running_store({"a": "running"})
    message = "bad header GIF89a\x00\x01"
    batch = Batch(run_updates={"a": {"state": "failed", "ended_at": NOW, "error": {"type": "ValueError",
                                                                                   "message": message}}},
                  resolution_updates={"r0": {"state": "failed", "ended_at": NOW, "error": message}})
    store.write(batch)
    assert batch.resolution_updates["r0"]["error"] == message
    res, run = store.get_resolution("r0"), store.get_run("a")
    assert res is not None and res.state == "failed" and res.error == "bad header GIF89a\\x00\x01", res
    assert run is not None and run.state == "failed" and run.error == {"type": "ValueError", "message": message}
    store.write(batch)  # the same end sent again (a retry): the same end, not refused as another
    store.write(Batch(new_resolutions=[{"id": "r2", "root_func_path": "m:p", "state": "created", "created_at": NOW}]))
    assert store.end_claim("r2", message)
    claimed = store.get_resolution("r2")
    assert claimed is not None and claimed.state == "failed" and claimed.error == "bad header GIF89a\\x00\x01"
