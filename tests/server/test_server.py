"""The server over real HTTP: a uvicorn server on 127.0.0.1, LocalResolvers recording through it, reruns of
local resolutions answered with the command to run, cancel, auth, pagination and live events. (The hostile
client's view is in test_security.py.)"""

from __future__ import annotations

import gc
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import sematic_k8s as sk
from sematic_k8s.errors import ResolutionCanceled
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, utcnow
from serving import serve, wait_for, write_through_api

try:
    import server_pipeline as sp
except ImportError:  # pragma: no cover
    from tests import server_pipeline as sp

AUTH_MESSAGE = "missing or invalid API key: send it in the X-API-Key header"


@pytest.fixture
def served(tmp_path):
    with serve(tmp_path) as s:
        yield s


def resolver(served, **settings) -> sk.LocalResolver:
    return sk.LocalResolver(home=served.home, server=served.url, api_key=served.key, **settings)


def wait_state(client: httpx.Client, resolution_id: str, states: set[str], timeout: float = 60.0) -> dict:
    def check() -> dict | None:
        r = client.get(f"/api/v1/resolutions/{resolution_id}")
        return r.json() if r.status_code == 200 and r.json()["state"] in states else None
    return wait_for(check, timeout, what=f"resolution {resolution_id} to reach {states}")


def test_auth(served) -> None:
    with served.client(key=None) as anonymous:
        assert anonymous.get("/api/v1/health").json() == {"ok": True}
        r = anonymous.get("/api/v1/resolutions")
        assert r.status_code == 401 and r.json() == {"detail": AUTH_MESSAGE}
        assert anonymous.post("/api/v1/store/write", json={}).status_code == 401
    with served.client(key="sk8s_not-a-key") as bad:
        assert bad.get("/api/v1/runs").status_code == 401
    with served.client() as good:
        assert good.get("/api/v1/resolutions").json() == {"items": [], "limit": 100, "offset": 0}
    stored = served.store.engine.connect().exec_driver_sql("SELECT key_hash FROM api_keys").scalars().all()
    assert served.key not in stored and len(stored[0]) == 64  # only the sha256 is at rest
    with pytest.raises(Exception, match="API key missing or invalid for"):
        sk.LocalResolver(home=served.home, server=served.url, api_key="wrong").resolve(sp.add(1, 2))


def test_local_mode_needs_no_key(tmp_path) -> None:
    with serve(tmp_path, api_keys_required=False) as s, s.client(key=None) as c:
        assert sp.add(2, 3).resolve(resolver(s)) == 5
        assert c.get("/api/v1/resolutions").json()["items"][0]["state"] == "resolved"


def test_resolve_through_server(served, tmp_path) -> None:
    flag = tmp_path / "flag"
    f = sp.pipeline(1, 2, str(flag))
    assert f.resolve(resolver(served, cache_namespace="t")) == 90
    with served.client() as c:
        res = c.get(f"/api/v1/resolutions/{f.id}").json()
        assert res["state"] == "resolved" and res["root_func_path"].endswith(":pipeline")
        graph = c.get(f"/api/v1/resolutions/{f.id}/graph").json()
        runs = {r["func_name"]: r for r in graph["runs"]}
        assert set(runs) == {"pipeline", "add", "square", "flaky"}
        assert all(r["state"] == "resolved" for r in runs.values())
        edges = {(e["source"], e["destination"], e["param"]) for e in graph["edges"]}
        p, a, s, fl = (runs[n]["id"] for n in ("pipeline", "add", "square", "flaky"))
        assert (a, s, "x") in edges and (s, fl, "x") in edges  # outputs feeding inputs
        assert (fl, p, None) in edges and (p, None, None) in edges  # composition output, pipeline output
        assert (None, a, "a") in edges and (None, p, "flag") in edges  # literals from outside
        square_edge = next(e for e in graph["edges"] if e["source"] == s)
        assert square_edge["artifact_id"] == runs["square"]["output_id"]

        page = c.get("/api/v1/runs", params={"root_id": f.id, "func": "add"}).json()
        assert [r["id"] for r in page["items"]] == [a]
        assert c.get("/api/v1/runs", params={"root_id": f.id, "state": "failed"}).json()["items"] == []
        assert c.get(f"/api/v1/runs/{a}").json()["inputs"].keys() == {"a", "b"}
        logs = c.get(f"/api/v1/runs/{a}/logs")
        assert logs.headers["content-type"].startswith("text/plain") and "adding 1 + 2" in logs.text
        assert c.get(f"/api/v1/runs/{s}/logs").text == ""

        out = runs["flaky"]["output_id"]
        art = c.get(f"/api/v1/artifacts/{out}").json()
        assert art["summary"] == 90 and art["type_name"] == "int"
        data = c.get(f"/api/v1/artifacts/{out}/data")
        assert data.headers["content-type"] == "application/octet-stream"
        assert data.content == b"90" == c.get(f"/api/v1/artifacts/{out}/data").content  # kept inline: small

        # the same pipeline again: the cache is looked up through the server
        f2 = sp.pipeline(1, 2, str(flag))
        assert f2.resolve(resolver(served, cache_namespace="t")) == 90
        sq2 = c.get("/api/v1/runs", params={"root_id": f2.id, "func": "square"}).json()["items"][0]
        assert sq2["cached_from"] == s


