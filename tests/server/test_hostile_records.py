"""Records of the wrong shape, over real HTTP: ``POST /store/write`` refuses each with a one-line 422 naming the
field, before anything is recorded, so no read of what was recorded ever fails; and no write can change what
identifies a recorded run (its id, its resolution)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sematic_k8s as sk
from s3server import fresh_bucket
from sematic_k8s import serialization
from sematic_k8s.error_records import error_info
from sematic_k8s.errors import ResolutionFailed
from sematic_k8s.storage.base import artifact_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.s3 import S3Storage
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import utcnow
from serving import Served, serve

NOW = utcnow().isoformat() + "Z"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path) as s:
        yield s


def _run(run_id: str, root_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": run_id, "root_id": root_id, "parent_id": None, "func_path": "m:f", "func_name": "f",
            "state": "created", "created_at": NOW, **fields}


def _resolution(res_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": res_id, "root_func_path": "m:f", "state": "running", "settings": {}, "created_at": NOW, **fields}


def test_records_of_the_wrong_shape_are_refused_and_every_read_still_answers(served: Served) -> None:
    root, other = uuid.uuid4().hex, uuid.uuid4().hex
    with served.client() as c:
        seed = {"new_resolutions": [_resolution(root)], "new_runs": {root: _run(root, root)}}
        assert c.post("/api/v1/store/write", json=seed).status_code == 200
        art = "a" * 64
        bad: list[tuple[dict[str, Any], str]] = [
            ({"resolution_updates": {root: {"settings": "a string"}}}, "settings"),
            ({"resolution_updates": {root: {"tags": "a string"}}}, "tags"),
            ({"resolution_updates": {root: {"state": "bogus"}}}, "state"),
            ({"resolution_updates": {root: {"id": other}}}, "id"),
            ({"run_updates": {root: {"attempts": "many"}}}, "attempts"),
            ({"run_updates": {root: {"error": "a string", "notes": [1]}}}, "error"),
            ({"run_updates": {root: {"state": None}}}, "state"),
            ({"run_updates": {root: {"id": other}}}, "id"),  # a recorded run's id: never changed
            ({"run_updates": {root: {"output_id": "../../etc/passwd"}}}, "output_id"),
            # a value's template (sematic_k8s.graph.to_json) of another shape: the graph's and overview's 500s
            ({"run_updates": {root: {"output_ref": [1]}}}, "output_ref"),
            ({"run_updates": {root: {"output_ref": {"run": 5}}}}, "output_ref"),
            ({"run_updates": {root: {"input_refs": {"x": "a string"}}}}, "input_refs"),
            ({"run_updates": {root: {"input_refs": {"x": {"list": 5}}}}}, "input_refs"),
            ({"run_updates": {root: {"input_refs": {"x": {"list": [{"run": root}, [1]]}}}}}, "input_refs"),
            ({"run_updates": {root: {"input_refs": {"x": {"dict": [[1]]}}}}}, "input_refs"),
            ({"run_updates": {root: {"input_refs": {"x": {"artifact": "../../x"}}}}}, "input_refs"),
            ({"new_runs": {other: _run(other, root, func_path=5)}}, "func_path"),
            ({"new_runs": {other: _run(other, root, inputs={"x": 1})}}, "inputs"),
            ({"new_runs": {other: {"id": other, "root_id": root}}}, "func_path"),  # missing fields
            ({"new_runs": {other: _run(uuid.uuid4().hex, root)}}, other),  # its key is not its id
            ({"new_runs": {"z" * 300: _run("z" * 300, root)}}, "z" * 300),  # not an id
            ({"new_runs": {"../x": _run("../x", root)}}, "../x"),
            ({"new_resolutions": [_resolution(other, settings=[1, 2])]}, "settings"),
            ({"artifacts": {art: {"id": art, "format": "json", "type_name": "int", "summary": 1, "size": "big",
                                  "created_at": NOW}}}, "size"),
            ({"artifacts": {"../../x": {"id": "../../x", "format": "json", "type_name": "int", "summary": 1,
                                        "size": 1, "created_at": NOW}}}, "../../x"),
        ]
        for body, field in bad:
            r = c.post("/api/v1/store/write", json=body)
            assert r.status_code == 422, (body, r.text)
            detail = r.json()["detail"]
            assert field in detail and "\n" not in detail, (body, detail)
        for path in (f"/api/v1/resolutions/{root}", f"/api/v1/resolutions/{root}/graph", "/api/v1/resolutions",
                     f"/api/v1/resolutions/{root}/overview", "/api/v1/pipelines", f"/api/v1/runs/{root}",
                     f"/api/v1/runs?root_id={root}", f"/api/v1/runs/{root}/logs"):
            r = c.get(path)
            assert r.status_code == 200, (path, r.text)
        assert c.get(f"/api/v1/runs/{other}").status_code == 404
        assert c.get(f"/api/v1/resolutions/{other}").status_code == 404
        assert c.get(f"/api/v1/artifacts/{art}").status_code == 404
    run = served.store.get_run(root)
    assert run is not None and (run.state, run.attempts, run.error, run.output_id) == ("created", 0, None, None)
    res = served.store.get_resolution(root)
    assert res is not None and (res.state, res.settings, res.tags) == ("running", {}, None)


def test_a_token_cannot_move_its_run_into_another_resolution(served: Served) -> None:
    """A driver's token records only its own resolution: re-assigning one of its runs to another resolution (or
    another parent's resolution through its root_id) is refused, and the other resolution is left as it was."""
    other, own = uuid.uuid4().hex, uuid.uuid4().hex
    user = HttpStore(served.url, served.key)
    try:
        with served.client() as c:
            assert c.post("/api/v1/store/write", json={"new_resolutions": [_resolution(other)],
                                                       "new_runs": {other: _run(other, other)}}).status_code == 200
        token = user.mint_token(own)
        run_id = uuid.uuid4().hex
        with served.client(key=token) as d:
            r = d.post("/api/v1/store/write", json={"new_resolutions": [_resolution(own)],
                                                    "new_runs": {run_id: _run(run_id, own)}})
            assert r.status_code == 200, r.text
            r = d.post("/api/v1/store/write", json={"run_updates": {run_id: {"root_id": other}}})
            assert r.status_code == 422 and "root_id" in r.json()["detail"], r.text
        assert [r.id for r in user.runs_of_root(other)] == [other]
        assert served.store.get_run(run_id).root_id == own  # type: ignore[union-attr]
    finally:
        user.close()


