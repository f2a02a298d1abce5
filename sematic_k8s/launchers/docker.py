"""Start a driver in a Docker container on this machine (host network, the Docker socket mounted so that
its DockerExecutor can start workers beside it), and follow it.

The container removes itself when it exits (``auto_remove``): no finished driver is left behind with the
API key in its environment. Whoever follows it (:class:`DriverContainer`, for the CloudResolver) streams its
log as it runs, so its last lines are known even after it is gone.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Mapping
from typing import Any

from sematic_k8s.labels import RESOLUTION_LABEL, ROLE_LABEL, run_labels
from sematic_k8s.launchers import LOG_TAIL, DriverEnd
from sematic_k8s.specs import DRIVER_COMMAND, DriverSpec

SIGNALS = {137: "killed (SIGKILL, or out of memory)", 143: "terminated (SIGTERM)"}


def start_driver(spec: DriverSpec, env: Mapping[str, str]) -> None:
    """The launcher of ``backends.LAUNCHERS["docker"]``: a detached container named after the resolution."""
    import docker

    root_id = spec.root_id or ""
    docker.from_env().containers.run(
        spec.image, list(DRIVER_COMMAND), detach=True, network_mode="host", auto_remove=True,
        environment=dict(env), labels=run_labels(root_id, root_id, "driver", "driver"),
        name=f"sk-driver-{root_id[:12]}-{os.urandom(3).hex()}",
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock"}})


class DriverContainer:
    """Follows the driver container of ``spec``'s resolution: waits for its exit code and streams its log
    (last :data:`LOG_TAIL` lines) on two threads, from the moment it is created."""

    def __init__(self, spec: DriverSpec, client: Any = None) -> None:
        import docker

        self.client = client or docker.from_env()
        self.root_id = spec.root_id or ""
        self.lines: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        self.exit_code: int | None = None
        self.gone = threading.Event()
        found = self.client.containers.list(all=True, filters={"label": [
            f"{RESOLUTION_LABEL}={self.root_id}", f"{ROLE_LABEL}=driver"]})
        if not found:
            self.gone.set()  # exited (and removed itself) already
            return
        self.container = found[0]
        threading.Thread(target=self._wait, daemon=True, name=f"sk-driver-wait-{self.root_id[:8]}").start()
        self.streamer = threading.Thread(target=self._stream, daemon=True, name=f"sk-driver-log-{self.root_id[:8]}")
        self.streamer.start()

    def _wait(self) -> None:
        try:
            self.exit_code = self.container.wait()["StatusCode"]
        except Exception:  # noqa: BLE001 - removed before we asked: the exit code is unknown
            pass
        finally:
            self.gone.set()

    def _stream(self) -> None:
        partial = b""
        try:
            for chunk in self.container.logs(stream=True, follow=True):
                partial += chunk
                *complete, partial = partial.split(b"\n")
                self.lines.extend(line.decode(errors="replace") for line in complete)
        except Exception:  # noqa: BLE001 - the container went away mid-stream: keep what arrived
            pass
        if partial:
            self.lines.append(partial.decode(errors="replace"))

    def ended(self) -> DriverEnd | None:
        if not self.gone.is_set():
            return None
        if hasattr(self, "streamer"):
            self.streamer.join(5)  # the lines it printed last
        code = self.exit_code
        how = ("exited before it could be followed" if code is None
               else f"exited with code {code}" + (f": {SIGNALS[code]}" if code in SIGNALS else ""))
        return DriverEnd(how, code, "\n".join(self.lines))

    def cleanup(self) -> None:
        """Remove the dead driver's worker containers (a driver removes its own when it ends normally)."""
        import docker.errors

        for c in self.client.containers.list(all=True, filters={"label": [
                f"{RESOLUTION_LABEL}={self.root_id}", f"{ROLE_LABEL}=worker"]}):
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass

    def close(self) -> None:
        pass
