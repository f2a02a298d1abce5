"""A CloudResolver's process killed (kill -9) in the middle of its Docker driver's launch, with the real engine,
registry, S3 API and server: held at the boundary by a proxy before the engine, which kills the process once the
engine carried out the request and before its answer reaches it. So too a server process starting a rerun's driver
with its Docker launcher."""

from __future__ import annotations

import importlib
import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

import sematic_k8s as sk
from idle_driver import IDLE_DRIVER_REPO, idle_driver_image
from infra import REGISTRY, containers_of, docker_client, require_docker
from outages import DroppingProxy, ServerProcess
from projects import user_project
from s3server import fresh_bucket
from sematic_k8s.docker_secrets import SECRETS_DIR
from sematic_k8s.labels import RESOLUTION_LABEL, ROLE_LABEL
from sematic_k8s.launchers.docker import _timestamp
from sematic_k8s.settings import HEARTBEAT_TIMEOUT_ENV, STORAGE_ENV
from serving import create_api_key, record_resolution, serve, wait_for

PIPELINE = '''
    import sematic_k8s as sk


    @sk.func(inline=False)
    def add(a: int, b: int) -> int:
        return a + b


    @sk.func
    def pipe(n: int) -> int:
        return add(add(n, 1), 2)
'''

LAUNCH = '''
import importlib, sys
import sematic_k8s as sk
server, key, storage, registry, base_image, root, module = sys.argv[1:]
f = importlib.import_module(module).pipe(1)
print(f.id, flush=True)
f.resolve(sk.CloudResolver(server=server, api_key=key, storage=storage, registry=registry, base_image=base_image,
                           project_root=root, detach=True, progress=lambda _: None))
'''


# $SEMATIC_K8S_UNSTARTED_DRIVER_GRACE here: each sweep here removes the unstarted driver containers of the whole
# engine, others' too; a launch under way on a loaded machine (this file's or another process's) starts its own well
# within it
GRACE = 30


@pytest.fixture(scope="module")
def base_image() -> str:
    return require_docker()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Iterator[tuple[Path, Any]]:
    root = tmp_path_factory.mktemp("project")
    with user_project(root, "launchpipe", PIPELINE) as module:
        yield root, importlib.import_module(module)


@pytest.fixture
def s3_url(monkeypatch) -> str:
    """A fresh bucket on the shared S3 API server (drivers and workers reach it on the host network)."""
    _, bucket = fresh_bucket(monkeypatch, "sk-launch")
    return f"s3://{bucket}/artifacts"


class EngineProxy(DroppingProxy):
    """A DroppingProxy whose answer to lose is that of the request matching :attr:`path` (a pattern)."""

    path = re.compile(b"")

    def _matches(self, request: bytes) -> bool:
        return super()._matches(request) and self.path.match(request) is not None


def engine_socket() -> str:
    """The path of the Docker engine's Unix socket (the test skipped when it is reached otherwise)."""
    engine = (os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock").removeprefix("unix://")
    if "://" in engine:
        pytest.skip(f"the engine is not on a Unix socket here ({engine})")
    return engine


def killed_launch(server: Any, s3_url: str, project: tuple[Path, Any], base_image: str, tmp_path: Path,
                  request: bytes) -> str:
    """A CloudResolver process (detached) whose Docker engine is reached through a proxy that SIGKILLs it once the
    engine carried out its first request starting with ``request`` (its version left out), before the answer reaches
    it; the resolution's id."""
    root, mod = project
    proxy = EngineProxy(engine_socket())
    version = docker_client().api.api_version
    method, _, path = request.partition(b" ")
    proxy.path = re.compile(re.escape(method) + rb" /v[0-9.]+" + path)
    env = {**os.environ, "DOCKER_HOST": f"tcp://127.0.0.1:{proxy.port}",
           "PYTHONPATH": os.pathsep.join([str(root), os.getcwd(), *sys.path])}
    with open(tmp_path / "launch.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCH, server.url, server.key or "", s3_url,
                                 f"{REGISTRY}/sk-test-faults", base_image, str(root), mod.__name__], env=env,
                                stdout=subprocess.PIPE, stderr=log)
    try:
        proxy.lose_answer(method + b" /v" + version.encode() + b"/",  # its path matched by EngineProxy
                          meanwhile=lambda: (os.kill(proc.pid, signal.SIGKILL), proc.wait()))
        assert proc.stdout is not None
        root_id = proc.stdout.readline().decode().strip()
        assert proc.wait(600) == -signal.SIGKILL, (tmp_path / "launch.log").read_text()
        assert proxy.lost == 1
        return root_id
    finally:
        proc.kill()
        proc.wait()
        proxy.close()


