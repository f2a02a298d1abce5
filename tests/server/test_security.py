"""The server against a hostile client, over real HTTP: records it wrote never decide what runs; reruns only from
allow-listed images by digest, by the server's own launcher, never with the Docker socket; drivers' tokens
scoped to their resolution and revocable; revoked keys refused at once on every replica; credentials before
bodies and a streaming size cap; bounded pagination; failures as JSON; local mode safe from other web pages.

The real parts: uvicorn servers (in this process and as processes), SQLite and PostgreSQL, the Docker engine
and registry, a private moto S3 server (stopped to cause a storage failure), the Kubernetes cluster model, and
a Docker "engine" socket that accepts connections and never answers (a hung daemon).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import io
import json
import os
import select
import socket
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner

from idle_driver import IDLE_DRIVER_REPO, idle_driver_image
from sematic_k8s.errors import ResolutionEnded
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s_server import auth
from sematic_k8s_server.cli import main as server_cli
from sematic_k8s_server.config import RerunConfig, ServerConfig
from sematic_k8s_server.db import open_store
from serving import create_api_key, record_resolution, serve, server_process, wait_for

DIGEST = "sha256:" + "ab" * 32
ALLOWED = "127.0.0.1:5000/pipelines"
STORAGE = "s3://sk-security/artifacts"
MiB = 1024 * 1024


# -- helpers ----------------------------------------------------------------------------------------------------

def new_run(root_id: str) -> Batch:
    run_id = uuid.uuid4().hex
    return Batch(new_runs={run_id: {"id": run_id, "root_id": root_id, "parent_id": root_id, "func_path": "m:f",
                                    "func_name": "f", "state": "created", "created_at": utcnow()}})


def post_json(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    return client.post(path, json=body)


def upload(url: str, path: str, headers: dict[str, str], total: int, *, chunked: bool = False) -> tuple[bytes, int]:
    """POST ``total`` body bytes as fast as the server takes them, and stop sending as soon as it answers:
    (the answer, the bytes of the request sent by then)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", *(f"{k}: {v}" for k, v in headers.items()),
            "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    block = b"x" * 65536
    frame = f"{len(block):x}\r\n".encode() + block + b"\r\n" if chunked else block
    sent, answer, pending = 0, b"", b""
    sock.setblocking(False)
    try:
        while b"\r\n" not in answer:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], 60)
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
            elif writable:
                pending = pending or frame
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent, pending = sent + n, pending[n:]
            else:
                break
        sock.setblocking(True)
        sock.settimeout(30)
        while True:  # the rest of the answer: the server closes the connection after it
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return answer, sent


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    with serve(tmp_path) as s:
        yield s


def rerun_server(tmp_path: Path, **reruns: Any) -> Any:
    """A server whose reruns go by ``reruns`` (RerunConfig fields), images allowed from ALLOWED."""
    config = RerunConfig(**{"image_repositories": (ALLOWED,), "storage_url": STORAGE, **reruns})
    return serve(tmp_path, config=ServerConfig(reruns=config))


# -- the server never runs what a client wrote --------------------------------------------------------------