def test_a_resolved_run_keeps_its_state_and_output(served: Served) -> None:
    """A client re-posting a resolved run as running, or with another output, is refused with its whole batch;
    the same update sent again (a retried write) and other fields (notes) still land."""
    root, run_id, other = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    out = "c" * 64
    with served.client() as c:
        seed = {"new_resolutions": [_resolution(root)],
                "new_runs": {root: _run(root, root, state="running"), other: _run(other, root, parent_id=root),
                             run_id: _run(run_id, root, parent_id=root, state="resolved", output_id=out)}}
        assert c.post("/api/v1/store/write", json=seed).status_code == 200
        for fields in ({"state": "running"}, {"output_id": "d" * 64}, {"state": "failed", "ended_at": NOW}):
            r = c.post("/api/v1/store/write", json={"run_updates": {run_id: fields, other: {"state": "running"}}})
            assert r.status_code == 409 and f"run {run_id} is recorded as resolved" in r.json()["detail"], r.text
        r = c.post("/api/v1/store/write", json={"run_updates": {run_id: {"state": "resolved", "output_id": out,
                                                                          "notes": {"seen": 1}}}})
        assert r.status_code == 200, r.text
    run = served.store.get_run(run_id)
    assert run is not None and (run.state, run.output_id, run.notes) == ("resolved", out, {"seen": 1})
    assert served.store.get_run(other).state == "created"  # type: ignore[union-attr]  # its batch: not recorded


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_value_recorded_ahead_under_its_content_id_is_repaired_by_its_bytes(
        tmp_path: Path, request: pytest.FixtureRequest, db: str) -> None:
    """Content ids of small values are easy to compute (42 as JSON): a client recording one ahead with another
    format or size (and another type and summary, with no bytes) does not decide what it is. The record of a writer
    whose bytes verify against the id replaces it, so the value reads back whole, never as corrupt. Its true bytes
    with a size they refute are refused (422): such a record replaced a true one (a value's type and summary stay its
    first record's: test_attacker.py::test_another_key_that_read_a_values_bytes_cannot_rewrite_its_type_or_summary)."""
    value = serialization.serialize(42)
    inline = base64.b64encode(value.payload).decode()
    honest = {**value.record(), "created_at": NOW, "inline": inline}
    db_url = request.getfixturevalue("postgres_url") if db == "postgresql" else None
    with serve(tmp_path, db_url) as served, served.client() as c:
        refuted = c.post("/api/v1/store/write", json={"artifacts": {value.id: {**honest, "size": 9}}})
        assert refuted.status_code == 422 and "its size says 9 bytes, its inline bytes are 2" in refuted.text
        for ahead in ({**honest, "format": "pickle", "type_name": "os.system", "summary": "pwned", "inline": None},
                      {**honest, "type_name": "os.system", "summary": "pwned", "size": 9, "inline": None}):
            assert c.post("/api/v1/store/write", json={"artifacts": {value.id: ahead}}).status_code == 200
            assert c.post("/api/v1/store/write", json={"artifacts": {value.id: honest}}).status_code == 200
            r = c.get(f"/api/v1/artifacts/{value.id}")
            assert r.status_code == 200, r.text
            assert {k: r.json()[k] for k in ("format", "type_name", "summary", "size")} == {
                k: honest[k] for k in ("format", "type_name", "summary", "size")}
            r = c.get(f"/api/v1/artifacts/{value.id}/data")
            assert r.status_code == 200 and r.content == value.payload, r.text


