"""Run the sematic-k8s server for tests: real uvicorn on 127.0.0.1, a free port, a background thread."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from sematic_k8s.serialization import content_id
from sematic_k8s.specs import DriverSpec
from sematic_k8s.storage.base import Storage, artifact_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store import liveness
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s.store.sql import SqlStore
from sematic_k8s.store.tables import ResolutionRow
from sematic_k8s_server import auth
from sematic_k8s_server.app import create_app
from sematic_k8s_server.config import ServerConfig
from sematic_k8s_server.connections import ConnectionLimits, uvicorn_config
from sematic_k8s_server.db import open_store
from waiting import wait_for  # noqa: F401  (re-exported: the tests import it from here)


def app_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every route of an app (its path template, the route), in included routers and mounts too: a test walking them
    covers a route added later."""
    for route in routes:
        if (included := getattr(route, "original_router", None)) is not None:  # FastAPI's included router
            yield from app_routes(included.routes, prefix + route.include_context.prefix)
        elif getattr(route, "methods", None):
            yield prefix + route.path, route
        else:  # a mount: its app's routes, if it has any
            yield from app_routes(getattr(route, "routes", None) or (), prefix + getattr(route, "path", ""))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    store: SqlStore
    home: Path
    key: str | None  # a valid API key (None in local mode)
    admin_key: str | None = None  # an admin API key (None in local mode)
    app: Any = None  # the FastAPI app it serves (its routes: what a test walks)
    server: Any = None  # the app's Server (sematic_k8s_server.state): its sweeper, its event bus

    @property
    def owner(self) -> str | None:
        """The id of :attr:`key`: the owner the server records for what it writes (None in local mode). Records
        written directly in :attr:`store` as that key's carry it (``owner`` in their rows)."""
        if self.key is None:
            return None
        return auth.Authenticator(self.store.engine, required=True).authenticate(self.key).key_id

    def client(self, key: str | None = "default") -> httpx.Client:
        """An HTTP client for the API, sending the valid key unless told otherwise."""
        key = self.key if key == "default" else key
        return httpx.Client(base_url=self.url, headers={"X-API-Key": key} if key else {}, timeout=30)


@contextlib.contextmanager
def serve(home: Path, db_url: str | None = None, *, api_keys_required: bool = True, config: ServerConfig | None = None,
          storage: Storage | None = None, allowed_storages: tuple[str, ...] = (),
          limits: ConnectionLimits | None = None,
          rerun_launcher: Callable[[DriverSpec, Mapping[str, str]], None] | None = None) -> Iterator[Served]:
    """A server over ``db_url`` (default: SQLite in ``home``) with artifacts in ``storage`` (default
    ``home``/storage), set up by ``config`` (API keys as ``api_keys_required`` says; ``allowed_storages``: more
    storage URLs readable for cloud resolutions that recorded theirs there), run by uvicorn as the CLI runs it
    (:func:`~sematic_k8s_server.connections.uvicorn_config`, with ``limits``: the connection bounds).
    ``rerun_launcher``: what starts its reruns' drivers instead of the configured launcher."""
    store = open_store(db_url or f"sqlite:///{home / 'db.sqlite3'}")
    key = auth.create_key(store.engine, "tests") if api_keys_required else None
    admin_key = auth.create_key(store.engine, "tests-admin", admin=True) if api_keys_required else None
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if allowed_storages:
        config = dataclasses.replace(config or ServerConfig(), allowed_storages=allowed_storages)
    app = create_app(store, storage or LocalStorage(home / "storage"), config, api_keys_required=api_keys_required,
                     self_url=url, rerun_launcher=rerun_launcher)
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port, limits=limits or ConnectionLimits(),
                                           shutdown_timeout=1, log_level="warning"))  # as the CLI runs it
    thread = threading.Thread(target=server.run, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield Served(url, store, home, key, admin_key, app, app.state.server)
    finally:
        server.should_exit = True
        thread.join(15)
        app.state.server.close()
        store.close()


def create_api_key(db_url: str, home: Path, name: str, *flags: str) -> str:
    """``sematic-k8s api-keys create NAME FLAGS`` on ``db_url`` (the server's CLI, run in this process); the key."""
    from click.testing import CliRunner

    from sematic_k8s_server.cli import main

    result = CliRunner().invoke(main, ["api-keys", "create", name, *flags, "--db-url", db_url, "--home", str(home)])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def server_process(home: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[tuple[Any, str]]:
    """``sematic-k8s server`` as its own process on a free port (``args`` appended): (Popen, base URL). Its
    output goes to ``home``/server-<port>.log."""
    import os
    import subprocess
    import sys

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = home / f"server-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sematic_k8s_server.cli", "server", "--port", str(port),
                                 "--home", str(home), *args], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            return httpx.get(url + "/api/v1/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, 60, what=f"the server process on port {port}")
        yield proc, url
    finally:
        stop_process(proc)


def stop_process(proc: Any) -> None:
    """``proc`` (a ``subprocess.Popen``) terminated and waited for; killed if it has not ended within 15 s."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def peak_rss_kib(pid: int) -> int:
    """Process ``pid``'s peak resident memory so far (``VmHWM``), in KiB: what a request grew a server process by."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def write_through_api(url: str, key: str | None, *batches: Batch) -> None:
    """``batches`` written in turn through the server's API at ``url`` with ``key``, as a client's store writes them
    (an :class:`HttpStore` of their own, closed after)."""
    store = HttpStore(url, key)
    try:
        for batch in batches:
            store.write(batch)
    finally:
        store.close()


def record_silent(s: Served, timeout: float, **record: Any) -> str:
    """A resolution (with ``record``'s fields) and its root run recorded running through the server, beating once and
    never since; returned once its silence is past ``timeout`` (with a second to spare: a server started before judges
    it then) by the database's clock, read straight from the database: no read of the server's marks it."""
    root = uuid.uuid4().hex
    batch = Batch()
    batch.add_resolution(ResolutionRecord(id=root, root_func_path="pipes:pipeline", state="running",
                                          created_at=utcnow(), heartbeat_at=utcnow(), **record))
    batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path="pipes:pipeline", func_name="pipeline",
                            state="running", created_at=utcnow()))
    write_through_api(s.url, s.key, batch)
    table = ResolutionRow.__table__

    def aged() -> bool:
        with s.store.engine.connect() as conn:
            return root in liveness.silent_ids(conn, table, timeout + 1)
    wait_for(aged, 30, what="the resolution's heartbeat to age")
    return root