def test_a_local_resolution_is_never_run_on_the_server(served, tmp_path) -> None:
    """A record naming a .py file on the server's disk: the rerun is refused with the command to run on the
    user's machine, and the file is never executed."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_pipeline.py"
    evil.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran on the server')\n"
                    "import sematic_k8s as sk\n\n@sk.func\ndef pipeline() -> int:\n    return 1\n")
    root = record_resolution(served.url, served.key, kind="local", func_path="evil_pipeline:pipeline",
                             source_file=str(evil), state="failed")
    with served.client() as c:
        for body, command in (({}, f"sematic-k8s rerun {root}"),
                              ({"mode": "continue"}, f"sematic-k8s rerun {root} --mode continue")):
            r = c.post(f"/api/v1/resolutions/{root}/rerun", json=body)
            assert r.status_code == 422, r.text
            assert r.json()["reason"] == "local-resolution" and r.json()["command"] == command
            assert command in r.json()["detail"] and "LocalResolver(rerun_from=" in r.json()["detail"]
        assert c.get("/api/v1/resolutions").json()["items"] == [c.get(f"/api/v1/resolutions/{root}").json()]
    assert not marker.exists()
    assert not (served.home / "reruns").exists()


@pytest.mark.parametrize("image, status, reason", [
    (None, 422, "image-not-by-digest"),
    (f"{ALLOWED}:latest", 422, "image-not-by-digest"),
    (f"{ALLOWED}@sha256:abc", 422, "image-not-by-digest"),
    (f"{ALLOWED}@{DIGEST}; rm -rf /", 422, "image-not-by-digest"),
    (f"{ALLOWED}@{DIGEST}\n", 422, "image-not-by-digest"),
    (f"{ALLOWED}/../../x@{DIGEST}", 422, "image-not-by-digest"),
    (f"127.0.0.1:5000/other@{DIGEST}", 403, "image-not-allowed"),
    (f"{ALLOWED}-evil@{DIGEST}", 403, "image-not-allowed"),
    (f"evil.example/pipelines@{DIGEST}", 403, "image-not-allowed"),
    (f"evil.example/{ALLOWED}@{DIGEST}", 422, "image-not-by-digest"),  # a port inside a path
    (f"127.0.0.1:5001/pipelines@{DIGEST}", 403, "image-not-allowed"),
])
def test_a_cloud_rerun_needs_an_allow_listed_image_by_digest(tmp_path, image, status, reason) -> None:
    with rerun_server(tmp_path, launcher="kubernetes") as s, s.client() as c:
        root = record_resolution(s.url, s.key, kind="cloud", image=image, storage_url=STORAGE)
        r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
        assert (r.status_code, r.json()["reason"]) == (status, reason), r.text
        assert r.json()["detail"]
        if status == 403:
            assert "allow-list" in r.json()["detail"] and "rerunImageRepositories" in r.json()["detail"]
        other = record_resolution(s.url, s.key, kind="cloud", image=f"{ALLOWED}@{DIGEST}", storage_url="s3://attacker/loot")
        r = c.post(f"/api/v1/resolutions/{other}/rerun", json={})
        assert (r.status_code, r.json()["reason"]) == (422, "other-storage"), r.text


def test_a_server_without_a_launcher_starts_no_rerun(served) -> None:
    root = record_resolution(served.url, served.key, kind="cloud", image=f"{ALLOWED}@{DIGEST}", storage_url=STORAGE)
    with served.client() as c:
        r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
    assert r.status_code == 501 and r.json()["reason"] == "no-launcher" and "CloudResolver(rerun_from=" in r.text


def test_the_docker_launcher_is_for_local_development_only(tmp_path) -> None:
    with pytest.raises(ValueError, match="--allow-docker"):
        RerunConfig(launcher="docker")
    runner = CliRunner()
    home = ["--home", str(tmp_path)]
    result = runner.invoke(server_cli, ["server", "--rerun-launcher", "docker", *home])
    assert result.exit_code != 0 and "--allow-docker" in result.output
    result = runner.invoke(server_cli, ["server", "--allow-docker", "--host", "0.0.0.0", *home])
    assert result.exit_code != 0 and "loopback" in result.output
    result = runner.invoke(server_cli, ["server", "--rerun-image-repository", "reg/x:tag", *home])
    assert result.exit_code != 0 and "without tag" in result.output


def test_kubernetes_reruns_need_the_address_pods_reach_the_server_at(tmp_path) -> None:
    """Without --self-url a rerun's driver would be told http://127.0.0.1:PORT, which is its own pod."""
    runner = CliRunner()
    home = ["--home", str(tmp_path)]
    result = runner.invoke(server_cli, ["server", "--host", "0.0.0.0", "--rerun-launcher", "kubernetes", *home])
    assert result.exit_code != 0 and "--rerun-launcher kubernetes needs --self-url" in result.output
    assert "never 127.0.0.1" in result.output
    result = runner.invoke(server_cli, ["server", "--rerun-launcher", "kubernetes", "--self-url", "sk.svc:8000",
                                        *home])
    assert result.exit_code != 0 and "--self-url 'sk.svc:8000' is not a server URL" in result.output
    result = runner.invoke(server_cli, ["server", "--rerun-launcher", "kubernetes", "--self-url",
                                        "http://sk.svc:80000", *home])  # was taken: each rerun's driver failed
    assert result.exit_code != 0 and "--self-url 'http://sk.svc:80000' has port 80000, not one of 1-65535" \
        in result.output


