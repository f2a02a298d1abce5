"""A driver image that does nothing: its ``python -m sematic_k8s.driver`` waits a minute. For tests of the server's
rerun action through its real Docker launcher, where what the driver does is beside the point (its container, which
removes itself when it exits, can be inspected meanwhile)."""

from __future__ import annotations

import io
from typing import Any

from infra import containers_of

IDLE_DRIVER_REPO = "127.0.0.1:5000/sk-test-idle-driver"
IDLE_DRIVER = """FROM local/python-base:bookworm
WORKDIR /idle
RUN mkdir sematic_k8s && touch sematic_k8s/__init__.py && \\
    printf 'import time\\ntime.sleep(60)\\n' > sematic_k8s/driver.py
"""


def idle_driver_image(client: Any) -> str:
    """The idle driver image, built and pushed to the local registry; its reference by digest."""
    client.images.build(fileobj=io.BytesIO(IDLE_DRIVER.encode()), tag=f"{IDLE_DRIVER_REPO}:latest", rm=True)
    for line in client.images.push(IDLE_DRIVER_REPO, tag="latest", stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(line["error"])
    return f"{IDLE_DRIVER_REPO}@{client.images.get_registry_data(f'{IDLE_DRIVER_REPO}:latest').id}"


def remove_drivers(resolution_ids: list[str]) -> None:
    """Remove the driver containers of ``resolution_ids`` (started by the server's Docker launcher)."""
    for res_id in resolution_ids:
        for container in containers_of(res_id):
            container.remove(force=True)