def test_values_the_database_refuses_are_a_422_with_a_message(tmp_path: Path, postgres_url: str) -> None:
    """PostgreSQL refuses NUL characters in text, and no database keeps a time before year 1 or after 9999: a
    request carrying one (in a body or a query) is told so, never answered 500."""
    with serve(tmp_path, postgres_url) as served, served.client(served.admin_key) as c:
        root = uuid.uuid4().hex
        seed = {"new_resolutions": [_resolution(root)], "new_runs": {root: _run(root, root)}}
        assert c.post("/api/v1/store/write", json=seed).status_code == 200
        refused = [("POST", f"/api/v1/resolutions/{root}/labels", {"note": "a\x00b"}, None),
                   ("POST", "/api/v1/api-keys", {"name": "a\x00b"}, None),
                   ("GET", "/api/v1/pipelines", None, {"q": "\x00"}),
                   ("GET", "/api/v1/runs", None, {"func": "\x00"}),
                   ("POST", "/api/v1/store/write", {"run_updates": {root: {"func_name": "\x00"}}}, None),
                   ("POST", "/api/v1/store/write", {"run_updates": {root: {"ended_at": "0001-01-01T00:00:00+05:00"}}},
                    None)]
        for method, path, body, params in refused:
            r = c.request(method, path, json=body, params=params)
            assert r.status_code == 422, (path, body, params, r.text)
            assert "\n" not in r.json()["detail"], r.text
        res = served.store.get_resolution(root)
        assert res is not None and res.note is None
        run = served.store.get_run(root)
        assert run is not None and run.func_name == "f" and run.ended_at is None