def test_kubernetes_reruns_use_the_servers_settings_and_a_token_secret_never_the_records(tmp_path, monkeypatch):
    """The record asks for the docker executor in kube-system with its own API server: the server starts its
    Job in its own namespace with its own settings, the image by digest, and the driver's token in a Secret
    of the rerun's own; that token records only the new resolution."""
    pytest.importorskip("kubernetes")
    from kubernetes import client

    from kube_model import Cluster, NodeSpec, Script
    from sematic_k8s.k8s import manifests
    from sematic_k8s.specs import DriverSpec

    ns = "sk-runs"
    image = f"{ALLOWED}/team@{DIGEST}"
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=lambda pod, c: Script(forever=True),
                 namespaces=[ns]) as cluster, rerun_server(tmp_path, launcher="kubernetes",
                                                           executor_settings={"namespace": ns}) as s:
        monkeypatch.setenv("SEMATIC_K8S_KUBE_HOST", cluster.proxy())  # the server's identity: an admin here
        api = cluster.client()
        root = record_resolution(s.url, s.key, kind="cloud", image=image, storage_url=STORAGE, executor="docker",
                                 executor_settings={"namespace": "kube-system", "host": "http://evil.example:6443",
                                                    "service_account": "cluster-admin"}, cache_namespace="nightly")
        with s.client() as c:
            r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
        assert r.status_code == 202, r.text
        new_id = r.json()["resolution_id"]
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        # answered once its driver started, or after the answer window when the API is slow (a loaded machine):
        # its Job, then its Secret owned by the Job, may come a moment after the answer
        job = wait_for(lambda: batch.list_namespaced_job(ns, field_selector=f"metadata.name="
                                                          f"{manifests.driver_job_name(new_id)}").items,
                       what="the rerun's driver Job")[0]
        assert batch.list_namespaced_job("kube-system").items == []
        pod = job.spec.template.spec
        assert pod.containers[0].image == image
        env = {e.name: e for e in pod.containers[0].env}
        spec = DriverSpec.from_json(env["SEMATIC_K8S_DRIVER"].value)
        assert spec.executor == "kubernetes" and spec.executor_settings["namespace"] == ns
        assert "host" not in spec.executor_settings and spec.executor_settings.get("service_account") != "cluster-admin"
        assert spec.resolution.rerun_from == root and spec.resolution.cache_namespace == "nightly"
        key_ref = env["SEMATIC_K8S_API_KEY"]
        assert key_ref.value is None and key_ref.value_from.secret_key_ref.name == manifests.token_secret_name(new_id)
        secret = wait_for(lambda: (found := core.read_namespaced_secret(manifests.token_secret_name(new_id), ns))
                          .metadata.owner_references and found, what="the token Secret owned by the Job")
        assert [(o.kind, o.name, o.uid) for o in secret.metadata.owner_references] == [
            ("Job", job.metadata.name, job.metadata.uid)]
        token = base64.b64decode(secret.data["api-key"]).decode()
        assert token.startswith(auth.TOKEN_PREFIX) and token not in json.dumps(api.sanitize_for_serialization(job))
        stored = s.store.engine.connect().exec_driver_sql("SELECT token_hash FROM resolution_tokens").scalars().all()
        assert token not in stored and auth.hash_key(token) in stored

        with s.client(key=token) as driver:
            assert driver.get(f"/api/v1/resolutions/{root}").status_code == 200  # the resolution it re-runs
            own = driver.get(f"/api/v1/resolutions/{new_id}")  # its own: the server's claim until it records it
            assert own.status_code == 200 and own.json()["state"] == "created", own.text
            assert driver.get("/api/v1/resolutions").status_code == 403
            other = record_resolution(s.url, s.key, kind="cloud", image=image)
            assert driver.get(f"/api/v1/resolutions/{other}").status_code == 403
            assert post_json(driver, "/api/v1/store/write", json.loads(_batch_json(new_run(other)))).status_code == 403
            assert post_json(driver, "/api/v1/store/write", json.loads(_batch_json(new_run(new_id)))).status_code == 200
        api.close()
        assert not cluster.errors, cluster.errors


def _batch_json(batch: Batch) -> str:
    from sematic_k8s.store.wire import batch_to_json, dumps
    return dumps(batch_to_json(batch)).decode()


@pytest.fixture
def docker_engine() -> Any:
    import infra

    infra.require_docker()
    return infra.docker_client()


def test_a_docker_rerun_never_gets_the_docker_socket_and_its_token_is_a_file(tmp_path, docker_engine) -> None:
    """Local development (--allow-docker): the rerun's driver container has no Docker socket, and its token
    is a 0400 file, not an environment variable (``docker inspect`` shows no secret)."""
    image = idle_driver_image(docker_engine)
    config = RerunConfig(launcher="docker", allow_docker=True, image_repositories=(IDLE_DRIVER_REPO,),
                         storage_url=STORAGE)
    containers: list[Any] = []
    with serve(tmp_path, config=ServerConfig(reruns=config)) as s:
        root = record_resolution(s.url, s.key, kind="cloud", image=image, storage_url=STORAGE, executor="docker")
        try:
            with s.client() as c:
                r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
            assert r.status_code == 202, r.text
            new_id = r.json()["resolution_id"]
            containers = docker_engine.containers.list(all=True, filters={
                "label": f"sematic-k8s/resolution-id={new_id}"})
            [container] = containers
            attrs = container.attrs
            assert attrs["Image"] == docker_engine.images.get(image).id
            assert not any("docker.sock" in (m.get("Source", "") + m.get("Destination", ""))
                           for m in attrs["Mounts"]), attrs["Mounts"]
            assert not any("docker.sock" in b for b in attrs["HostConfig"].get("Binds") or [])
            env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
            assert "SEMATIC_K8S_API_KEY" not in env
            path = env["SEMATIC_K8S_API_KEY_FILE"]
            stream, _ = container.get_archive(path)
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                [member] = tar.getmembers()
                token = tar.extractfile(member).read().decode()
            assert member.mode & 0o777 == 0o400 and token.startswith(auth.TOKEN_PREFIX)
            assert json.loads(env["SEMATIC_K8S_DRIVER"])["executor"] == "process"
            with s.client(key=token) as driver:
                r = driver.get("/api/v1/resolutions")
                assert r.status_code == 403 and f"resolution {new_id}" in r.json()["detail"]
        finally:
            for c in containers:
                c.remove(force=True)


