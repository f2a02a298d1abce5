"""Requests an attacker or a confused client sends, over real HTTP, found by fuzzing the API from its OpenAPI schema
(schemathesis, run by hand): each is refused with a 4xx whose ``detail`` is one line naming the problem, never a
500, and the error bodies are the ones the schema documents."""

from __future__ import annotations

import datetime as dt
import re
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.wire import batch_to_json
from serving import Served, app_routes, serve

NOW = utcnow().isoformat() + "Z"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("odd")) as s:
        yield s


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[httpx.Client]:
    with served.client() as c:
        yield c


def _one_line(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text[:500]
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) < 1000, detail
    return detail


def test_a_time_whose_utc_no_database_keeps_is_a_422_naming_the_parameter(client: httpx.Client) -> None:
    """``/pipelines?since=9999-12-31T23:59:59-01:00`` is a valid ISO 8601 time whose UTC is in year 10000: converting
    it to the store's naive UTC overflowed, a 500. A time within the years, with an offset, still filters."""
    for name, value in (("since", "9999-12-31T23:59:59-01:00"), ("until", "0001-01-01T00:00:00+01:00")):
        detail = _one_line(client.get("/api/v1/pipelines", params={name: value}), 422)
        assert repr(name) in detail and "year" in detail, detail
    root = uuid.uuid4().hex
    r = client.post("/api/v1/store/write", json={
        "new_resolutions": [{"id": root, "root_func_path": "odd:times", "state": "resolved", "created_at": NOW}]})
    assert r.status_code == 200, r.text
    created = dt.datetime.fromisoformat(NOW.rstrip("Z")).replace(tzinfo=dt.timezone.utc)
    in_tokyo = created.astimezone(dt.timezone(dt.timedelta(hours=9)))
    for params, found in (({"since": in_tokyo.isoformat()}, True),
                          ({"since": (in_tokyo + dt.timedelta(seconds=1)).isoformat()}, False)):
        r = client.get("/api/v1/pipelines", params={**params, "func": "odd:times"})
        assert r.status_code == 200, r.text
        assert (r.json()["total"] == 1) is found, (params, r.json())


OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
TIMES = st.one_of(st.datetimes(timezones=OFFSETS),  # any time, and the first and last hours of the years
                  st.datetimes(max_value=dt.datetime(1, 1, 1, 4), timezones=OFFSETS),
                  st.datetimes(min_value=dt.datetime(9999, 12, 31, 20), timezones=OFFSETS))


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(when=TIMES)
def test_any_time_in_a_query_is_taken_or_refused_never_a_500(client: httpx.Client, when: dt.datetime) -> None:
    r = client.get("/api/v1/pipelines", params={"since": when.isoformat(), "until": when.isoformat()})
    assert r.status_code in (200, 422), (when.isoformat(), r.text[:300])


@pytest.mark.parametrize(("body", "content_type", "expected"), [
    (b"not json", "application/json", "body: not valid JSON at character 0: "),
    (b'{"note": "\\ud800"}', "application/json", "body: not valid JSON at character 10: no low surrogate"),
    (b'{"a": 1} x', "application/json", "body: not valid JSON at character 9: "),
    (b"[" * 2000, "application/json", "body: not valid JSON at character 1025: depth limit exceeded"),
    (b"[]", "application/json", "body: not a JSON object: send one, with Content-Type: application/json"),
    (b"{}", "text/plain", "body: not a JSON object: send one, with Content-Type: application/json"),
    (b"a=b", "application/x-www-form-urlencoded", "body: not a JSON object: send one, with Content-Type: "),
])
@pytest.mark.parametrize("path", ["/api/v1/store/write", "/api/v1/resolutions/{id}/labels"])
def test_a_body_that_is_no_json_object_is_told_so(served: Served, client: httpx.Client, path: str, body: bytes,
                                                    content_type: str, expected: str) -> None:
    """The answer said "body field '0': JSON decode error" (the position named as a field, the reason left out), or
    "body field: Input should be a valid dictionary or object to extract fields from"."""
    root = uuid.uuid4().hex
    r = client.post("/api/v1/store/write", json={
        "new_resolutions": [{"id": root, "root_func_path": "odd:body", "state": "running", "created_at": NOW}]})
    assert r.status_code == 200, r.text
    r = client.post(path.format(id=root), content=body, headers={"Content-Type": content_type})
    assert _one_line(r, 422).startswith(expected), r.json()["detail"]
    res = served.store.get_resolution(root)
    assert res is not None and (res.state, res.note, res.tags, res.labels_version) == ("running", None, None, 0)