def test_not_found_and_bad_ids(served) -> None:
    unknown = "ab" * 16
    with served.client() as c:
        for path in (f"/api/v1/resolutions/{unknown}", f"/api/v1/resolutions/{unknown}/graph",
                     f"/api/v1/runs/{unknown}", f"/api/v1/runs/{unknown}/logs", f"/api/v1/artifacts/{'0' * 64}",
                     f"/api/v1/artifacts/{'0' * 64}/data", f"/api/v1/store/cached/{'1' * 64}"):
            r = c.get(path)
            assert r.status_code == 404 and "detail" in r.json(), path
        assert c.post(f"/api/v1/resolutions/{unknown}/rerun", json={}).status_code == 404
        assert c.post(f"/api/v1/resolutions/{unknown}/cancel").status_code == 404
        # ids are validated: no paths, no SQL
        for path in ("/api/v1/runs/..%2F..%2Fetc", "/api/v1/runs/1;DROP TABLE runs", "/api/v1/artifacts/abc/data",
                     "/api/v1/runs/ABCDEF"):
            assert c.get(path).status_code in (404, 422), path
        r = c.post("/api/v1/store/write", json={"run_updates": {unknown: {"state": "x", "evil": 1}}})
        assert r.status_code == 422 and "evil" in r.json()["detail"]


def test_pagination(served) -> None:
    batch = Batch()
    for i in range(25):
        batch.add_resolution(ResolutionRecord(id=f"{i:032x}", root_func_path="m:f", state="resolved",
                                              created_at=utcnow()))
    served.store.write(batch)
    with served.client() as c:
        pages = [c.get("/api/v1/resolutions", params={"limit": 10, "offset": o}).json() for o in (0, 10, 20)]
        assert [len(p["items"]) for p in pages] == [10, 10, 5] and pages[1]["offset"] == 10
        assert len({r["id"] for p in pages for r in p["items"]}) == 25
        assert c.get("/api/v1/resolutions", params={"state": "failed"}).json()["items"] == []
        for bad in ({"limit": 1001}, {"limit": 0}, {"offset": -1}, {"state": "x' OR 1=1"}):
            assert c.get("/api/v1/resolutions", params=bad).status_code == 422, bad
        assert len(c.get("/api/v1/resolutions", params={"limit": 1000}).json()["items"]) == 25