class HungDocker:
    """A Docker engine socket that accepts connections and never answers, until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(64)
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(conn)

    def release(self) -> None:
        self.server.close()
        self.path.unlink(missing_ok=True)
        for conn in self.connections:
            conn.close()


def test_concurrent_reruns_are_queued_with_a_cap_and_a_hung_launcher_fails_as_json(tmp_path, monkeypatch) -> None:
    """With one launch at a time and two waiting, six simultaneous rerun requests: three are taken (the first
    hangs on a Docker engine that does not answer), three get 429 at once; when the engine goes away, the
    three taken ones fail with a 502 JSON message."""
    hung = HungDocker(tmp_path / "docker.sock")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{hung.path}")
    config = RerunConfig(launcher="docker", allow_docker=True, image_repositories=(ALLOWED,), storage_url=STORAGE,
                         concurrency=1, queue=2)
    (tmp_path / "home").mkdir()
    with serve(tmp_path / "home", config=ServerConfig(reruns=config)) as s:
        root = record_resolution(s.url, s.key, kind="cloud", image=f"{ALLOWED}@{DIGEST}", storage_url=STORAGE)
        answers: list[httpx.Response] = []

        def ask() -> None:
            with s.client() as c:
                answers.append(c.post(f"/api/v1/resolutions/{root}/rerun", json={}, timeout=120))

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for t in threads:
            t.start()
        wait_for(lambda: len(answers) == 3, 60, what="three answers")
        assert all(r.status_code == 429 and r.json()["reason"] == "busy" for r in answers), [r.text for r in answers]
        assert answers[0].headers["Retry-After"] == "5"
        wait_for(lambda: hung.connections, 60, what="the first launch at the engine")
        assert len(hung.connections) == 1  # one launch at a time
        hung.release()
        for t in threads:
            t.join(120)
        failed = answers[3:]
        assert len(failed) == 3 and all(r.status_code == 502 for r in failed), [r.text for r in failed]
        assert all("could not start the rerun's driver with the docker launcher" in r.json()["detail"]
                   for r in failed)
        assert s.store.engine.connect().exec_driver_sql(
            "SELECT count(*) FROM resolution_tokens WHERE revoked_at IS NULL").scalar() == 0


def test_a_launcher_that_cannot_reach_docker_is_a_502_with_a_message(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-docker-here.sock'}")
    config = RerunConfig(launcher="docker", allow_docker=True, image_repositories=(ALLOWED,), storage_url=STORAGE)
    with serve(tmp_path, config=ServerConfig(reruns=config)) as s, s.client() as c:
        root = record_resolution(s.url, s.key, kind="cloud", image=f"{ALLOWED}@{DIGEST}", storage_url=STORAGE)
        r = c.post(f"/api/v1/resolutions/{root}/rerun", json={})
        assert r.status_code == 502 and r.headers["content-type"] == "application/json", r.text
        assert r.json()["reason"] == "launcher-failed" and "docker launcher" in r.json()["detail"]


# -- drivers' tokens --------------------------------------------------------------------------------------------

def test_a_token_records_only_its_own_resolution_and_ends_with_it(served) -> None:
    original = record_resolution(served.url, served.key, kind="cloud", image=f"{ALLOWED}@{DIGEST}")
    other = record_resolution(served.url, served.key, kind="cloud", image=f"{ALLOWED}@{DIGEST}", state="running")
    own = uuid.uuid4().hex
    user = HttpStore(served.url, served.key)
    token = user.mint_token(own, rerun_from=original)
    driver = HttpStore(served.url, token)
    try:
        driver.write(Batch(new_resolutions=[{"id": own, "root_func_path": "m:f", "state": "running",
                                             "settings": {"kind": "cloud"}, "created_at": utcnow()}]))
        driver.write(new_run(own))
        assert driver.get_resolution(original).id == original and driver.runs_of_root(original)
        other_run = user.runs_of_root(other)[0].id
        with served.client(key=token) as c:
            for batch in (new_run(other), Batch(run_updates={other_run: {"state": "failed"}}),
                          Batch(resolution_updates={other: {"state": "failed"}}),
                          Batch(new_resolutions=[{"id": other, "root_func_path": "m:f", "state": "running",
                                                  "created_at": utcnow()}]),
                          # numbering another driver's writes (its own would all look applied already)
                          Batch(run_updates={}, fence={other: 0}, sequence={other: 2**62})):
                r = post_json(c, "/api/v1/store/write", json.loads(_batch_json(batch)))
                assert r.status_code == 403 and "only its own resolution" in r.json()["detail"], r.text
            mixed = new_run(own)
            mixed.run_updates[other_run] = {"state": "failed"}
            assert post_json(c, "/api/v1/store/write", json.loads(_batch_json(mixed))).status_code == 403
            for path in (f"/api/v1/resolutions/{other}", f"/api/v1/resolutions/{other}/graph", f"/api/v1/runs/{other}",
                         f"/api/v1/runs/{other}/logs", f"/api/v1/store/runs_of_root/{other}", "/api/v1/resolutions",
                         "/api/v1/runs", f"/api/v1/runs?root_id={other}", "/api/v1/events",
                         f"/api/v1/store/cancel_requested/{other}", "/api/v1/api-keys"):
                r = c.get(path)
                assert r.status_code == 403 and r.json()["detail"], (path, r.text)
            for path in (f"/api/v1/resolutions/{original}/rerun", f"/api/v1/resolutions/{other}/cancel",
                         f"/api/v1/resolutions/{uuid.uuid4().hex}/token", f"/api/v1/store/take_over/{other}"):
                assert post_json(c, path, {}).status_code == 403, path
            assert driver.take_over(own) == 1  # its own: it becomes its driver
            r = c.get("/api/v1/pipelines")  # any endpoint a driver does not need, present or future: refused
            assert r.status_code == 403 and "needs an API key" in r.json()["detail"]
        assert user.get_run(other_run).state == "running"  # nothing of it changed
        assert served.store.get_resolution(other).state == "running"

        driver.write(Batch(resolution_updates={own: {"state": "resolved", "ended_at": utcnow()}}))
        with pytest.raises(ResolutionEnded, match=f"resolution {own} has already ended as resolved") as ended:
            driver.get_resolution(own)
        assert (ended.value.resolution_id, ended.value.state) == (own, "resolved")
        with served.client(key=token) as c:  # the refusal names the end of its own resolution, and nothing else
            r = c.get(f"/api/v1/resolutions/{other}")
            assert r.status_code == 401 and r.headers["X-Sematic-K8s-Ended"] == f"{own} resolved", r.headers
            assert "has ended (resolved)" in r.json()["detail"]
        with served.client() as c:
            r = post_json(c, f"/api/v1/resolutions/{own}/token", {})
            assert r.status_code == 409
    finally:
        user.close()
        driver.close()


def test_a_token_expires_after_its_maximum_lifetime(tmp_path) -> None:
    config = ServerConfig(reruns=RerunConfig(token_lifetime=dt.timedelta(microseconds=1)))
    with serve(tmp_path, config=config) as s, s.client() as c:
        r = post_json(c, f"/api/v1/resolutions/{uuid.uuid4().hex}/token", {})
        assert r.status_code == 201
        with s.client(key=r.json()["token"]) as driver:
            r = driver.get(f"/api/v1/resolutions/{r.json()['resolution_id']}")
            assert r.status_code == 401 and "maximum lifetime" in r.json()["detail"]
            assert "X-Sematic-K8s-Ended" not in r.headers


def test_revoking_a_key_ends_the_tokens_it_minted(served) -> None:
    with served.client(key=served.admin_key) as admin:
        alice = admin.post("/api/v1/api-keys", json={"name": "alice"}).json()
        with served.client(key=alice["key"]) as c:
            own = uuid.uuid4().hex
            token = post_json(c, f"/api/v1/resolutions/{own}/token", {}).json()["token"]
        with served.client(key=token) as driver:
            assert driver.get(f"/api/v1/store/cancel_requested/{own}").status_code == 200
            assert admin.post(f"/api/v1/api-keys/{alice['id']}/revoke", json={}).json() == {"revoked": 1}
            r = driver.get(f"/api/v1/store/cancel_requested/{own}")
            assert r.status_code == 401 and "revoked" in r.json()["detail"]
            assert "X-Sematic-K8s-Ended" not in r.headers


def test_a_key_revokes_at_once_the_tokens_it_minted_for_a_resolution_whose_driver_never_started(served) -> None:
    """``DELETE /resolutions/{id}/token`` (the CloudResolver's sweep of the driver containers left unstarted asks it):
    the tokens the caller's key minted for a resolution never recorded stop working at once ("was revoked"); another
    key's call revokes none of them; a resolution recorded and running is refused (409), its driver's token left
    working; a token may not ask it. Was: nothing ended such a token before its lifetime (7 days) but its
    resolution's end, which a resolution never recorded never has."""
    with served.client(key=served.admin_key) as admin:
        alice = admin.post("/api/v1/api-keys", json={"name": "alice"}).json()
        bob = admin.post("/api/v1/api-keys", json={"name": "bob"}).json()
    with served.client(key=alice["key"]) as a, served.client(key=bob["key"]) as b:
        own = uuid.uuid4().hex
        token = post_json(a, f"/api/v1/resolutions/{own}/token", {}).json()["token"]
        assert b.delete(f"/api/v1/resolutions/{own}/token").json() == {"resolution_id": own, "revoked": 0}
        with served.client(key=token) as driver:
            assert driver.get(f"/api/v1/store/cancel_requested/{own}").status_code == 200
            assert driver.delete(f"/api/v1/resolutions/{own}/token").status_code == 403
            assert a.delete(f"/api/v1/resolutions/{own}/token").json() == {"resolution_id": own, "revoked": 1}
            r = driver.get(f"/api/v1/store/cancel_requested/{own}")
            assert r.status_code == 401 and "was revoked" in r.json()["detail"], r.text
        running = record_resolution(served.url, alice["key"], kind="cloud", state="running")
        live = post_json(a, f"/api/v1/resolutions/{running}/token", {}).json()["token"]
        r = a.delete(f"/api/v1/resolutions/{running}/token")
        assert r.status_code == 409 and "cancel it instead" in r.json()["detail"], r.text
        with served.client(key=live) as driver:
            assert driver.get(f"/api/v1/store/cancel_requested/{running}").status_code == 200


# -- keys: admin only, revoked at once on every replica ------------------------------------------------------

def test_only_admin_keys_manage_keys_and_no_key_is_ever_shown_again(served) -> None:
    with served.client() as user:
        assert user.get("/api/v1/api-keys").status_code == 403
        assert user.post("/api/v1/api-keys", json={"name": "mallory", "admin": True}).status_code == 403
        admin_id = next(k["id"] for k in auth.list_keys(served.store.engine) if k["admin"])
        r = user.post(f"/api/v1/api-keys/{admin_id}/revoke", json={})
        assert r.status_code == 403 and "admin" in r.json()["detail"]
    with served.client(key=served.admin_key) as admin:
        created = admin.post("/api/v1/api-keys", json={"name": "ci"})
        assert created.status_code == 201 and created.json()["key"].startswith(auth.PREFIX)
        listed = admin.get("/api/v1/api-keys").json()["items"]
        assert {k["name"] for k in listed} == {"tests", "tests-admin", "ci"}
        assert created.json()["key"] not in json.dumps(listed) and "key_hash" not in json.dumps(listed)
        assert admin.post(f"/api/v1/api-keys/{'0' * 32}/revoke", json={}).status_code == 404


def test_a_key_revoked_through_one_server_is_refused_by_another_at_once(tmp_path, postgres_url) -> None:
    """Two server processes on one PostgreSQL database: revoke through the first, the second refuses the very
    next request (with the key, and with a token minted by it); the CLI revokes the same way."""
    runner = CliRunner()
    create = functools.partial(create_api_key, postgres_url, tmp_path)

    admin, alice, bob = create("root", "--admin"), create("alice"), create("bob")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with server_process(tmp_path / "a", "--db-url", postgres_url) as (_, a_url), \
            server_process(tmp_path / "b", "--db-url", postgres_url) as (_, b_url), \
            httpx.Client(base_url=a_url, timeout=30) as a, httpx.Client(base_url=b_url, timeout=30) as b:
        def ok(client: httpx.Client, key: str) -> int:
            return client.get("/api/v1/resolutions", headers={"X-API-Key": key}).status_code

        assert ok(a, alice) == ok(b, alice) == ok(a, bob) == ok(b, bob) == 200
        token = a.post(f"/api/v1/resolutions/{uuid.uuid4().hex}/token", json={},
                       headers={"X-API-Key": alice}).json()["token"]
        assert b.get("/api/v1/health").status_code == 200
        keys = a.get("/api/v1/api-keys", headers={"X-API-Key": admin}).json()["items"]
        alice_id = next(k["id"] for k in keys if k["name"] == "alice")
        r = a.post(f"/api/v1/api-keys/{alice_id}/revoke", json={}, headers={"X-API-Key": admin})
        assert r.json() == {"revoked": 1}
        r = b.get("/api/v1/resolutions", headers={"X-API-Key": alice})
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
        assert ok(a, alice) == 401 and ok(b, bob) == 200
        assert b.get("/api/v1/runs?root_id=ab", headers={"X-API-Key": token}).status_code == 401

        revoked = runner.invoke(server_cli, ["api-keys", "revoke", "bob", "--db-url", postgres_url,
                                             "--home", str(tmp_path)])
        assert revoked.exit_code == 0, revoked.output
        assert ok(a, bob) == 401 and ok(b, bob) == 401 and ok(b, admin) == 200
        listing = runner.invoke(server_cli, ["api-keys", "list", "--db-url", postgres_url, "--home", str(tmp_path)])
        rows = {line.split()[1]: line.split() for line in listing.stdout.strip().splitlines()[1:]}
        assert rows["alice"][6] == "revoked" and rows["bob"][6] == "revoked"  # ID NAME ROLE CREATED (3 words) STATE
        assert rows["root"][2:7:4] == ["admin", "active"]
        again = runner.invoke(server_cli, ["api-keys", "revoke", "bob", "--db-url", postgres_url,
                                           "--home", str(tmp_path)])
        assert again.exit_code != 0 and "no active API key" in again.output


# -- hostile requests refused cheaply ------------------------------------------------------------------------

def test_an_unauthenticated_100_mb_post_is_refused_before_its_body_without_memory_growth(tmp_path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    key = auth.create_key(store.engine, "uploader")
    store.close()
    with server_process(tmp_path, "--max-request-mb", "1") as (proc, url):
        httpx.get(url + "/api/v1/resolutions", headers={"X-API-Key": key})  # warm: every module loaded
        before = peak_rss_kib(proc.pid)
        total = 100 * MiB
        answer, sent = upload(url, "/api/v1/store/write", {"Content-Type": "application/json"}, total)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert sent < total // 4, f"the client had to send {sent} of {total} bytes before the answer"
        # with a key: a body over the cap gets 413 as it streams in (no Content-Length to trust) ...
        answer, sent = upload(url, "/api/v1/store/write", {"Content-Type": "application/json", "X-API-Key": key},
                              total, chunked=True)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
        assert sent < total // 4
        # ... and at once when Content-Length says so
        answer, sent = upload(url, "/api/v1/store/write", {"Content-Type": "application/json", "X-API-Key": key},
                              total)
        assert answer.startswith(b"HTTP/1.1 413") and b"--max-request-mb" in answer, answer[:300]
        assert peak_rss_kib(proc.pid) - before < 32 * 1024, "the server's memory grew with the refused bodies"
        # and it still serves
        assert httpx.get(url + "/api/v1/resolutions", headers={"X-API-Key": key}).status_code == 200


def test_a_batch_of_a_million_tiny_records_is_refused_without_memory_growth(tmp_path) -> None:
    """An 11 MB batch (under the 32 MiB cap) of a million empty run updates, or of a million fences: each was
    validated, converted and written record by record (about 600 MB more resident memory and 9 s of the server's
    time for the first, answered 200); a few such requests at once would take the server down. A batch of more
    records than the server takes is a 413 saying so, as a body over the byte cap is (the HTTP store sends it in
    parts)."""
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    key = auth.create_key(store.engine, "writer")
    store.close()
    n = 1_000_000
    bodies = {"run_updates": "{" + ",".join(f'"{i:x}":{{}}' for i in range(n)) + "}",
              "fence": "{" + ",".join(f'"{i:x}":1' for i in range(n)) + "}"}
    with server_process(tmp_path) as (proc, url), httpx.Client(base_url=url, headers={"X-API-Key": key},
                                                                timeout=120) as c:
        assert c.post("/api/v1/store/write", json={}).status_code == 200  # warm: every module loaded
        before = peak_rss_kib(proc.pid)
        for section, entries in bodies.items():
            r = c.post("/api/v1/store/write", content=f'{{"{section}": {entries}}}',
                       headers={"Content-Type": "application/json"})
            assert r.status_code == 413, (section, r.text[:300])
            assert f"{n} records" in r.json()["detail"] and "\n" not in r.json()["detail"], r.text[:300]
        # parsing the JSON alone takes about 200 MB here (a million dicts); taking the records in took 600 more
        assert peak_rss_kib(proc.pid) - before < 384 * 1024, "the server's memory grew with the refused batches"
        assert c.get("/api/v1/resolutions").status_code == 200


def test_the_http_store_sends_a_batch_of_more_records_than_the_server_takes_in_parts(served, monkeypatch) -> None:
    """The server's cap on records per request, lowered to 40 here: a batch of 151 is refused (413) when sent
    whole, and the HTTP store records it all in parts."""
    from sematic_k8s_server import schemas

    monkeypatch.setattr(schemas, "MAX_BATCH_RECORDS", 40)
    root = uuid.uuid4().hex
    batch = Batch(new_resolutions=[{"id": root, "root_func_path": "m:f", "state": "running", "created_at": utcnow()}])
    for _ in range(150):
        batch.new_runs.update(new_run(root).new_runs)
    with served.client() as c:
        r = post_json(c, "/api/v1/store/write", json.loads(_batch_json(batch)))
        assert r.status_code == 413 and "at most 40" in r.json()["detail"], r.text
    store = HttpStore(served.url, served.key)
    try:
        store.write(batch)
        assert {r.id for r in store.runs_of_root(root)} == set(batch.new_runs)
    finally:
        store.close()


def test_pagination_is_bounded_with_a_message(served) -> None:
    with served.client() as c:
        for params, name in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"offset": -1}, "offset"),
                             ({"offset": 10**12}, "offset"), ({"limit": "lots"}, "limit")):
            for path in ("/api/v1/resolutions", "/api/v1/runs"):
                r = c.get(path, params=params)
                assert r.status_code == 422, (path, params)
                assert isinstance(r.json()["detail"], str) and f"query parameter '{name}'" in r.json()["detail"]
        record_resolution(served.url, served.key, kind="local")  # paged past: once a 500 (an SQLite overflow)
        for name in ("offset", "history_offset"):  # the dashboard's index pages twice
            r = c.get("/api/v1/pipelines", params={name: 10**23})
            assert r.status_code == 422 and f"query parameter '{name}'" in r.json()["detail"], r.text