def _documented(spec: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    responses = spec["paths"][path][method]["responses"]
    response = responses.get(str(status)) or responses[f"{str(status)[0]}XX"]
    schema = response["content"]["application/json"]["schema"]
    ref = schema["$ref"].rpartition("/")[2]
    return spec["components"]["schemas"][ref]


def test_the_schema_documents_the_error_bodies_the_server_sends(served: Served, client: httpx.Client) -> None:
    """OpenAPI said a 422's ``detail`` is a list of errors (FastAPI's own body), and documented no 401: clients
    generated from the schema could not read the server's errors. Every error is ``{"detail": "<one line>", ...}``,
    a 422 with its problems under ``errors``."""
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    with served.client(key=None) as anonymous:
        answers = [("/api/v1/resolutions", "get", client.get("/api/v1/resolutions", params={"limit": 0})),
                   ("/api/v1/store/write", "post", client.post("/api/v1/store/write", json={"new_runs": 5})),
                   ("/api/v1/resolutions", "get", anonymous.get("/api/v1/resolutions")),
                   ("/api/v1/runs/{run_id}", "get", client.get(f"/api/v1/runs/{'e' * 32}"))]
    for path, method, r in answers:
        assert r.status_code in (401, 404, 422), r.text
        schema = _documented(spec, path, method, r.status_code)
        body = r.json()
        assert set(schema["required"]) <= set(body) and schema["properties"]["detail"]["type"] == "string"
        assert isinstance(body["detail"], str) and "\n" not in body["detail"], body
        if r.status_code == 422:
            assert isinstance(body["errors"], list) and "array" in str(schema["properties"]["errors"]), body


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_record_without_its_creation_time_is_a_422_naming_the_field(tmp_path: Path, request: pytest.FixtureRequest,
                                                                      db: str) -> None:
    """A new resolution, run or artifact without ``created_at`` (or with null), or an update setting it to null, was
    sent to the database, whose NOT NULL refused it: answered 409 "batch conflicts with recorded data", which is for
    conflicts with what is recorded, and on PostgreSQL in several lines echoing the whole row back (its ``DETAIL:
    Failing row contains (...)``). Now a 422 naming the field, and nothing of the batch is written."""
    db_url = request.getfixturevalue("postgres_url") if db == "postgresql" else None
    root, run, art = uuid.uuid4().hex, uuid.uuid4().hex, "e" * 64
    resolution = {"id": root, "root_func_path": "odd:when", "state": "running", "created_at": NOW}
    new_run = {"id": run, "root_id": root, "func_path": "odd:when", "func_name": "when", "state": "created",
               "source_text": "x" * 50_000, "created_at": NOW}
    artifact = {"id": art, "format": "json", "type_name": "int", "size": 1, "created_at": NOW}
    with serve(tmp_path, db_url) as served, served.client() as c:
        assert c.post("/api/v1/store/write", json={"new_resolutions": [resolution]}).status_code == 200
        for body, field in [
            ({"new_resolutions": [{**resolution, "id": uuid.uuid4().hex, "created_at": None}]}, "created_at"),
            ({"new_runs": {run: {k: v for k, v in new_run.items() if k != "created_at"}}},
             f"new_runs.{run}.created_at"),
            ({"new_runs": {run: new_run}, "artifacts": {art: {**artifact, "created_at": None}}},
             f"artifacts.{art}.created_at"),
            ({"resolution_updates": {root: {"created_at": None}}}, f"resolution_updates.{root}.created_at"),
        ]:
            detail = _one_line(c.post("/api/v1/store/write", json=body), 422)
            assert field in detail, (field, detail)
        assert c.get(f"/api/v1/runs/{run}").status_code == 404
        assert c.get(f"/api/v1/artifacts/{art}").status_code == 404
        r = c.get(f"/api/v1/resolutions/{root}")
        assert r.status_code == 200 and r.json()["created_at"] == NOW, r.text


def test_a_tag_both_added_and_removed_is_refused(served: Served, client: httpx.Client) -> None:
    """``{"add": ["keep"], "remove": ["keep"]}`` asks for two things at once: it was answered 200, the tag removed
    and the add dropped unsaid. Now a 422 naming the tag, and the labels are left as they were."""
    root = uuid.uuid4().hex
    r = client.post("/api/v1/store/write", json={"new_resolutions": [
        {"id": root, "root_func_path": "odd:labels", "state": "resolved", "tags": ["keep"], "created_at": NOW}]})
    assert r.status_code == 200, r.text
    for change in ({"add": ["keep"], "remove": ["keep"]}, {"add": ["new", "x"], "remove": ["x"], "labels_version": 0}):
        detail = _one_line(client.post(f"/api/v1/resolutions/{root}/labels", json=change), 422)
        assert "both added and removed" in detail and ("'keep'" in detail or "'x'" in detail), detail
    res = served.store.get_resolution(root)
    assert res is not None and (res.tags, res.labels_version) == (["keep"], 0)


def test_a_labels_version_the_resolution_never_had_is_refused(served: Served, client: httpx.Client) -> None:
    """A change made to labels_version 7 of a resolution at 0 was answered 409 "changed since they were read"
    (nothing had changed: the client sent a version it never read). Now a 422 saying so; nothing changes."""
    root = uuid.uuid4().hex
    r = client.post("/api/v1/store/write", json={"new_resolutions": [
        {"id": root, "root_func_path": "odd:labels", "state": "resolved", "created_at": NOW}]})
    assert r.status_code == 200, r.text
    detail = _one_line(client.post(f"/api/v1/resolutions/{root}/labels", json={"add": ["x"], "labels_version": 7}),
                       422)
    assert f"labels_version 7 is newer than resolution {root}'s (0)" in detail, detail
    res = served.store.get_resolution(root)
    assert res is not None and (res.tags, res.labels_version) == (None, 0)


def test_a_field_a_request_does_not_take_is_a_422_naming_it(served: Served, client: httpx.Client) -> None:
    """A misspelt or unsupported field (``tags`` for ``add``, a rerun's ``max_parallelism``) was dropped: 200, and
    nothing asked for done. Now a 422 naming it; nothing changes."""
    root = uuid.uuid4().hex
    r = client.post("/api/v1/store/write", json={"new_resolutions": [
        {"id": root, "root_func_path": "odd:labels", "state": "resolved", "created_at": NOW}]})
    assert r.status_code == 200, r.text
    for path, body, field in ((f"/resolutions/{root}/labels", {"tags": ["x"]}, "tags"),
                              (f"/resolutions/{root}/rerun", {"mode": "from", "max_parallelism": 4}, "max_parallelism"),
                              ("/api-keys", {"name": "ci", "role": "admin"}, "role")):
        detail = _one_line(client.post(f"/api/v1{path}", json=body), 422)
        assert detail.startswith(f"body field {field!r}: not a field of this request"), detail
    res = served.store.get_resolution(root)
    assert res is not None and (res.tags, res.labels_version) == (None, 0)


def test_a_store_write_section_the_server_does_not_know_is_a_422_naming_it(served: Served,
                                                                          client: httpx.Client) -> None:
    """A store write with a section this server does not know (a newer client's, or misspelt) was answered
    ``{"ok": true}`` and the section dropped: its records lost. Now a 422 naming it and what to do; nothing of the
    batch is recorded. Every section the HTTP store sends, empty or left out, is still taken."""
    root = uuid.uuid4().hex
    resolution = {"id": root, "root_func_path": "odd:sections", "state": "resolved", "created_at": NOW}
    for body, named in (({"runs": 5}, "'runs'"),
                        ({"new_resolutions": [resolution], "new_run": {root: {}}}, "'new_run'"),
                        ({f"s{i}": {} for i in range(7)}, "'s0', 's1', 's2', 's3', 's4' and 2 more")):
        detail = _one_line(client.post("/api/v1/store/write", json=body), 422)
        assert detail.startswith(f"body section(s) {named}: not part of a store write this server knows"), detail
        assert "upgrade the server, or use a client of its version" in detail, detail
    assert served.store.get_resolution(root) is None
    for body in ({}, batch_to_json(Batch()), {**batch_to_json(Batch()), "new_resolutions": [resolution]}):
        r = client.post("/api/v1/store/write", json=body)
        assert r.status_code == 200 and r.json() == {"ok": True}, r.text
    assert served.store.get_resolution(root) is not None


def test_a_key_named_as_an_active_key_is_a_409(served: Served) -> None:
    """``POST /api-keys`` refuses the name of an active key, as ``api-keys create`` does (one code path): revoking by
    name would revoke both. Once that key is revoked, the name is free again."""
    name = f"odd-{uuid.uuid4().hex[:8]}"
    with served.client(served.admin_key) as admin:
        r = admin.post("/api/v1/api-keys", json={"name": name})
        assert r.status_code == 201, r.text
        detail = _one_line(admin.post("/api/v1/api-keys", json={"name": name, "admin": True}), 409)
        assert detail.startswith(f"an active API key is already named {name!r}"), detail
        assert [k["name"] for k in admin.get("/api/v1/api-keys").json()["items"]].count(name) == 1
        assert admin.post(f"/api/v1/api-keys/{r.json()['id']}/revoke", json={}).status_code == 200
        assert admin.post("/api/v1/api-keys", json={"name": name}).status_code == 201


@pytest.mark.parametrize("name", ["a\nb", "a\tb", "", "   ", " alice", "x" * 129])
def test_a_key_name_that_would_not_list_as_itself_is_a_422(served: Served, name: str) -> None:
    """``POST /api-keys`` refuses a name with a line break or a tab, spaces at either end, none or too long, in the
    words ``api-keys create`` uses (one check, auth.check_key_name; was: made, or pydantic's list of errors)."""
    with served.client(served.admin_key) as admin:
        detail = _one_line(admin.post("/api/v1/api-keys", json={"name": name}), 422)
        assert detail == ("an API key name must have 1 to 128 printable characters (no line breaks, tabs or other "
                          "control characters) and no space at either end"), detail
        assert name not in [k["name"] for k in admin.get("/api/v1/api-keys").json()["items"]]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_the_pipelines_index_names_at_most_a_thousand_root_funcs(tmp_path: Path, request: pytest.FixtureRequest,
                                                                 db: str) -> None:
    """``/pipelines`` (the dashboard's index) named every root func ever recorded, for its filter: a client recording
    resolutions of a million made-up funcs (50,000 a request) made every index page answer hundreds of megabytes.
    Now the first 1,000, sorted, and how many there are."""
    n = 1_050
    funcs = sorted(f"odd.m{i:05d}:{'f' * 400}" for i in range(n))
    db_url = request.getfixturevalue("postgres_url") if db == "postgresql" else None
    with serve(tmp_path, db_url) as served, served.client() as c:
        r = c.post("/api/v1/store/write", json={"new_resolutions": [
            {"id": uuid.uuid4().hex, "root_func_path": f, "state": "resolved", "created_at": NOW} for f in funcs]})
        assert r.status_code == 200, r.text
        page = c.get("/api/v1/pipelines").json()
        assert page["funcs"] == funcs[:1000] and page["funcs_total"] == n and page["total"] == n
        assert len(page["groups"]) == 20


def _query_params(dependant: Any) -> Iterator[Any]:
    """A route's query parameters (FastAPI's fields), its dependencies' too."""
    yield from dependant.query_params
    for sub in dependant.dependencies:
        yield from _query_params(sub)


def _is_text(annotation: Any) -> bool:
    """Whether a query parameter of ``annotation`` takes text (``str``, ``str | None``, ``list[str]``)."""
    return annotation is str or any(_is_text(a) for a in typing.get_args(annotation))


def test_a_query_parameter_holding_a_nul_character_is_a_422_naming_it(db_url: str, tmp_path: Path) -> None:
    """Walks the app's GET routes (a route added later too) and sends each of their text query parameters holding a
    NUL character: each a one-line 422 naming it, on SQLite as on PostgreSQL. Was: PostgreSQL refused ``q``, ``func``
    and the like as a 422 naming no parameter ("the database refuses a value of this request"), SQLite searched with
    it (200), and a parameter with a pattern said it did not match."""
    with serve(tmp_path, db_url) as served, served.client(served.admin_key) as c:
        root = uuid.uuid4().hex
        r = c.post("/api/v1/store/write", json={
            "new_resolutions": [{"id": root, "root_func_path": "odd:nul", "state": "running", "created_at": NOW}],
            "new_runs": {root: {"id": root, "root_id": root, "func_path": "odd:nul", "func_name": "nul",
                                "state": "created", "created_at": NOW}}})
        assert r.status_code == 200, r.text
        ids = {"artifact_id": "b" * 64, "key_id": "c" * 32, "cache_key": "d" * 64}  # else: the resolution's id
        walked = []
        for template, route in app_routes(served.app.routes):
            dependant = getattr(route, "dependant", None)
            if "GET" not in route.methods or dependant is None:
                continue
            path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: ids.get(m.group(1), root), template)
            for param in _query_params(dependant):
                if _is_text(param.field_info.annotation):
                    detail = _one_line(c.get(path, params={param.alias: "a\x00b"}), 422)
                    assert detail == f"query parameter '{param.alias}' holds a NUL character; remove it", detail
                    walked.append(f"{template}?{param.alias}")
        assert {"/api/v1/pipelines?q", "/api/v1/pipelines?func", "/api/v1/runs?func",
                "/api/v1/resolutions/{resolution_id}/overview?expand"} <= set(walked), walked
        r = c.get("/api/v1/pipelines", params={"q": "nul"})  # text without one: searched
        assert r.status_code == 200 and r.json()["total"] == 1, r.text