def test_rerun_of_a_local_resolution_is_the_command_to_run_on_its_machine(served, tmp_path, monkeypatch) -> None:
    """The server never re-runs a local resolution: it answers 422 with the command, and that command, run where
    the code is, re-runs it through the server (reusing what did not depend on the rerun run)."""
    from click.testing import CliRunner

    from sematic_k8s.cli import cli

    flag = tmp_path / "flag"
    flag.touch()
    f = sp.pipeline(2, 3, str(flag))
    with pytest.raises(sk.ResolutionFailed):
        f.resolve(resolver(served))
    flag.unlink()
    with served.client() as c:
        runs = {r["func_name"]: r for r in c.get(f"/api/v1/resolutions/{f.id}/graph").json()["runs"]}
        assert runs["flaky"]["state"] == "failed"
        before = len(c.get("/api/v1/resolutions").json()["items"])
        r = c.post(f"/api/v1/resolutions/{f.id}/rerun", json={"rerun_from": runs["flaky"]["id"]})
        assert r.status_code == 422 and r.json()["reason"] == "local-resolution", r.text
        command = r.json()["command"]
        assert command == f"sematic-k8s rerun {runs['flaky']['id']}" and command in r.json()["detail"]
        assert f'LocalResolver(rerun_from="{runs["flaky"]["id"]}")' in r.json()["python"]
        assert len(c.get("/api/v1/resolutions").json()["items"]) == before  # nothing was started
        cont = c.post(f"/api/v1/resolutions/{f.id}/rerun", json={"mode": "continue"}).json()
        assert cont["command"] == f"sematic-k8s rerun {f.id} --mode continue"

        monkeypatch.setenv("SEMATIC_K8S_SERVER", served.url)
        monkeypatch.setenv("SEMATIC_K8S_API_KEY", served.key)
        result = CliRunner().invoke(cli, ["--home", str(served.home), *command.split()[1:], "-o", "json"])
        assert result.exit_code == 0, result.output
        new_id = json.loads(result.stdout)["id"]
        res = c.get(f"/api/v1/resolutions/{new_id}").json()
        assert res["state"] == "resolved" and res["rerun_of"] == f.id
        new_runs = {x["func_name"]: x for x in c.get(f"/api/v1/resolutions/{new_id}/graph").json()["runs"]}
        assert new_runs["add"]["notes"].get("reused_from") == runs["add"]["id"]  # reused, not re-executed
        assert new_runs["flaky"]["original_run_id"] == runs["flaky"]["id"]
        assert c.get(f"/api/v1/artifacts/{new_runs['pipeline']['output_id']}").json()["summary"] == 250

        assert c.post(f"/api/v1/resolutions/{f.id}/rerun", json={"rerun_from": new_runs["add"]["id"]}
                      ).status_code == 422  # a run of another resolution
        assert c.post(f"/api/v1/resolutions/{f.id}/rerun", json={"mode": "sideways"}).status_code == 422


def test_cancel_running_resolution(served, tmp_path) -> None:
    gate_file = tmp_path / "gate"
    f = sp.slow_pipeline(str(gate_file))
    outcome: dict[str, BaseException | object] = {}

    def run() -> None:
        try:
            outcome["value"] = f.resolve(resolver(served, max_parallelism=2))
        except BaseException as e:  # noqa: BLE001
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    try:
        with served.client() as c:
            def gate_running() -> bool:
                items = c.get("/api/v1/runs", params={"root_id": f.id, "func": "gate"}).json()["items"]
                return bool(items) and items[0]["state"] == "running"
            wait_for(gate_running, 30, what="the gate run to start")
            r = c.post(f"/api/v1/resolutions/{f.id}/cancel")
            assert r.status_code == 202 and r.json() == {"resolution_id": f.id, "state": "canceling"}
            thread.join(30)
            assert not thread.is_alive(), "the canceled resolution still waits for its gate"  # the gate waits 60 s
            assert isinstance(outcome.get("error"), ResolutionCanceled), outcome
            res = c.get(f"/api/v1/resolutions/{f.id}").json()
            assert res["state"] == "canceled"
            items = c.get("/api/v1/runs", params={"root_id": f.id}).json()["items"]
            states = {r["func_name"]: r["state"] for r in items}
            assert states == {"slow_pipeline": "canceled", "gate": "canceled", "add": "canceled"}
            r = c.post(f"/api/v1/resolutions/{f.id}/cancel")
            assert r.status_code == 409 and "already canceled" in r.json()["detail"]
    finally:
        gate_file.touch()
        thread.join(30)


