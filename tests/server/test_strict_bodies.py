"""Request bodies are parsed strictly, over real HTTP on SQLite and PostgreSQL: a boolean is JSON true or false, an
integer a JSON number without a fraction. What lax parsing took (``{"admin": "yes"}`` made an admin key, a write's
``"attempts": true`` was recorded as 1, ``"labels_version": "0"`` was taken as 0) is a one-line 422 naming the field,
and nothing of the request is done; the same requests in their JSON types (times as ISO 8601 text) still are. A
record's text holding a NUL character (a resolution's note or root_func_path, a run's func_name, an artifact's
type_name, ...) is refused alike on both databases, naming the field, and nothing of the write is recorded; a
resolution's error holding one is kept, ``\\x00`` in its place (was: kept on SQLite, PostgreSQL's 422 naming no
field, a failure's record refused whole)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import utcnow
from serving import Served, serve

NOW = utcnow().isoformat() + "Z"
WRITE = "/api/v1/store/write"


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    db_url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    with serve(tmp_path, db_url) as s:
        yield s


def _refused(r: httpx.Response, field: str) -> str:
    """The 422's one-line detail, which names ``field``."""
    assert r.status_code == 422, r.text[:500]
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and field in detail, detail
    return detail


def _seeded(c: httpx.Client) -> str:
    root = uuid.uuid4().hex
    r = c.post(WRITE, json={
        "new_resolutions": [{"id": root, "root_func_path": "m:f", "state": "running", "created_at": NOW}],
        "new_runs": {root: {"id": root, "root_id": root, "func_path": "m:f", "func_name": "f", "state": "created",
                            "created_at": NOW}}})
    assert r.status_code == 200, r.text
    return root


@pytest.mark.parametrize("admin", ["yes", "on", "true", 1, 0, "false"])
def test_an_api_key_is_admin_only_for_json_true(served: Served, admin: Any) -> None:
    name = f"lax-{uuid.uuid4().hex[:8]}"
    with served.client(served.admin_key) as c:
        detail = _refused(c.post("/api/v1/api-keys", json={"name": name, "admin": admin}), "body field 'admin'")
        assert "true or false" in detail, detail
        assert name not in [k["name"] for k in c.get("/api/v1/api-keys").json()["items"]]
        for flag in (True, False):
            r = c.post("/api/v1/api-keys", json={"name": f"{name}-{flag}", "admin": flag})
            assert r.status_code == 201 and r.json()["admin"] is flag, r.text


def test_a_store_write_takes_each_number_and_boolean_as_json_types_only(served: Served) -> None:
    with served.client() as c:
        root = _seeded(c)
        art = "b" * 64
        refused: list[tuple[dict[str, Any], str]] = [
            ({"run_updates": {root: {"attempts": True}}}, "attempts"),
            ({"run_updates": {root: {"attempts": "2"}}}, "attempts"),
            ({"run_updates": {root: {"attempts": 2.0}}}, "attempts"),
            ({"run_updates": {root: {"state": "running", "attempts": 1}}, "fence": {root: True}}, f"fence.{root}"),
            ({"run_updates": {root: {"attempts": 1}}, "fence": {root: 0}, "sequence": {root: "1"}},
             f"sequence.{root}"),
            ({"artifacts": {art: {"id": art, "format": "json", "type_name": "int", "size": "2",
                                  "created_at": NOW}}}, "size"),
        ]
        for body, field in refused:
            detail = _refused(c.post(WRITE, json=body), field)
            assert "not an integer" in detail, detail
        run = served.store.get_run(root)
        assert run is not None and (run.state, run.attempts) == ("created", 0)
        assert c.get(f"/api/v1/artifacts/{art}").status_code == 404
        # the same in their JSON types: recorded (times as ISO 8601 text, with Z or an offset)
        r = c.post(WRITE, json={"run_updates": {root: {"state": "running", "attempts": 2, "started_at": NOW,
                                                       "notes": {"flag": True, "n": "3"}}}})
        assert r.status_code == 200, r.text
        r = c.post(WRITE, json={"run_updates": {root: {"ended_at": "2026-01-02T03:04:05+01:00"}}})
        assert r.status_code == 200, r.text
    run = served.store.get_run(root)
    assert run is not None and (run.state, run.attempts, run.notes) == ("running", 2, {"flag": True, "n": "3"})
    assert run.ended_at is not None and run.ended_at.isoformat() == "2026-01-02T02:04:05"


def test_a_labels_change_takes_labels_version_as_an_integer_and_a_note_without_nul(served: Served) -> None:
    with served.client() as c:
        root = _seeded(c)
        labels = f"/api/v1/resolutions/{root}/labels"
        for version in ("0", True, 0.0):
            _refused(c.post(labels, json={"add": ["x"], "labels_version": version}), "body field 'labels_version'")
        detail = _refused(c.post(labels, json={"note": "a\x00b"}), "body field 'note'")
        assert "NUL" in detail, detail
        res = served.store.get_resolution(root)
        assert res is not None and (res.tags, res.note, res.labels_version) == (None, None, 0)
        r = c.post(labels, json={"add": ["x"], "note": "a note", "labels_version": 0})
        assert r.status_code == 200, r.text
    res = served.store.get_resolution(root)
    assert res is not None and (res.tags, res.note) == (["x"], "a note")