class Followed:
    """The live events the server at ``s`` tells (``events``): of resolution ``root_id`` only, if given, followed on a
    daemon thread (``thread``) from the moment this is made (the stream open once it returns) until one tells
    ``root_id``'s ``state``, if given, or for ever."""

    def __init__(self, s: Served, root_id: str | None = None, state: str | None = None,
                 timeout: float | None = None) -> None:
        self.events: list[dict] = []
        ready = threading.Event()
        params = {"root_id": root_id} if root_id is not None else {}

        def listen() -> None:
            with s.client() as c, c.stream("GET", "/api/v1/events", params=params, timeout=timeout) as r:
                lines = r.iter_lines()
                next(lines)  # ": connected": subscribed
                ready.set()
                for line in lines:
                    if line.startswith("data: "):
                        self.events.append(json.loads(line[6:]))
                        if state is not None and self.events[-1]["id"] == root_id and self.events[-1]["state"] == state:
                            return

        self.thread = threading.Thread(target=listen, daemon=True)
        self.thread.start()
        assert ready.wait(15), "the event stream did not open"


def claim_of(c: httpx.Client, resolution_id: str) -> dict[str, Any]:
    """Resolution ``resolution_id`` as the server's API at ``c`` answers it (a rerun's claim, before its driver records
    anything)."""
    return read_resolution(lambda: c.get(f"/api/v1/resolutions/{resolution_id}"))


def read_resolution(get: Callable[[], httpx.Response], within: float = 60.0) -> dict[str, Any]:
    """The resolution ``get()`` answers, asked again while the server answers 503 (a database busy a moment: SQLite's
    lock after a server's restart, a pool used up), for up to ``within`` seconds; any other answer but 200 fails the
    test naming it (was: its JSON taken as the resolution, a ``KeyError: 'state'`` for a problem's)."""
    deadline = time.monotonic() + within
    while (r := get()).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert r.status_code == 200, f"reading the resolution: {r.status_code} {r.text}"
    return r.json()


def record_resolution(url: str, key: str, *, kind: str, image: str | None = None,
                      func_path: str = "pipes:pipeline", source_file: str | None = None, state: str = "resolved",
                      inputs: dict[str, tuple[str, bytes]] | None = None, storage: Storage | None = None,
                      **settings: Any) -> str:
    """Write a resolution and its root run through the API at ``url``, as any key holder can; its id. ``inputs``:
    the root run's, by parameter, as (format, payload) whose bytes go to ``storage`` and artifact records."""
    root = uuid.uuid4().hex
    batch = Batch()
    ids = {}
    for name, (fmt, payload) in (inputs or {}).items():
        ids[name] = content_id(fmt, payload)
        assert storage is not None, "inputs need the storage their bytes go to"
        storage.put(artifact_key(ids[name]), payload)
        batch.artifacts[ids[name]] = {"id": ids[name], "format": fmt, "type_name": "?", "summary": None,
                                      "size": len(payload), "created_at": utcnow()}
    batch.add_resolution(ResolutionRecord(id=root, root_func_path=func_path, state=state, image=image,
                                          settings={"kind": kind, **settings}, created_at=utcnow()))
    batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path=func_path,
                            func_name=func_path.rpartition(":")[2], state=state, source_file=source_file,
                            inputs=ids, input_refs={k: {"artifact": v} for k, v in ids.items()}, created_at=utcnow()))
    write_through_api(url, key, batch)
    return root