@sk.func
def reads_a_header(data: str) -> int:
    raise ValueError(f"bad header {data!s}")  # a NUL of the data in the message, as decoding binary data gives


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_funcs_error_holding_a_nul_character_is_recorded(tmp_path: Path, request: pytest.FixtureRequest,
                                                           db: str) -> None:
    """A func fails with a message holding a NUL character (PostgreSQL's text refuses one): its resolution is
    recorded failed, its error text saying ``\\x00``, its run's error (JSON) the message as it was, and the user
    gets the func's error. Was, on PostgreSQL: the write recording the failure refused whole (422), the user told
    "ServerError ... 422", the resolution left running (until marked dead) and the failed run never recorded."""
    url = request.getfixturevalue("postgres_url") if db == "postgresql" else None
    with serve(tmp_path, url) as served:
        f = reads_a_header("GIF89a\x00\x01")
        with pytest.raises(ResolutionFailed) as failed:
            f.resolve(sk.LocalResolver(home=tmp_path / "home", server=served.url, api_key=served.key))
        assert isinstance(failed.value.__cause__, ValueError)
        res = served.store.get_resolution(f.id)
        assert res is not None and res.state == "failed", res
        assert res.error is not None and "bad header GIF89a\\x00\x01" in res.error, res.error
        run = served.store.get_run(f.id)
        assert run is not None and run.state == "failed" and run.error is not None
        assert run.error["message"] == "bad header GIF89a\x00\x01"