def resolver(server: Any, s3_url: str, root: Path, base_image: str, **kw: Any) -> sk.CloudResolver:
    return sk.CloudResolver(server=server.url, api_key=server.key, storage=s3_url,
                            registry=f"{REGISTRY}/sk-test-faults", base_image=base_image, project_root=str(root),
                            poll_interval=0.2, progress=lambda _: None, **kw)


def engine_age(container: Any) -> int:
    """Seconds since ``container`` was created, by the engine's clock."""
    client = docker_client()
    return _timestamp(client.info().get("SystemTime")) - _timestamp(container.attrs.get("Created"))


@pytest.mark.parametrize("request_", [rb"POST /containers/create", rb"PUT /containers/[0-9a-f]+/archive"],
                         ids=["created", "secrets-copied"])
def test_a_launch_killed_before_its_driver_container_started_leaves_no_container(
        base_image, project, s3_url, tmp_path, monkeypatch, caplog, request_):
    """The CloudResolver's process killed (SIGKILL) once the engine made its driver's container, before it was started
    (right after the create; after its token and the S3 keys were copied into it as files): nothing recorded (the
    driver records its resolution), the container left created. The next Docker resolution started from the machine
    removes it once older than $SEMATIC_K8S_UNSTARTED_DRIVER_GRACE (GRACE here), saying so, has the server revoke the
    token minted for it at once (refused as revoked), and resolves. Was: left for ever, never started, its secret
    files in it (``docker cp`` reads them); then, removed, its token valid for its lifetime (7 days): its resolution,
    never recorded, never ends to end it."""
    monkeypatch.setenv("SEMATIC_K8S_UNSTARTED_DRIVER_GRACE", str(GRACE))
    root, mod = project
    with serve(tmp_path) as server:
        root_id = killed_launch(server, s3_url, project, base_image, tmp_path, request_)
        try:
            [left] = containers_of(root_id, "driver")
            assert left.status == "created"
            assert server.store.get_resolution(root_id) is None  # nothing recorded that would mislead
            assert revoked_at(str(server.store.url), root_id) == [None]  # its token minted, valid
            token = token_in(left) if b"archive" in request_ else None
            wait_for(lambda: engine_age(left) > GRACE, GRACE + 600, 1, what="the container to pass the grace")
            with caplog.at_level("INFO", logger="sematic_k8s"):
                assert mod.pipe(2).resolve(resolver(server, s3_url, root, base_image)) == 5
            assert containers_of(root_id) == []
            assert None not in revoked_at(str(server.store.url), root_id)  # revoked at once
            if token is not None:
                r = httpx.get(f"{server.url}/api/v1/resolutions/{root_id}", headers={"X-API-Key": token}, timeout=30)
                assert r.status_code == 401 and "was revoked" in r.text, r.text
            said = [r.getMessage() for r in caplog.records if "never started" in r.getMessage()]
            assert any(left.name in s and root_id in s for s in said), said
        finally:
            for c in containers_of(root_id):
                c.remove(force=True)


def test_a_launch_killed_once_its_driver_container_started_resolves_as_detached(base_image, project, s3_url,
                                                                                 tmp_path):
    """Held: the CloudResolver's process killed once the engine started its driver's container, before it heard so:
    the driver records the resolution and resolves it, its container removing itself, none left."""
    with serve(tmp_path) as server:
        root_id = killed_launch(server, s3_url, project, base_image, tmp_path, rb"POST /containers/[0-9a-f]+/start")
        res = wait_for(lambda: (r := server.store.get_resolution(root_id)) is not None and r.state in
                       ("resolved", "failed", "canceled") and r, 300, what="its end")
        assert res.state == "resolved", res.error
        wait_for(lambda: containers_of(root_id) == [], 60, what="its containers to be gone")