def test_a_new_resolutions_note_with_nul_is_refused_naming_it(served: Served) -> None:
    root = uuid.uuid4().hex
    with served.client() as c:
        r = c.post(WRITE, json={"new_resolutions": [{"id": root, "root_func_path": "m:f", "state": "running",
                                                     "created_at": NOW, "note": "a\x00b"}]})
        assert "NUL" in _refused(r, "note"), r.text
    assert served.store.get_resolution(root) is None


def test_the_http_store_writes_and_labels_through_the_strict_server(served: Served) -> None:
    """The HTTP store (drivers, the CLI) sends what the strict server takes: a labels change with its version."""
    with served.client() as c:
        root = _seeded(c)
    store = HttpStore(served.url, served.key)
    try:
        res = store.label_resolution(root, add=["a"], note="n", set_note=True, labels_version=0)
        assert res is not None and (res.tags, res.note) == (["a"], "n")
        assert store.mint_token(root)
    finally:
        store.close()


NUL = "a\x00b"


def _fresh_batch(root: str, art: str) -> dict[str, Any]:
    """A new resolution, its root run and an artifact: recorded if nothing in them is refused."""
    return {"new_resolutions": [{"id": root, "root_func_path": "m:f", "state": "running", "created_at": NOW}],
            "new_runs": {root: {"id": root, "root_id": root, "func_path": "m:f", "func_name": "f", "state": "created",
                                "created_at": NOW}},
            "artifacts": {art: {"id": art, "format": "json", "type_name": "int", "size": 1, "created_at": NOW}}}


@pytest.mark.parametrize("field", ["new_resolutions.0.root_func_path", "new_resolutions.0.image",
                                   "new_resolutions.0.build_hash", "new_runs.ROOT.func_name", "new_runs.ROOT.func_path",
                                   "new_runs.ROOT.source_hash", "new_runs.ROOT.source_file",
                                   "new_runs.ROOT.source_text", "artifacts.ART.type_name", "artifacts.ART.format",
                                   "run_updates.SEEDED.func_name", "resolution_updates.SEEDED.image"])
def test_a_write_holding_a_nul_character_in_a_records_text_is_refused_naming_it(served: Served, field: str) -> None:
    """Was: kept on SQLite (its length() stops at it), on PostgreSQL a 422 naming no field ("bad batch: PostgreSQL
    text fields cannot contain NUL (0x00) bytes")."""
    root, art = uuid.uuid4().hex, uuid.uuid4().hex + uuid.uuid4().hex
    with served.client() as c:
        seeded = _seeded(c)
        body = _fresh_batch(root, art)
        path = field.replace("ROOT", root).replace("ART", art).replace("SEEDED", seeded).split(".")
        holder = body.setdefault(path[0], {})
        for part in path[1:-1]:
            holder = holder[int(part)] if isinstance(holder, list) else holder.setdefault(part, {})
        holder[path[-1]] = NUL
        detail = _refused(c.post(WRITE, json=body), f"body field '{'.'.join(path)}'")
        assert "NUL character" in detail and "remove it" in detail, detail
        assert c.get(f"/api/v1/artifacts/{art}").status_code == 404
    assert served.store.get_resolution(root) is None and served.store.get_run(root) is None
    res, run = served.store.get_resolution(seeded), served.store.get_run(seeded)
    assert res is not None and res.image is None and run is not None and run.func_name == "f"


def test_a_resolutions_error_holding_a_nul_character_is_kept_escaped(served: Served) -> None:
    """A failure's record sent with the error as the func gave it (a client that does not escape it): recorded, the
    resolution's error (text) with ``\\x00`` in its place, the run's error (JSON) as it was. Was: on PostgreSQL the
    whole write refused (a 422 naming no field: the failure lost), on SQLite the NUL kept."""
    message = "bad header GIF89a\x00\x01"
    with served.client() as c:
        root = _seeded(c)
        r = c.post(WRITE, json={
            "run_updates": {root: {"state": "failed", "ended_at": NOW,
                                   "error": {"type": "ValueError", "message": message, "traceback": "", "mro": []}}},
            "resolution_updates": {root: {"state": "failed", "ended_at": NOW, "error": f"ValueError: {message}"}}})
        assert r.status_code == 200, r.text
        shown = c.get(f"/api/v1/resolutions/{root}").json()
        assert shown["state"] == "failed" and shown["error"] == "ValueError: bad header GIF89a\\x00\x01", shown
    res, run = served.store.get_resolution(root), served.store.get_run(root)
    assert res is not None and res.error == "ValueError: bad header GIF89a\\x00\x01", res
    assert run is not None and run.state == "failed" and run.error is not None and run.error["message"] == message
