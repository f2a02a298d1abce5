"""Faults of the Docker executor and of a CloudResolver's driver, with the real engine, registry, S3 API and
server: a func past its timeout is stopped; a driver killed with SIGKILL fails the resolution at once with its
last log lines, leaves no container behind, and its resolution is continued through the API to the same
value; finished driver and worker containers are removed."""

from __future__ import annotations

import importlib
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from docker import errors as docker_errors

import sematic_k8s as sk
from infra import REGISTRY, docker_client, require_docker
from projects import user_project
from sematic_k8s.labels import RESOLUTION_LABEL, ROLE_LABEL
from sematic_k8s.storage.urls import storage_from_url
from sematic_k8s_server.config import RerunConfig, ServerConfig
from serving import serve, wait_for

PIPELINE = '''
    import os
    import time

    import sematic_k8s as sk
    from sematic_k8s.settings import STORAGE_ENV
    from sematic_k8s.storage.urls import storage_from_url


    @sk.func(inline=False)
    def add(a: int, b: int) -> int:
        return a + b


    @sk.func(inline=False)
    def gate(name: str, x: int) -> int:
        """Returns x once the object gates/NAME is in storage (so a test can act while this runs)."""
        storage = storage_from_url(os.environ[STORAGE_ENV])
        storage.put(f"gates/{name}.started", b"")
        print(f"waiting at gate {name}")
        while not storage.exists(f"gates/{name}"):
            time.sleep(0.2)
        return x


    @sk.func
    def gated(n: int, name: str) -> int:
        return add(gate(name, add(n, 1)), add(1, 1))


    @sk.func(inline=False, timeout=8)  # long enough for the worker to start and print under load
    def sleepy(seconds: float) -> int:
        print("going to sleep")
        time.sleep(seconds)
        return 1


    @sk.func
    def too_slow() -> int:
        return add(sleepy(30.0), 1)
'''


@pytest.fixture(scope="module")
def base_image() -> str:
    return require_docker()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Iterator[tuple[Path, Any]]:
    """One user project for the module (one image build), importable here as in the image."""
    root = tmp_path_factory.mktemp("project")
    with user_project(root, "faultpipe", PIPELINE) as module:
        yield root, importlib.import_module(module)


@pytest.fixture
def s3_url(monkeypatch) -> str:
    """A fresh bucket on the shared S3 API server (drivers and workers reach it on the host network)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    for name, default in {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "test",
                          "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(name, os.environ.get(name, default))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"sk-faults-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 config=Config(s3={"addressing_style": "path"})).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/artifacts"


def containers_of(root_id: str, role: str | None = None) -> list[Any]:
    labels = [f"{RESOLUTION_LABEL}={root_id}"] + ([f"{ROLE_LABEL}={role}"] if role else [])
    while True:
        try:
            return docker_client().containers.list(all=True, filters={"label": labels})
        except docker_errors.NotFound:  # one was removed while the list inspected it: look again
            continue


def resolver(server: Any, s3_url: str, root: Path, base_image: str, lines: list[str], **kw: Any) -> sk.CloudResolver:
    return sk.CloudResolver(server=server.url, api_key=server.key, storage=s3_url,
                            registry=f"{REGISTRY}/sk-test-faults", base_image=base_image, project_root=str(root),
                            poll_interval=0.2, progress=lines.append, **kw)


def test_a_func_past_its_timeout_is_stopped_and_its_containers_removed(base_image, project, s3_url, tmp_path):
    root, mod = project
    lines: list[str] = []
    with serve(tmp_path) as server:
        f = mod.too_slow()
        with pytest.raises(sk.ResolutionFailed) as info:
            f.resolve(resolver(server, s3_url, root, base_image, lines))
        run = next(r for r in server.store.runs_of_root(f.id) if r.func_name == "sleepy")
        assert run.state == "failed" and run.error["type"] == "DeadlineExceeded"
        assert "timed out after 8 s" in run.error["message"]
        assert "going to sleep" in run.error["traceback"]  # the container's last log lines
        assert "timed out after 8 s" in str(info.value)
        wait_for(lambda: not containers_of(f.id), 30, what="the resolution's containers to be removed")


def test_a_killed_driver_fails_at_once_and_is_continued_through_the_api(base_image, project, s3_url, tmp_path):
    root, mod = project
    lines: list[str] = []
    storage = storage_from_url(s3_url)
    reruns = RerunConfig(launcher="docker", allow_docker=True, image_repositories=(f"{REGISTRY}/sk-test-faults",),
                         storage_url=s3_url)  # local development: the server may continue it from its image
    with serve(tmp_path, config=ServerConfig(reruns=reruns)) as server:
        name = uuid.uuid4().hex[:8]
        f = mod.gated(3, name)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["value"] = f.resolve(resolver(server, s3_url, root, base_image, lines))
            except BaseException as e:  # noqa: BLE001
                outcome["error"] = e
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        wait_for(lambda: storage.exists(f"gates/{name}.started") or outcome, 300, what="the gated worker")
        [driver] = containers_of(f.id, "driver")
        driver.kill(signal="SIGKILL")
        thread.join(60)
        error = outcome.get("error")
        assert isinstance(error, sk.ResolutionFailed), outcome
        assert "the driver exited with code 137" in str(error)
        assert f"driver of resolution {f.id}" in str(error)  # its last log lines
        res = server.store.get_resolution(f.id)
        assert res.state == "failed" and "the driver exited with code 137" in res.error
        wait_for(lambda: not containers_of(f.id), 30, what="the dead driver's containers to be removed")

        storage.put(f"gates/{name}", b"")
        with server.client() as c:
            r = c.post(f"/api/v1/resolutions/{f.id}/rerun", json={"mode": "continue"})
            assert r.status_code == 202, r.text
            new_id = r.json()["resolution_id"]
            done = wait_for(lambda: (x := server.store.get_resolution(new_id)) and x.state in ("resolved", "failed")
                            and x, 300, what="the continued resolution")
        assert done.state == "resolved", done.error
        assert server.store.get_artifact(server.store.get_run(new_id).output_id).summary == 3 + 1 + 2
        reused = [r for r in server.store.runs_of_root(new_id) if r.notes.get("reused_from")]
        assert len(reused) == 2  # add(3, 1) and add(1, 1) were not run again
        wait_for(lambda: not containers_of(new_id), 60, what="the finished driver and workers to be removed")
