"""Large free-form fields, over real HTTP: a run's func source is left out of listings and its error is an excerpt
there, as a resolution's error is clipped (the run's and the resolution's own reads have them whole, records written
before the bounds included), and every field without a bound of its type has one at write (422 naming the field, the
bound and what to do), which the library keeps to: a func's long source is recorded clipped, its settings and a
resolution's are checked where they are given."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import sematic_k8s as sk
from sematic_k8s import limits, serialization, settings
from sematic_k8s.cli import cli
from sematic_k8s.error_records import (
    LISTED_ERROR_CHARS,
    LISTED_KINDS,
    LISTED_RESOLUTION_ERROR_CHARS,
    clipped,
    error_info,
)
from sematic_k8s.errors import FuncError
from sematic_k8s.resolvers.driven import drive
from sematic_k8s.specs import DriverSpec
from sematic_k8s.storage.base import artifact_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_url
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from serving import Served, serve, write_through_api

try:
    import server_pipeline as sp
except ImportError:  # pragma: no cover
    from tests import server_pipeline as sp

NOW = utcnow().isoformat() + "Z"
LISTING_BYTES = 64 * 1024  # what a listing of these few runs comes to without their source (about 10 KB)


def _resolver(served: Served, **kwargs: Any) -> sk.LocalResolver:
    return sk.LocalResolver(home=served.home, server=served.url, api_key=served.key, **kwargs)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_listings_leave_out_a_runs_source_which_its_own_read_has_whole(tmp_path: Path, request: pytest.FixtureRequest,
                                                                      monkeypatch: pytest.MonkeyPatch, db: str) -> None:
    """Ten runs recorded with a source of a million characters each (as a version before the bounds took them, or
    a client of its own): their listings (by resolution, across resolutions, by id prefix, the resolution's graph)
    were 10 MB, and a page of 100 such runs 100 MB for everyone; now each is a few KB without the source, which
    ``GET /runs/{id}`` (the dashboard's run panel) and ``sematic-k8s runs show`` still give whole. ``runs list -o
    json`` prints what a listing holds."""
    db_url = request.getfixturevalue("postgres_url") if db == "postgresql" else None
    root = uuid.uuid4().hex
    source = "def f():\n" + "    x = 1  # a long func\n" * 40_000  # 1,000,009 characters
    with serve(tmp_path, db_url) as served, served.client() as c:
        batch = Batch()
        batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:f", state="resolved", created_at=utcnow()))
        ids = [root] + [uuid.uuid4().hex for _ in range(9)]
        for run_id in ids:
            batch.add_run(RunRecord(id=run_id, root_id=root, parent_id=None if run_id == root else root,
                                    func_path="m:f", func_name="f", state="resolved", source_text=source,
                                    created_at=utcnow()))
        served.store.write(batch)  # straight into the database: the server's bounds do not apply

        for path, params in (("/api/v1/runs", {"root_id": root}), ("/api/v1/runs", {"order": "desc"}),
                             ("/api/v1/runs", {"id_prefix": ids[3][:8]}), (f"/api/v1/resolutions/{root}/graph", {})):
            r = c.get(path, params=params)
            assert r.status_code == 200, r.text[:300]
            assert len(r.content) < LISTING_BYTES, (path, params, len(r.content))
            items = r.json()["runs" if path.endswith("/graph") else "items"]
            assert items and all("source_text" not in i and i["func_name"] == "f" for i in items), (path, params)
        assert {i["id"] for i in c.get(f"/api/v1/resolutions/{root}/graph").json()["runs"]} == set(ids)
        for run_id in (root, ids[5]):
            assert c.get(f"/api/v1/runs/{run_id}").json()["source_text"] == source  # nothing recorded is lost

        monkeypatch.setenv(settings.SERVER_ENV, served.url)
        monkeypatch.setenv(settings.API_KEY_ENV, served.key or "")
        listed = CliRunner().invoke(cli, ["runs", "list", "--root-id", root, "-o", "json"])
        assert listed.exit_code == 0, listed.output[-2000:]
        assert len(listed.stdout) < LISTING_BYTES
        assert {i["id"] for i in json.loads(listed.stdout)["items"]} == set(ids)
        assert all("source_text" not in i for i in json.loads(listed.stdout)["items"])
        shown = CliRunner().invoke(cli, ["runs", "show", ids[5][:12], "-o", "json"])  # found by a listing
        assert shown.exit_code == 0, shown.output[-2000:]
        assert json.loads(shown.stdout)["source_text"] == source


def _ping(depth: int) -> None:
    """A deep recursion (two funcs, so Python does not fold its frames) ending in a pandas-like error: a long repr."""
    if depth == 0:
        raise ValueError("cannot merge frames:\n" + "\n".join(f"{i:>8} {i * 0.25:>14} row-{i}" for i in range(2_000)))
    _pong(depth - 1)


def _pong(depth: int) -> None:
    _ping(depth)


def _library_error() -> dict[str, Any]:
    """An error as the library records it (a worker's, the resolution loop's): clipped to 20,000 + 100,000."""
    try:
        _ping(300)
    except ValueError as e:
        return error_info(e)
    raise AssertionError("no error")


ERROR_LISTING_BYTES = 256 * 1024  # what these 61 failed runs list in (about 97 KB; were 26 MB)


def _is_excerpt_of(listed: dict[str, Any], whole: dict[str, Any]) -> bool:
    return listed == {"type": whole["type"], "message": clipped(whole["message"], LISTED_ERROR_CHARS),
                      "excerpt": True, "message_chars": len(whole["message"]),
                      "traceback_chars": len(whole["traceback"]), "mro": whole["mro"][:LISTED_KINDS]}


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_listings_carry_an_excerpt_of_each_runs_error_which_its_own_read_has_whole(
        tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, db: str) -> None:
    """A resolution of 61 runs that failed, sent through the API by a client that does not clip (60 errors of about
    440,000 characters of JSON, under the server's bound) and one recorded as the library records a deep recursion
    ending in a long repr (clipped to 20,000 + 100,000 characters); the resolution's error 490,000 characters. Its
    listings (GET /runs by resolution, by state across resolutions, the resolution's /graph) were 26 MB each,
    /resolutions and /pipelines half a megabyte; now a listed run's error is its type and its message's start and
    end (at most 1,000 characters), marked as an excerpt with the whole lengths, and a listed resolution's error is
    clipped to 2,000. GET /runs/{id} and GET /resolutions/{id} (and /graph's resolution), ``runs show`` and
    ``resolutions show`` give them whole; ``runs list -o json`` and ``resolutions list -o json`` print what the
    listings hold."""
    db_url = request.getfixturevalue("postgres_url") if db == "postgresql" else None
    root = uuid.uuid4().hex
    ids = [root] + [uuid.uuid4().hex for _ in range(60)]
    long_error = {"type": "ValueError", "message": "the start " + "m" * 190_000 + " the end",
                  "traceback": "Traceback (most recent call last):\n" + "  t\n" * 50_000 + "ValueError: the end\n",
                  "mro": ["ValueError", "Exception", "BaseException", "object"]}
    assert 400_000 < len(json.dumps(long_error)) < 500_000  # the server's bound (its JSON text)
    errors = {run_id: long_error for run_id in ids[1:]} | {root: _library_error()}
    assert len(errors[root]["traceback"]) == 100_000 and len(errors[root]["message"]) == 20_000  # clipped
    res_error = f"resolution {root} failed: " + "r" * 490_000 + " the end"
    with serve(tmp_path, db_url) as served, served.client() as c:
        batch = Batch()
        batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:fan", state="failed", error=res_error,
                                              created_at=utcnow(), ended_at=utcnow()))
        for run_id in ids:
            batch.add_run(RunRecord(id=run_id, root_id=root, parent_id=None if run_id == root else root,
                                    func_path="m:f", func_name="f", state="failed", error=errors[run_id],
                                    created_at=utcnow(), ended_at=utcnow()))
        write_through_api(served.url, served.key, batch)  # in parts: the server takes each of these errors

        for path, params in (("/api/v1/runs", {"root_id": root}),
                             ("/api/v1/runs", {"state": "failed", "order": "desc"}),
                             (f"/api/v1/resolutions/{root}/graph", {})):
            r = c.get(path, params=params)
            assert r.status_code == 200, r.text[:300]
            graph = path.endswith("/graph")  # its resolution is whole, as GET /resolutions/{id} gives it
            assert not graph or r.json()["resolution"]["error"] == res_error
            size = len(r.content) - (len(res_error) if graph else 0)
            assert size < ERROR_LISTING_BYTES, (path, params, len(r.content))
            items = r.json()["runs" if graph else "items"]
            assert {i["id"] for i in items} == set(ids), (path, params)
            assert all(_is_excerpt_of(i["error"], errors[i["id"]]) for i in items), (path, params)
        listed = c.get("/api/v1/runs", params={"root_id": root}).json()["items"]
        shown = next(i["error"]["message"] for i in listed if i["id"] == ids[1])
        assert len(shown) <= LISTED_ERROR_CHARS and shown.startswith("the start m") and shown.endswith("m the end")
        assert "characters cut" in shown
        for run_id in (root, ids[7]):
            assert c.get(f"/api/v1/runs/{run_id}").json()["error"] == errors[run_id]  # nothing recorded is lost

        for path in ("/api/v1/resolutions", "/api/v1/pipelines"):
            r = c.get(path)
            assert r.status_code == 200 and len(r.content) < 64 * 1024, (path, len(r.content))
        [res] = c.get("/api/v1/resolutions").json()["items"]
        [group] = c.get("/api/v1/pipelines").json()["groups"]
        assert res["error"] == group["resolutions"][0]["error"] == clipped(res_error, LISTED_RESOLUTION_ERROR_CHARS)
        assert c.get(f"/api/v1/resolutions/{root}").json()["error"] == res_error

        monkeypatch.setenv(settings.SERVER_ENV, served.url)
        monkeypatch.setenv(settings.API_KEY_ENV, served.key or "")
        for args in (["runs", "list", "--root-id", root, "-o", "json"], ["resolutions", "list", "-o", "json"]):
            out = CliRunner().invoke(cli, args)
            assert out.exit_code == 0 and len(out.stdout) < ERROR_LISTING_BYTES, (args, out.output[-2000:])
        printed = json.loads(CliRunner().invoke(cli, ["runs", "list", "--root-id", root, "-o", "json"]).stdout)
        assert all(_is_excerpt_of(i["error"], errors[i["id"]]) for i in printed["items"])
        whole = CliRunner().invoke(cli, ["runs", "show", ids[7][:12], "-o", "json"])  # found by a listing
        assert whole.exit_code == 0 and json.loads(whole.stdout)["error"] == errors[ids[7]], whole.output[-2000:]
        whole = CliRunner().invoke(cli, ["resolutions", "show", root[:12], "-o", "json"])
        assert whole.exit_code == 0 and json.loads(whole.stdout)["error"] == res_error, whole.output[-2000:]


def test_fields_over_their_bounds_are_refused_naming_the_field_the_bound_and_what_to_do(tmp_path: Path) -> None:
    """A run's source, source file, settings and notes, a resolution's settings and tags: a value over its bound is
    a 422 whose one line names the field, the bound and what to do, and nothing of its batch is recorded; a value
    at the bound is recorded. Tags added a hundred at a time through the labels endpoint stop at the bound too."""
    root = uuid.uuid4().hex
    big_json = {"x": "a" * limits.JSON_BYTES}
    with serve(tmp_path) as served, served.client() as c:
        seed = {"new_resolutions": [{"id": root, "root_func_path": "m:f", "state": "running", "created_at": NOW}],
                "new_runs": {root: {"id": root, "root_id": root, "parent_id": None, "func_path": "m:f",
                                    "func_name": "f", "state": "created", "created_at": NOW}}}
        assert c.post("/api/v1/store/write", json=seed).status_code == 200
        other = uuid.uuid4().hex
        new_run = {"id": other, "root_id": root, "parent_id": root, "func_path": "m:g", "func_name": "g",
                   "state": "created", "created_at": NOW}
        refused: list[tuple[dict[str, Any], str, str, str]] = [
            ({"new_runs": {other: {**new_run, "source_text": "s" * (limits.SOURCE_TEXT_CHARS + 1)}}}, "source_text",
             "100,000", "clip it to its start and end"),
            ({"run_updates": {root: {"source_text": "s" * 5_000_000}}}, "source_text", "100,000", "clip"),
            ({"run_updates": {root: {"source_file": "/" + "d" * limits.PATH_CHARS}}}, "source_file", "4,096",
             "record the func's file path"),
            ({"run_updates": {root: {"settings": big_json}}}, "settings", "65,536", "keep large data out"),
            ({"new_runs": {other: {**new_run, "notes": big_json}}}, "notes", "65,536", "keep large data out"),
            ({"resolution_updates": {root: {"settings": big_json}}}, "settings", "65,536", "keep large data out"),
            ({"resolution_updates": {root: {"tags": [f"t{i}" for i in range(limits.TAGS + 1)]}}}, "tags",
             "at most 100", "remove some"),
        ]
        for body, field, bound, fix in refused:
            r = c.post("/api/v1/store/write", json=body)
            assert r.status_code == 422, (field, r.text[:300])
            detail = r.json()["detail"]
            assert field in detail and bound in detail and fix in detail and "\n" not in detail, detail
            assert len(r.content) < 10_000  # the refused value is not echoed
        assert c.get(f"/api/v1/runs/{other}").status_code == 404
        run = c.get(f"/api/v1/runs/{root}").json()
        assert (run["source_text"], run["source_file"], run["settings"]) == (None, None, {})
        assert c.get(f"/api/v1/resolutions/{root}").json()["tags"] is None

        at_bound = {"x": "a" * (limits.JSON_BYTES - len('{"x":""}'))}
        ok = {"run_updates": {root: {"source_text": "s" * limits.SOURCE_TEXT_CHARS, "settings": at_bound,
                                     "source_file": "/" + "d" * (limits.PATH_CHARS - 1), "notes": at_bound}},
              "resolution_updates": {root: {"settings": at_bound}}}
        assert c.post("/api/v1/store/write", json=ok).status_code == 200
        assert len(c.get(f"/api/v1/runs/{root}").json()["source_text"]) == limits.SOURCE_TEXT_CHARS

        labels = f"/api/v1/resolutions/{root}/labels"
        assert c.post(labels, json={"add": [f"a{i}" for i in range(60)]}).status_code == 200
        r = c.post(labels, json={"add": [f"b{i}" for i in range(60)]})
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == (f"resolution {root} would have 120 tags: a resolution has at most 100; nothing "
                                      "was changed: remove some first")
        assert c.post(labels, json={"add": [f"b{i}" for i in range(40)]}).status_code == 200
        assert len(c.get(f"/api/v1/resolutions/{root}").json()["tags"]) == limits.TAGS


def test_a_func_with_a_long_source_resolves_through_the_server_its_source_clipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A func whose source is longer than a run records (a docstring of 150,000 characters): resolved through the
    server, which would refuse it whole, its runs hold its source's start and end with how much was cut between
    them (was: recorded whole on each of its runs); its source hash, the cache's, is still the whole source's."""
    name = f"sk_long_source_{uuid.uuid4().hex[:8]}"
    doc = "    a line of a very long docstring\n" * 4_200
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{name}.py").write_text(f'import sematic_k8s as sk\n\n\n@sk.func\ndef longer(x: int) -> int:\n'
                                         f'    """\n{doc}    """\n    return x + 1\n')
    monkeypatch.syspath_prepend(str(code))
    module = importlib.import_module(name)
    whole = inspect.getsource(module.longer.fn)
    assert len(whole) > limits.SOURCE_TEXT_CHARS
    with serve(tmp_path) as served, served.client() as c:
        future = module.longer(1)
        assert future.resolve(_resolver(served)) == 2
        run = c.get(f"/api/v1/runs/{future.id}").json()
        text = run["source_text"]
        assert len(text) <= limits.SOURCE_TEXT_CHARS and "characters cut" in text
        assert text.startswith("@sk.func\ndef longer(x: int) -> int:") and text.endswith("    return x + 1\n")
        assert run["source_hash"] == hashlib.sha256(whole.encode()).hexdigest()


def test_settings_over_the_bound_are_refused_where_they_are_given(tmp_path: Path) -> None:
    """A func's settings (its node selector, tolerations) and a resolution's (a driver's executor settings, as the
    CloudResolver is given them) larger than a record keeps: refused where they are given, before anything is
    recorded, in words like the server's (was: recorded, and carried by every listing; through a server that
    refuses them, its 422 on the driver's first write would be an infrastructure failure)."""
    def f(x: int) -> int:
        return x

    with pytest.raises(FuncError, match=r"@func .*f: its settings come to [\d,]+ bytes of JSON, more than the 65,536 "
                                        r"a record keeps: give it fewer node_selector labels and tolerations"):
        sk.func(node_selector={f"label-{i}": "v" * 100 for i in range(1000)})(f)
    storage = LocalStorage(tmp_path / "storage")
    root = serialization.serialize(sp.add(1, 2))
    storage.put(artifact_key(root.id), root.payload)
    spec = DriverSpec(root={"id": root.id, "format": root.format}, storage_url=storage_url(storage),
                      image="127.0.0.1:5000/none@sha256:" + "0" * 64, executor="process",
                      executor_settings={"env": {"BIG": "x" * limits.JSON_BYTES}})
    with serve(tmp_path) as served, served.client() as c:
        store = HttpStore(served.url, served.key)
        try:
            with pytest.raises(ValueError, match=r"the resolution's settings come to [\d,]+ bytes of JSON, more than "
                                                 r"the 65,536 a record keeps: give it a shorter cache_namespace, or "
                                                 r"fewer executor_settings"):
                drive(spec, store)
        finally:
            store.close()
        assert c.get("/api/v1/resolutions").json()["items"] == []


def test_a_rerun_through_the_server_copies_a_long_recorded_source_clipped(tmp_path: Path) -> None:
    """A run recorded with a source longer than the bound (by an older version) is reused by a rerun through the
    server: the copy holds the source clipped, as the server takes it (was: copied whole), and the original run
    still reads whole."""
    with serve(tmp_path) as served, served.client() as c:
        first = sp.pipeline(1, 2, str(tmp_path / "no-flag"))
        assert first.resolve(_resolver(served)) == 90
        runs = {r.func_name: r for r in served.store.runs_of_root(first.id)}
        long = "def add(a, b):\n" + "    pass  # long\n" * 100_000
        with served.store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE runs SET source_text = :s WHERE id = :i"), {"s": long, "i": runs["add"].id})
        again = sp.pipeline(1, 2, str(tmp_path / "no-flag"))
        assert again.resolve(_resolver(served, rerun_from=runs["flaky"].id)) == 90
        copy = next(r for r in served.store.runs_of_root(again.id) if r.func_name == "add")
        assert copy.original_run_id == runs["add"].id and copy.notes.get("reused_from") == runs["add"].id
        assert copy.source_text == limits.source_excerpt(long) and len(copy.source_text) <= limits.SOURCE_TEXT_CHARS
        assert c.get(f"/api/v1/runs/{runs['add'].id}").json()["source_text"] == long
