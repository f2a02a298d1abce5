"""The sweep of worker containers left by drivers of ended resolutions (``launchers.docker.remove_ended_workers``)
meeting a container whose removal is under way already (its own driver removing it, or ``auto_remove``, between the
sweep's listing and its remove): the real engine behind a proxy that answers the sweep's first remove 409 as the
engine does then, once that removal was carried out for real."""

from __future__ import annotations

import json
import os
import re
from email.utils import formatdate

import docker
import pytest

from infra import docker_client, require_docker
from outages import AnsweringOnceProxy
from sematic_k8s.future import new_id
from sematic_k8s.labels import RESOLUTION_LABEL, ROLE_LABEL
from sematic_k8s.launchers.docker import remove_ended_workers

REMOVE = rb"DELETE /v[0-9.]+/containers/([0-9a-f]+)"


def conflict(request: bytes) -> bytes:
    """The engine's answer to a remove of a container whose removal is in progress (moby daemon/delete.go)."""
    match = re.match(REMOVE, request)
    assert match is not None
    body = json.dumps({"message": f"removal of container {match[1].decode()} is already in progress"}).encode() + b"\n"
    return (b"HTTP/1.1 409 Conflict\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n"
            b"Docker-Experimental: false\r\nOstype: linux\r\nServer: Docker/20.10.24 (linux)\r\n"
            + f"Date: {formatdate(usegmt=True)}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)


def test_a_worker_container_being_removed_already_leaves_the_sweep_going():
    """Two running worker containers of an ended resolution; the sweep's first remove meets one being removed
    already (409 "removal of container ... is already in progress"): passed over, the other one removed all the
    same. Was: only NotFound caught, the 409 aborted the sweep, the other container left running."""
    base_image = require_docker()
    engine_socket = (os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock").removeprefix("unix://")
    if "://" in engine_socket:
        pytest.skip(f"the engine is not on a Unix socket here ({engine_socket})")
    engine = docker_client()
    root_id = new_id()
    made = [engine.containers.run(base_image, ["sleep", "600"], detach=True,
                                  labels={ROLE_LABEL: "worker", RESOLUTION_LABEL: root_id}) for _ in range(2)]
    ids = b"|".join(c.id.encode() for c in made)

    def removed_by_its_driver(request: bytes) -> None:
        match = re.match(REMOVE, request)
        assert match is not None
        engine.api.remove_container(match[1].decode(), force=True)

    proxy = AnsweringOnceProxy(engine_socket, rb"DELETE /v[0-9.]+/containers/(" + ids + rb")\b", conflict,
                               meanwhile=removed_by_its_driver)
    sweeper = docker.DockerClient(base_url=f"tcp://127.0.0.1:{proxy.port}", version="auto", timeout=60)
    try:
        removed = remove_ended_workers(lambda r: r == root_id, client=sweeper)
        [conflicted] = proxy.answered
        other = next(c for c in made if c.id.encode() not in conflicted)
        assert [(w.id, w.state) for w in removed] == [(other.id, "running")], removed
        assert not engine.containers.list(all=True, filters={"label": f"{RESOLUTION_LABEL}={root_id}"})
    finally:
        sweeper.close()
        proxy.close()
        for container in made:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                pass