def revoked_at(db_url: str, res_id: str) -> list[Any]:
    """When each token minted for resolution ``res_id`` was revoked (None: not revoked)."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT revoked_at FROM resolution_tokens WHERE resolution_id = :r"),
                                     {"r": res_id}).scalars())
    finally:
        engine.dispose()


def token_holders(db_url: str) -> list[str]:
    """The resolutions tokens were minted for, in the database of ``db_url``."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT DISTINCT resolution_id FROM resolution_tokens")).scalars())
    finally:
        engine.dispose()


def docker_rerun_server(home: Path, db_url: str, storage: str, **env: str) -> ServerProcess:
    """A server process over ``db_url`` (keys required), its reruns launched by its Docker launcher (the idle driver's
    repository), sweeping the driver containers left unstarted past :data:`GRACE`; ``env``: more of its environment."""
    return ServerProcess(home, db_url=db_url, local=False, args=(
        "--allow-docker", "--rerun-launcher", "docker", "--rerun-image-repository", IDLE_DRIVER_REPO),
        env={STORAGE_ENV: storage, "SEMATIC_K8S_UNSTARTED_DRIVER_GRACE": str(GRACE), **env})


def gone_past_grace(container: Any, res_id: str) -> bool:
    """Whether ``container``, the driver container of resolution ``res_id``, is gone, asserting that it was not removed
    within :data:`GRACE` (looked for first, its age read after: gone while younger, it went younger)."""
    gone = containers_of(res_id, "driver") == []
    age = engine_age(container)
    assert not gone or age >= GRACE, f"driver container {container.name} removed within the grace ({age} s old now)"
    return gone


def token_in(container: Any) -> str:
    """The driver's token, as its launch copied it into ``container`` (a file)."""
    stream, _ = container.get_archive(f"/{SECRETS_DIR}/api-key")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.next()
        assert member is not None
        read = tar.extractfile(member)
        assert read is not None
        return read.read().decode().strip()


@pytest.mark.parametrize("request_", [rb"POST /containers/create", rb"PUT /containers/[0-9a-f]+/archive"],
                         ids=["created", "secrets-copied"])
def test_a_server_killed_before_its_reruns_driver_container_started_leaves_no_container_nor_token(
        tmp_path, monkeypatch, request_):
    """A server process (keys required, its reruns launched by its Docker launcher) killed (SIGKILL) once the engine
    made a rerun's driver container, before it was started (right after the create; after the rerun's token and the
    S3 keys were copied into it as files): the container is left created, its claim recorded. The server started again
    removes it at its start once older than $SEMATIC_K8S_UNSTARTED_DRIVER_GRACE (GRACE here), and revokes the rerun's
    token at once: refused as revoked, not left to the claim's failure a heartbeat timeout later (or its 7 days).
    Was: the container left for ever (the CLI's sweep alone removed it, at its next Docker resolution), its token
    valid until the claim failed."""
    require_docker()
    image = idle_driver_image(docker_client())
    _, bucket = fresh_bucket(monkeypatch, "sk-launch-killed")
    storage = f"s3://{bucket}/artifacts"
    db_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    key = create_api_key(db_url, tmp_path, "tests")
    proxy = EngineProxy(engine_socket())
    method, _, path = request_.partition(b" ")
    proxy.path = re.compile(re.escape(method) + rb" /v[0-9.]+" + path)
    server = docker_rerun_server(tmp_path, db_url, storage, DOCKER_HOST=f"tcp://127.0.0.1:{proxy.port}")
    rerun_id = ""
    try:
        server.start()
        root = record_resolution(server.url, key, kind="cloud", image=image, storage_url=storage, state="failed")
        killed = server.proc
        assert killed is not None
        proxy.lose_answer(method + b" /v" + docker_client().api.api_version.encode() + b"/",
                          meanwhile=lambda: (os.kill(killed.pid, signal.SIGKILL), killed.wait()))

        def ask() -> None:
            try:
                httpx.post(f"{server.url}/api/v1/resolutions/{root}/rerun", json={}, headers={"X-API-Key": key},
                           timeout=120)
            except httpx.TransportError:
                pass  # the server killed before it answered

        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        assert killed.wait(300) == -signal.SIGKILL
        asking.join(60)
        assert proxy.lost == 1
        # its id from this server's database, then its container by its labels (not every driver on the engine: a
        # container of another process's may go while listed)
        [rerun_id] = [r for r in token_holders(db_url) if r != root]
        [left] = containers_of(rerun_id, "driver")
        assert left.status == "created"
        assert revoked_at(db_url, rerun_id) == [None]  # its token minted, valid
        token = token_in(left) if b"archive" in request_ else None
        wait_for(lambda: engine_age(left) > GRACE, GRACE + 600, 1, what="the container to pass the grace")
        server.start()
        wait_for(lambda: containers_of(rerun_id) == [], 600, 1, what="the unstarted driver container to be removed")
        wait_for(lambda: revoked_at(db_url, rerun_id) != [None], 600, 1, what="its token revoked")
        if token is not None:
            r = httpx.get(f"{server.url}/api/v1/resolutions/{rerun_id}", headers={"X-API-Key": token}, timeout=30)
            assert r.status_code == 401 and "was revoked" in r.text, r.text
        said = (tmp_path / f"server-{server.port}.log").read_text()
        assert f"of resolution {rerun_id} was created but never started" in said, said[-3000:]
    finally:
        server.stop()
        proxy.close()
        for c in containers_of(rerun_id) if rerun_id else []:
            c.remove(force=True)