def test_a_storage_failure_is_a_503_with_a_message(tmp_path, monkeypatch) -> None:
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config
    from moto.server import ThreadedMotoServer

    from sematic_k8s import serialization
    from sematic_k8s.storage.base import artifact_key
    from sematic_k8s.storage.s3 import S3Storage

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    host, port = s3.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 config=Config(s3={"addressing_style": "path"})).create_bucket(Bucket="arts")
    storage = S3Storage("arts", "p", endpoint_url=endpoint, retry_window=1)  # as the server opens its storage
    value = serialization.serialize(b"some bytes")  # an artifact whose stored bytes hash to its id
    data, art = value.payload, value.id
    storage.put(artifact_key(art), data)
    stopped = False
    try:
        with serve(tmp_path, storage=storage) as s, s.client() as c:
            root = record_resolution(s.url, s.key, kind="local")
            s.store.write(Batch(artifacts={art: {"id": art, "format": value.format, "type_name": value.type_name,
                                                 "summary": None, "size": len(data), "created_at": utcnow()}}))
            assert c.get(f"/api/v1/artifacts/{art}/data").content == data
            s3.stop()
            stopped = True
            for path in (f"/api/v1/artifacts/{art}/data", f"/api/v1/runs/{root}/logs"):
                r = c.get(path)
                assert r.status_code == 503 and r.headers["content-type"] == "application/json", (path, r.text)
                assert r.json()["detail"].startswith("artifact storage is unavailable: "), r.text
    finally:
        if not stopped:
            s3.stop()