def test_events_stream(served, tmp_path) -> None:
    events: list[dict] = []
    filtered: list[dict] = []
    ready = threading.Barrier(3)

    def listen(into: list[dict], params: dict) -> None:
        _follow(served, params, into, ready.wait,
                until=lambda e: e["type"] == "resolution" and e["state"] == "resolved")

    first = sp.add(1, 1)
    threads = [threading.Thread(target=listen, args=(events, {}), daemon=True),
               threading.Thread(target=listen, args=(filtered, {"root_id": first.id}), daemon=True)]
    for t in threads:
        t.start()
    ready.wait(timeout=10)
    first.resolve(resolver(served))
    for t in threads:
        t.join(15)
    assert {"type": "resolution", "id": first.id, "root_id": first.id, "state": "resolved"} in events
    assert any(e["type"] == "run" and e["id"] == first.id and e["root_id"] == first.id for e in events)
    assert all(e["root_id"] == first.id for e in filtered) and filtered[-1]["state"] == "resolved"


def _follow(served, params: dict, into: list[dict], subscribed: Callable[[], object],
            until: Callable[[dict], bool]) -> None:
    """Follow the server's event stream (filtered by ``params``): ``subscribed()`` once subscribed, then each event
    appended to ``into`` until one meets ``until``."""
    with served.client() as c, c.stream("GET", "/api/v1/events", params=params, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        next(lines)  # ": connected": subscribed
        subscribed()
        for line in lines:
            if line.startswith("data: "):
                into.append(json.loads(line[6:]))
                if until(into[-1]):
                    return


def _events_of_writes(served, root: str, end_id: str, batches: list[Batch]) -> list[dict]:
    """The events a subscriber following resolution ``root`` gets while ``batches`` are written one by one through
    the HTTP store, until run ``end_id`` is told resolved (the last batch resolves it: events come in the order they
    were written)."""

    events: list[dict] = []
    ready = threading.Event()

    def listen() -> None:
        _follow(served, {"root_id": root}, events, ready.set,
                until=lambda e: e["id"] == end_id and e["state"] == "resolved")

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(15), "the stream did not open"
    write_through_api(served.url, served.key, *batches)
    listener.join(30)
    assert not listener.is_alive(), f"the run's end was never told: {events}"
    return events


def _running_root(root: str, run_ids: list[str]) -> Batch:
    """A running resolution ``root`` with running runs ``run_ids``."""
    from sematic_k8s.store.records import RunRecord

    b = Batch()
    b.add_resolution(ResolutionRecord(id=root, root_func_path="m:f", state="running", created_at=utcnow()))
    for run_id in run_ids:
        b.add_run(RunRecord(id=run_id, root_id=root, parent_id=None, func_path="m:f", func_name="f",
                            state="running", created_at=utcnow(), attempts=1))
    return b


def test_a_runs_attempts_changed_alone_is_a_live_event(served) -> None:
    """A run tried again whose update sets its attempts alone (it stays running: no state in the update) is told to
    live-event subscribers, with its attempts, as a state change is. Was: nothing sent, so the dashboard showed the
    old attempts until something else of the resolution changed. (Its resolving afterwards marks the end: events come
    in the order they were written.)"""
    root, run_id = "ab" * 16, "cd" * 16
    events = _events_of_writes(served, root, run_id, [
        _running_root(root, [run_id]),
        Batch(run_updates={run_id: {"attempts": 2}}),  # tried again, still running
        Batch(run_updates={run_id: {"state": "resolved", "ended_at": utcnow()}})])
    assert [e for e in events if e["id"] == run_id] == [
        {"type": "run", "id": run_id, "root_id": root, "state": "running"},
        {"type": "run", "id": run_id, "root_id": root, "state": None, "attempts": 2},
        {"type": "run", "id": run_id, "root_id": root, "state": "resolved"}]
    assert served.store.get_run(run_id).attempts == 2


def test_a_failed_end_recorded_canceled_as_asked_is_told_canceled(served) -> None:
    """A write recording a resolution failed lands after a cancel of it was accepted (canceling): the store records
    it canceled ("...; canceled as asked"), its live event says so, as recorded, and so does the write's answer
    (``canceled``: what the HTTP store gives its writer). Was: recorded failed; once kept canceled, the event still
    said failed, the state the write had sent, and the answer only ``{"ok": true}``."""
    root, run_id = "ab" * 16, "cd" * 16
    events: list[dict] = []
    ready = threading.Event()

    def listen() -> None:
        _follow(served, {"root_id": root}, events, ready.set,
                until=lambda e: e["type"] == "resolution" and e["state"] not in ("running", "canceling"))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(15), "the stream did not open"
    write_through_api(served.url, served.key, _running_root(root, [run_id]))
    with httpx.Client(base_url=served.url, headers={"X-API-Key": served.key}) as c:
        assert c.post(f"/api/v1/resolutions/{root}/cancel").json()["state"] == "canceling"
    end = {"state": "failed", "ended_at": utcnow(), "error": f"resolution {root} failed: f raised ValueError: no"}
    told: set[str] = set()
    store = HttpStore(served.url, served.key)
    try:
        store.write(Batch(run_updates={run_id: {"state": "failed", "ended_at": utcnow()}},
                          resolution_updates={root: end}), canceled=told)
    finally:
        store.close()
    assert told == {root}
    listener.join(30)
    assert not listener.is_alive(), f"the resolution's end was never told: {events}"
    assert events[-1] == {"type": "resolution", "id": root, "root_id": root, "state": "canceled"}
    res = served.store.get_resolution(root)
    assert (res.state, res.error) == ("canceled", end["error"] + "; canceled as asked")


def test_a_runs_notes_inputs_or_output_set_alone_are_a_live_event(served) -> None:
    """A run update that sets only what the dashboard shows of a run besides its state (its notes: the resolver's
    note of what it waits for; its inputs, output, error) is told, as ``changed`` with no state and no values: the
    page re-reads what it shows. The runs of one resolution so changed in one write make one event (``id`` null when
    several), so a driver noting what 40 runs wait for, once a second, sends one event a second, not 40. An update of
    a field no page shows (``output_ref``) tells nothing. Was: none of them told, the waiting note shown late."""
    root, run_id = "ab" * 16, "cd" * 16
    others = [f"{i:032x}" for i in range(40)]
    waiting = {"waiting": "pulling its image (3 MB of 40 MB): 127.0.0.1:5000/w@sha256:0123456789ab"}
    events = _events_of_writes(served, root, run_id, [
        _running_root(root, [run_id, *others]),
        Batch(run_updates={run_id: {"notes": waiting}}),
        Batch(run_updates={r: {"notes": waiting} for r in others}),
        Batch(run_updates={run_id: {"output_ref": {"run": others[0]}}}),
        Batch(run_updates={run_id: {"inputs": {"a": "ef" * 32}, "output_id": "12" * 32}}),
        Batch(run_updates={run_id: {"state": "resolved", "ended_at": utcnow(), "notes": {}}})])
    told = [e for e in events if e["state"] is None]
    assert told == [
        {"type": "run", "id": run_id, "root_id": root, "state": None, "changed": ["notes"]},
        {"type": "run", "id": None, "root_id": root, "state": None, "changed": ["notes"]},
        {"type": "run", "id": run_id, "root_id": root, "state": None, "changed": ["inputs", "output_id"]}]
    assert events[-1] == {"type": "run", "id": run_id, "root_id": root, "state": "resolved"}
    assert served.store.get_run(others[0]).notes == waiting


def test_many_concurrent_writers(served) -> None:
    """64 clients writing at once to SQLite through the server: no errors, every write lands."""
    from sematic_k8s.store.http import HttpStore
    from sematic_k8s.store.records import RunRecord

    root = "ef" * 16
    b = Batch()
    b.add_resolution(ResolutionRecord(id=root, root_func_path="m:f", state="running", created_at=utcnow()))
    recorder = HttpStore(served.url, served.key)  # its key's resolution: the key records its runs
    recorder.write(b)
    recorder.close()
    errors: list[BaseException] = []

    def client(i: int) -> None:
        store = HttpStore(served.url, served.key)
        try:
            for j in range(10):
                batch = Batch()
                run_id = f"{i:016x}{j:016x}"
                batch.add_run(RunRecord(id=run_id, root_id=root, parent_id=None, func_path="m:g", func_name="g",
                                        state="created", created_at=utcnow()))
                store.write(batch)
                store.write(Batch(run_updates={run_id: {"state": "resolved", "ended_at": utcnow()}}))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            store.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(served.store.list_runs(root_id=root, state="resolved", limit=1000)) == 640


API_ENDPOINTS = {  # every documented endpoint (path -> methods); the HTTP store and dashboard rely on them
    "/api/v1/health": {"get"},
    "/api/v1/ready": {"get"},
    "/api/v1/resolutions": {"get"},
    "/api/v1/resolutions/{resolution_id}": {"get"},
    "/api/v1/resolutions/{resolution_id}/graph": {"get"},
    "/api/v1/resolutions/{resolution_id}/counts": {"get"},
    "/api/v1/resolutions/{resolution_id}/rerun": {"post"},
    "/api/v1/resolutions/{resolution_id}/cancel": {"post"},
    "/api/v1/resolutions/{resolution_id}/token": {"post", "delete"},
    "/api/v1/api-keys": {"get", "post"},
    "/api/v1/api-keys/{key_id}/revoke": {"post"},
    "/api/v1/whoami": {"get"},
    "/api/v1/runs": {"get"},
    "/api/v1/runs/{run_id}": {"get"},
    "/api/v1/runs/{run_id}/logs": {"get"},
    "/api/v1/artifacts/{artifact_id}": {"get"},
    "/api/v1/artifacts/{artifact_id}/data": {"get"},
    "/api/v1/events": {"get"},
    "/api/v1/store/write": {"post"},
    "/api/v1/store/runs_of_root/{root_id}": {"get"},
    "/api/v1/store/cached/{cache_key}": {"get"},
    "/api/v1/store/artifacts": {"post"},
    "/api/v1/store/artifact_formats": {"post"},
    "/api/v1/store/cached": {"post"},
    "/api/v1/store/cancel_requested/{resolution_id}": {"get"},
    "/api/v1/store/take_over/{resolution_id}": {"post"},
    "/api/v1/pipelines": {"get"},
    "/api/v1/resolutions/{resolution_id}/labels": {"post"},
    "/api/v1/resolutions/{resolution_id}/overview": {"get"},
}


def test_openapi_documents_the_api(served) -> None:
    with served.client(key=None) as c:
        spec = c.get("/openapi.json").json()
    paths = spec["paths"]
    assert {path: set(operations) for path, operations in paths.items()} == API_ENDPOINTS
    assert all(op["summary"] for operations in paths.values() for op in operations.values())
    assert "X-API-Key" in json.dumps(spec["components"]["securitySchemes"])


def test_every_endpoint_but_health_and_ready_needs_a_key(served) -> None:
    some_id = "ab" * 32  # a valid run, resolution, artifact id and cache key alike
    with served.client(key=None) as anonymous:
        for path, methods in API_ENDPOINTS.items():
            url = re.sub(r"\{\w+\}", some_id, path)
            for method in methods:
                r = anonymous.request(method, url, json={} if method == "post" else None)
                expected = 200 if path in ("/api/v1/health", "/api/v1/ready") else 401
                assert r.status_code == expected, (method, path, r.status_code, r.text)


def test_server_cli(tmp_path) -> None:
    """`api-keys create` prints a key that the started server accepts; --local refuses non-loopback hosts."""
    import subprocess
    import sys

    from click.testing import CliRunner

    from sematic_k8s_server.cli import main
    from serving import free_port

    runner = CliRunner()
    result = runner.invoke(main, ["api-keys", "create", "ci", "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("sk8s_")
    bad = runner.invoke(main, ["server", "--local", "--host", "0.0.0.0", "--home", str(tmp_path)])
    assert bad.exit_code != 0 and "loopback" in bad.output
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sematic_k8s_server.cli", "server", "--port", str(port),
                             "--home", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(url + "/api/v1/health").status_code == 200
            except httpx.TransportError:
                return False
        wait_for(up, 30, what="sematic-k8s server to start")
        assert httpx.get(url + "/api/v1/runs").status_code == 401
        assert httpx.get(url + "/api/v1/runs", headers={"X-API-Key": key}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_api_keys_list_is_a_table_with_times_in_this_machines_zone(tmp_path) -> None:
    """As the CLI's other listings: a header, times in the local zone with its name (they were UTC, unnamed)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TZ": "Asia/Tokyo", "PYTHONPATH": os.pathsep.join(sys.path)}

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "sematic_k8s_server.cli", "api-keys", *args, "--home",
                               str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("create", "alice")
    cli("create", "bob", "--admin")
    cli("revoke", "alice")
    header, *rows = cli("list").splitlines()
    assert header.split() == ["ID", "NAME", "ROLE", "CREATED", "STATE"]
    alice, bob = (row.split() for row in rows)
    assert alice[1:3] == ["alice", "user"] and alice[5:7] == ["JST", "revoked"] and alice[-1] == "JST"
    assert bob[1:3] == ["bob", "admin"] and bob[5:] == ["JST", "active"]


def test_api_keys_create_refuses_the_name_of_an_active_key(tmp_path) -> None:
    """``api-keys create alice`` twice made two active keys named alice, and ``revoke alice`` then revoked both.
    Now the second is refused in one line naming it, nothing made; once alice is revoked, the name is free again."""
    from click.testing import CliRunner, Result

    from sematic_k8s_server.cli import main

    def cli(*args: str) -> Result:
        return CliRunner().invoke(main, ["api-keys", *args, "--home", str(tmp_path)])

    assert cli("create", "alice").exit_code == 0
    for admin in ((), ("--admin",)):
        again = cli("create", "alice", *admin)
        assert again.exit_code == 1, again.output
        assert again.output == ("Error: an active API key is already named 'alice' (revoking by name would revoke "
                                "both): revoke it first, or choose another name (see `sematic-k8s api-keys list`)\n")
    assert [row[1] for row in (line.split() for line in cli("list").output.splitlines()[1:])] == ["alice"]
    assert cli("revoke", "alice").exit_code == 0
    assert cli("create", "alice").exit_code == 0
    listed = cli("list").output.splitlines()[1:]
    assert [line.endswith(" active") for line in listed] == [False, True], listed


def test_api_keys_list_and_revoke_never_make_a_database(tmp_path) -> None:
    """A typo in --home or --db-url: one line naming the file, nothing made (was: an empty database made, and no
    keys listed, or "no active API key" to revoke)."""
    from click.testing import CliRunner

    from sematic_k8s_server.cli import main

    typo = tmp_path / "hom"
    for args in (["list", "--home", str(typo)], ["revoke", "alice", "--home", str(typo)],
                 ["list", "--db-url", f"sqlite:///{typo}/keys.db"]):
        result = CliRunner().invoke(main, ["api-keys", *args])
        assert result.exit_code == 1, result.output
        db = "keys.db" if "--db-url" in args else "db.sqlite3"
        assert result.output == (f"Error: the metadata database {typo}/{db} does not exist: no API key was made there; "
                                 f"check --db-url, --home or $SEMATIC_K8S_HOME\n")
        assert not typo.exists()


def test_graph_of_unknown_path_component_is_not_a_file(served) -> None:
    """Artifact and log reads go through validated ids only."""
    with served.client() as c:
        assert c.get("/api/v1/artifacts/" + "../" * 3 + "etc/passwd").status_code == 404
    assert Path(served.home / "storage").exists()


def test_api_keys_commands_close_the_database_they_open(tmp_path) -> None:
    """``api-keys create``, ``list`` and ``revoke`` left the database they opened (a connection pool's SQLite files)
    open until the garbage collector found it: run in a process of one's own (a test, an admin script, a notebook),
    each call held 4-6 descriptors more. The collector is off here: what stays open is what a command left."""
    from click.testing import CliRunner

    from fd_report import open_fds
    from sematic_k8s_server.cli import main

    def cli(*args: str) -> None:
        result = CliRunner().invoke(main, ["api-keys", *args, "--home", str(tmp_path)])
        assert result.exit_code == 0, result.output

    cli("create", "first")  # the database made and migrated, what the commands import imported
    gc.collect()
    gc.disable()
    try:
        before = len(open_fds())
        for i in range(3):
            cli("create", f"k{i}")
            cli("list")
            cli("revoke", f"k{i}")
        opened = len(open_fds()) - before
    finally:
        gc.enable()
    assert opened < 3, open_fds()
