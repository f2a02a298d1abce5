"""Start a driver in a Docker container on this machine (host network).

The CloudResolver's driver gets the Docker socket mounted so that its DockerExecutor can start workers
beside it: a developer-machine path, started by the developer. A driver the server starts (local development
only) never gets the socket (``docker_socket=False``): its runs execute as processes in its own container.

The driver's credential (``$SEMATIC_K8S_API_KEY`` in the env given: its resolution's token) is never put in
the container's environment, where ``docker inspect`` would show it: it is copied into the created container
as a file readable by the image's user alone, named by ``$SEMATIC_K8S_API_KEY_FILE``.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Mapping
from typing import Any

from sematic_k8s.labels import run_labels
from sematic_k8s.settings import API_KEY_ENV, API_KEY_FILE_ENV
from sematic_k8s.specs import DRIVER_COMMAND, DriverSpec

DOCKER_SOCKET = "/var/run/docker.sock"
SECRETS_DIR = "sematic-k8s-secrets"  # at the container's root
TOKEN_FILE = f"/{SECRETS_DIR}/api-key"


def start_driver(spec: DriverSpec, env: Mapping[str, str], *, docker_socket: bool = True) -> None:
    """The launcher of ``backends.LAUNCHERS["docker"]``: a detached container named after the resolution."""
    import docker

    root_id = spec.root_id or ""
    env = dict(env)
    token = env.pop(API_KEY_ENV, None)
    if token:
        env[API_KEY_FILE_ENV] = TOKEN_FILE
    client = docker.from_env()
    kwargs: dict[str, Any] = dict(
        command=list(DRIVER_COMMAND), detach=True, network_mode="host", environment=env,
        labels=run_labels(root_id, root_id, "driver", "driver"), name=f"sk-driver-{root_id[:12]}-{os.urandom(3).hex()}",
        volumes={DOCKER_SOCKET: {"bind": DOCKER_SOCKET}} if docker_socket else {})
    try:
        container = client.containers.create(spec.image, **kwargs)
    except docker.errors.ImageNotFound:
        client.images.pull(spec.image)
        container = client.containers.create(spec.image, **kwargs)
    try:
        if token:
            container.put_archive("/", _secret_archive(token, _image_user(client, spec.image)))
        container.start()
    except BaseException:
        container.remove(force=True)
        raise


def _image_user(client: Any, image: str) -> tuple[int, int]:
    """The numeric uid and gid the image runs as (root unless its USER says a number)."""
    user = (client.images.get(image).attrs.get("Config") or {}).get("User") or ""
    uid, _, gid = user.partition(":")
    return (int(uid) if uid.isdigit() else 0, int(gid) if gid.isdigit() else int(uid) if uid.isdigit() else 0)


def _secret_archive(token: str, owner: tuple[int, int]) -> bytes:
    """A tar of ``SECRETS_DIR/`` (0700) holding ``api-key`` (0400), owned by ``owner``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        now = time.time()
        directory = tarfile.TarInfo(SECRETS_DIR)
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o700, now
        data = token.encode()
        file = tarfile.TarInfo(f"{SECRETS_DIR}/api-key")
        file.size, file.mode, file.mtime = len(data), 0o400, now
        for info in (directory, file):
            info.uid, info.gid = owner
        tar.addfile(directory)
        tar.addfile(file, io.BytesIO(data))
    return out.getvalue()