# -- local mode on a laptop ------------------------------------------------------------------------------------

def test_local_mode_refuses_other_web_pages_and_rebound_dns_names(tmp_path) -> None:
    with serve(tmp_path, api_keys_required=False) as s, s.client(key=None) as c:
        root = record_resolution(s.url, "", kind="local", state="running")
        own = urlsplit(s.url).netloc
        cancel = f"/api/v1/resolutions/{root}/cancel"
        r = c.post(cancel, content=b"x=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 415 and "application/json" in r.json()["detail"]
        assert c.post(cancel).status_code == 415  # no body, no content type: what a cross-site form can send
        r = c.post(cancel, json={}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
        assert c.post(cancel, json={}, headers={"Origin": "null"}).status_code == 403
        assert c.post(cancel, json={}, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        for path in ("/api/v1/resolutions", "/"):
            r = c.get(path, headers={"Host": f"evil.example:{urlsplit(s.url).port}"})
            assert r.status_code == 403 and "loopback" in r.json()["detail"], path
            assert c.get(path, headers={"Host": f"localhost:{urlsplit(s.url).port}"}).status_code == 200
        assert s.store.get_resolution(root).state == "running"  # nothing went through
        r = c.post(cancel, json={}, headers={"Origin": f"http://{own}", "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 202 and r.json()["state"] == "canceling"


def test_api_errors_are_json_with_a_message(served) -> None:
    with served.client() as c:
        r = c.post("/api/v1/store/write", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and isinstance(r.json()["detail"], str) and r.json()["detail"]
        r = c.get("/api/v1/runs/ABC")
        assert r.status_code == 422 and "path parameter 'run_id'" in r.json()["detail"]


def test_a_driver_reads_its_token_from_a_file_and_stops_when_the_token_does(served, tmp_path, monkeypatch) -> None:
    """The driver entrypoint takes its token from $SEMATIC_K8S_API_KEY_FILE; restarted after its resolution
    ended (resolved), its token is refused with the end named: it says so in one line instead of driving anything,
    and exits 0. A token revoked meanwhile (its key revoked) is refused without the end named: exit 1."""
    import subprocess
    import sys

    from sematic_k8s.specs import DriverSpec, ResolutionSettings

    own = uuid.uuid4().hex
    token = HttpStore(served.url, served.key).mint_token(own)
    token_file = tmp_path / "api-key"
    token_file.write_text(token)
    token_file.chmod(0o400)
    spec = DriverSpec(root=None, storage_url=f"file://{tmp_path / 'storage'}", image=f"{ALLOWED}@{DIGEST}",
                      resolution=ResolutionSettings(root_id=own, rerun_from=own))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMATIC_K8S_")}
    env.update(SEMATIC_K8S_SERVER=served.url, SEMATIC_K8S_API_KEY_FILE=str(token_file),
               SEMATIC_K8S_DRIVER=spec.to_json(), SEMATIC_K8S_HOME=str(tmp_path / "home"))
    driver = HttpStore(served.url, token)
    try:
        driver.write(Batch(new_resolutions=[{"id": own, "root_func_path": "m:f", "state": "resolved",
                                             "settings": {"kind": "cloud"}, "created_at": utcnow()}]))
    finally:
        driver.close()
    done = subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], env=env, capture_output=True, text=True,
                          timeout=120)
    said = [line for line in done.stderr.splitlines() if " driver INFO " not in line]
    assert done.returncode == 0 and said == [f"resolution {own} already ended: resolved; nothing to do"], done.stderr
    with served.client(key=served.admin_key) as admin:
        minted_by = next(k["id"] for k in auth.list_keys(served.store.engine) if k["name"] == "tests")
        assert admin.post(f"/api/v1/api-keys/{minted_by}/revoke", json={}).json() == {"revoked": 1}
    done = subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "refuses this driver's token" in done.stderr and "was minted with an API key " \
        "that has since been revoked" in done.stderr, done.stderr
    assert token not in done.stderr