def test_numbers_json_does_not_have_and_huge_bodies_are_refused_briefly(served: Served) -> None:
    """NaN and Infinity are not JSON (a browser's JSON.parse refuses a record holding one), nor is a surrogate's
    UTF-8 encoding; integers past their column overflow; and a 422 never echoes the client's input (a 1 MB
    string, a NaN it cannot encode)."""
    root = uuid.uuid4().hex
    with served.client() as c:
        seed = {"new_resolutions": [_resolution(root)], "new_runs": {root: _run(root, root)}}
        assert c.post("/api/v1/store/write", json=seed).status_code == 200
        for content_type in ("application/json", "application/vnd.sematic+json"):
            for raw in (b'{"run_updates": {"%s": {"notes": {"x": NaN}}}}', b'{"run_updates": {"%s": {"notes": '
                        b'{"x": -Infinity}}}}', b'{"run_updates": {"%s": {"attempts": 1e400}}}',
                        b'{"run_updates": {"%s": {"func_name": "\xed\xb3\xbf"}}}'):  # a UTF-8 encoded surrogate
                r = c.post("/api/v1/store/write", content=raw % root.encode(), headers={"Content-Type": content_type})
                assert r.status_code == 422 and "\n" not in r.json()["detail"], (content_type, raw, r.text)
        r = c.post(f"/api/v1/resolutions/{root}/labels", content=b'{"note": NaN}',
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        for body, field in (({"run_updates": {root: {"attempts": 10**30}}}, "attempts"),
                            ({"artifacts": {"b" * 64: {"id": "b" * 64, "format": "json", "type_name": "int",
                                                       "size": 10**30}}}, "size"),
                            ({"new_runs": "x" * 1_000_000}, "new_runs")):
            r = c.post("/api/v1/store/write", json=body)
            assert r.status_code == 422 and field in r.json()["detail"], r.text
            assert len(r.content) < 10_000
    run = served.store.get_run(root)
    assert run is not None and (run.notes, run.attempts) == ({}, 0)


def test_a_storage_url_that_is_not_a_string_is_not_read(served: Served) -> None:
    """A resolution's settings are the client's: a storage_url of another type is a storage this server does
    not read (409 saying so), for its runs' logs and its artifacts, not a 500."""
    root = uuid.uuid4().hex
    value = serialization.serialize("x" * 10_000)  # not inline: read from storage
    art = {**value.record(), "created_at": NOW}
    with served.client() as c:
        seed = {"new_resolutions": [_resolution(root, settings={"kind": "cloud", "storage_url": 5})],
                "new_runs": {root: _run(root, root)}, "artifacts": {value.id: art}}
        assert c.post("/api/v1/store/write", json=seed).status_code == 200
        for path in (f"/api/v1/runs/{root}/logs", f"/api/v1/artifacts/{value.id}/data?resolution_id={root}"):
            r = c.get(path)
            assert r.status_code == 409 and "does not read" in r.json()["detail"], (path, r.text)


def test_a_long_storage_url_is_cut_in_the_answer_naming_it(served: Served) -> None:
    """A storage_url of 60,000 characters (within the settings' bound) was echoed whole in the 409 of its logs."""
    root = uuid.uuid4().hex
    url = "s3://bucket/" + "p" * 60_000
    with served.client() as c:
        seed = {"new_resolutions": [_resolution(root, settings={"kind": "cloud", "storage_url": url})],
                "new_runs": {root: _run(root, root)}}
        assert c.post("/api/v1/store/write", json=seed).status_code == 200
        r = c.get(f"/api/v1/runs/{root}/logs")
        detail = r.json()["detail"]
        assert r.status_code == 409 and "does not read" in detail and "(60012 characters)" in detail, r.text
        assert len(r.content) < 1_000


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_stored_value_recorded_ahead_is_repaired_by_its_bytes_in_s3(
        tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, db: str) -> None:
    """A value stored in S3 (its record holds no bytes), recorded ahead by a client with another format or size:
    the honest writer's record, which the stored bytes verify, replaces it; while the bytes are not stored yet the
    recorded one stays, and the next conflicting write checks again. A lie written after the truth changes
    nothing."""
    endpoint, bucket = fresh_bucket(monkeypatch, "ahead")
    storage = S3Storage(bucket, "arts", endpoint_url=endpoint, retry_window=1)
    db_url = request.getfixturevalue("postgres_url") if db == "postgresql" else None
    fields = ("format", "type_name", "summary", "size")
    with serve(tmp_path, db_url, storage=storage) as served, served.client() as c:
        for n, ahead_fields in enumerate(({"format": "pickle", "type_name": "os.system", "summary": "pwned"},
                                          {"type_name": "os.system", "size": 9})):
            value = serialization.serialize([n] * 3000)
            honest = {**value.record(), "created_at": NOW}
            ahead = {**honest, **ahead_fields}

            def recorded() -> dict[str, Any]:
                r = c.get(f"/api/v1/artifacts/{value.id}")  # noqa: B023 - read in this iteration only
                assert r.status_code == 200, r.text
                return {k: r.json()[k] for k in fields}

            def write(record: dict[str, Any]) -> None:
                r = c.post("/api/v1/store/write", json={"artifacts": {value.id: record}})  # noqa: B023
                assert r.status_code == 200, r.text

            write(ahead)
            write(honest)  # its bytes are not stored yet: nothing tells which record is true
            assert recorded() == {k: ahead[k] for k in fields}
            storage.put(artifact_key(value.id), value.payload)
            write(honest)  # a conflicting write checks again
            assert recorded() == {k: honest[k] for k in fields}
            r = c.get(f"/api/v1/artifacts/{value.id}/data")
            assert r.status_code == 200 and r.content == value.payload, r.text
            write(ahead)  # a lie after the truth: the bytes refute it
            assert recorded() == {k: honest[k] for k in fields}


def test_a_stored_value_recorded_ahead_as_larger_than_the_server_reads_is_repaired_by_its_bytes(
        tmp_path: Path) -> None:
    """A value stored (its record holds no bytes) recorded ahead by another client with a size of 1 TB, more than the
    server reads to check a record (256 MiB): the honest record, which its stored bytes verify, replaces it, and its
    bytes are served. Was: "one says it is larger than the server reads to check them: the recorded one stays", for
    good: every cache hit of that value a miss (its stored bytes not the size recorded), every rerun reusing it refused
    ("changed in storage"), its bytes a 413 ("read it from its storage directly")."""
    storage = LocalStorage(tmp_path / "store")
    with serve(tmp_path, storage=storage) as served, served.client() as c:
        value = serialization.serialize(list(range(5000)))
        honest = {**value.record(), "created_at": NOW}
        for record in ({**honest, "size": 10**12}, honest):
            r = c.post("/api/v1/store/write", json={"artifacts": {value.id: record}})
            assert r.status_code == 200, r.text
            storage.put(artifact_key(value.id), value.payload)  # the honest writer's bytes, as it records them
        assert c.get(f"/api/v1/artifacts/{value.id}").json()["size"] == len(value.payload)
        r = c.get(f"/api/v1/artifacts/{value.id}/data")
        assert r.status_code == 200 and r.content == value.payload, r.text[:300]


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_values_nested_too_deep_to_read_back_are_refused(served: Served) -> None:
    """JSON encoders stop at about 255 levels (orjson's, pydantic's): a value nested 300 deep that a driver's token
    records in its own resolution made every read of it 500 and, through the listing, the dashboard's index for
    everyone. Such a write is a 422 naming the field; what is recorded still reads back, shallower values too."""
    own = uuid.uuid4().hex
    user = HttpStore(served.url, served.key)
    try:
        token = user.mint_token(own)
    finally:
        user.close()
    deep, ok = _nested(300), _nested(100)
    template: Any = {"run": own}
    for _ in range(150):
        template = {"list": [template]}
    with served.client(key=token) as d:
        r = d.post("/api/v1/store/write", json={"new_resolutions": [_resolution(own, settings={"ok": ok})],
                                                "new_runs": {own: _run(own, own, notes={"ok": ok})}})
        assert r.status_code == 200, r.text
        for body, field in (({"resolution_updates": {own: {"settings": {"x": deep}}}}, "settings"),
                            ({"run_updates": {own: {"notes": {"x": deep}}}}, "notes"),
                            ({"run_updates": {own: {"output_ref": template}}}, "output_ref"),
                            ({"run_updates": {own: {"error": {"x": deep}}}}, "error")):
            r = d.post("/api/v1/store/write", json=body)
            assert r.status_code == 422, (field, r.text)
            assert field in r.json()["detail"] and "nested" in r.json()["detail"] and "\n" not in r.json()["detail"]
    with served.client() as c:
        for path in ("/api/v1/resolutions", "/api/v1/pipelines", f"/api/v1/resolutions/{own}",
                     f"/api/v1/resolutions/{own}/graph", f"/api/v1/resolutions/{own}/overview", f"/api/v1/runs/{own}",
                     f"/api/v1/runs?root_id={own}"):
            r = c.get(path)
            assert r.status_code == 200, (path, r.text)
        assert c.get(f"/api/v1/runs/{own}").json()["notes"] == {"ok": ok}


def test_errors_larger_than_any_client_records_are_refused(served: Served) -> None:
    """Clients clip an error's message and traceback (tens of kilobytes at most); one of megabytes, which every
    listing of its resolution would carry whole, is a 422 naming the field. A clipped error of a real failure
    is recorded."""
    own = uuid.uuid4().hex
    huge = "x" * 600_000
    clipped = error_info(ValueError("bad rows: " + "row\n" * 1_000_000))
    with served.client() as c:
        r = c.post("/api/v1/store/write", json={"new_resolutions": [_resolution(own)],
                                                "new_runs": {own: _run(own, own)}})
        assert r.status_code == 200, r.text
        for body, field in (({"run_updates": {own: {"error": {"type": "ValueError", "message": huge}}}}, "error"),
                            ({"resolution_updates": {own: {"error": huge}}}, "error")):
            r = c.post("/api/v1/store/write", json=body)
            assert r.status_code == 422, (field, r.text[:300])
            assert field in r.json()["detail"] and "\n" not in r.json()["detail"]
        r = c.post("/api/v1/store/write", json={"run_updates": {own: {"error": clipped}},
                                                "resolution_updates": {own: {"error": clipped["message"]}}})
        assert r.status_code == 200, r.text[:300]
        assert c.get(f"/api/v1/runs/{own}").json()["error"]["message"] == clipped["message"]
