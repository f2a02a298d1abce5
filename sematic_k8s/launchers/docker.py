"""Start a driver in a Docker container on this machine (host network, the Docker socket mounted so that
its DockerExecutor can start workers beside it)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from sematic_k8s.labels import run_labels
from sematic_k8s.specs import DRIVER_COMMAND, DriverSpec


def start_driver(spec: DriverSpec, env: Mapping[str, str]) -> None:
    """The launcher of ``backends.LAUNCHERS["docker"]``: a detached container named after the resolution."""
    import docker

    root_id = spec.root_id or ""
    docker.from_env().containers.run(
        spec.image, list(DRIVER_COMMAND), detach=True, network_mode="host",
        environment=dict(env), labels=run_labels(root_id, root_id, "driver", "driver"),
        name=f"sk-driver-{root_id[:12]}-{os.urandom(3).hex()}",
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock"}})