def test_a_running_server_removes_a_driver_container_a_launch_left_unstarted_once_past_the_grace(
        base_image, project, s3_url, tmp_path):
    """A server process (keys required, --rerun-launcher docker) up and sweeping, then a CloudResolver's process using
    it killed (SIGKILL) once the engine made its driver's container, before it was started: that container, made after
    the server's start, is removed by one of its later passes once older than $SEMATIC_K8S_UNSTARTED_DRIVER_GRACE,
    saying so, and the token the server minted for it is revoked at once (its resolution, never recorded, stays so).
    A driver container of a launch under way (its token minted, created, its start to come), within the grace when
    that pass ran, is left, its token valid. (The restarted server's test above sees its first passes only.)"""
    db_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    key = create_api_key(db_url, tmp_path, "tests")
    server = docker_rerun_server(tmp_path, db_url, s3_url, **{HEARTBEAT_TIMEOUT_ENV: "8"})  # a pass every 2 s
    live_id, root_id, young = uuid.uuid4().hex, "", None
    try:
        server.start()
        root_id = killed_launch(SimpleNamespace(url=server.url, key=key), s3_url, project, base_image, tmp_path,
                                rb"POST /containers/create")
        [left] = containers_of(root_id, "driver")
        assert left.status == "created"
        assert revoked_at(db_url, root_id) == [None]  # its token minted, valid
        # made as it nears the grace: the pass that removes the other one past it comes after, and finds it within it
        wait_for(lambda: gone_past_grace(left, root_id) or engine_age(left) >= GRACE / 2, GRACE + 600, 1,
                 what="the container to near the grace")
        minted = httpx.post(f"{server.url}/api/v1/resolutions/{live_id}/token", json={}, headers={"X-API-Key": key},
                            timeout=30)
        assert minted.status_code == 201, minted.text
        young = docker_client().containers.create(base_image, ["true"],
                                                  labels={RESOLUTION_LABEL: live_id, ROLE_LABEL: "driver"})
        wait_for(lambda: gone_past_grace(left, root_id), 600, 1, what="the server to remove the unstarted container")
        wait_for(lambda: revoked_at(db_url, root_id) != [None], 600, 1, what="its token revoked")
        said = server.log.read_text()
        assert f"container {left.name} of resolution {root_id} was created but never started" in said, said[-3000:]
        r = httpx.get(f"{server.url}/api/v1/resolutions/{root_id}", headers={"X-API-Key": key}, timeout=30)
        assert r.status_code == 404, r.text  # nothing recorded that would mislead
        valid = revoked_at(db_url, live_id)  # read before the container is looked for: a removal revokes after it
        if not gone_past_grace(young, live_id):  # (gone past the grace: a machine too loaded to tell)
            assert valid == [None]
    finally:
        server.stop()
        for c in containers_of(root_id) if root_id else []:
            c.remove(force=True)
        if young is not None:
            for c in containers_of(live_id):
                c.remove(force=True)
