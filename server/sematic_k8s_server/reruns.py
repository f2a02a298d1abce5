"""Starting reruns the server was asked for.

Locally (one machine, artifacts in a local directory) the server starts a background process that runs
the same code path as ``sematic-k8s rerun``: the recorded root func, ``LocalResolver(rerun_from=...,
rerun_mode=...)``, recording through this server. A cloud launcher (issue 4) gets the same
:class:`RerunRequest`, whose ``image`` and ``build_hash`` are the recorded image digest to reuse.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sematic_k8s.settings import API_KEY_ENV, HOME_ENV, SERVER_ENV
from sematic_k8s.specs import DriverSpec, ResolutionSettings
from sematic_k8s.version import PACKAGE_DIR

log = logging.getLogger("sematic_k8s_server")


@dataclass(frozen=True)
class RerunRequest:
    new_id: str  # the new Resolution's id, already returned to the client
    rerun_of: str  # the Resolution being re-run
    rerun_from: str  # a run of it (its root id for a whole rerun)
    mode: str  # "from" | "continue"
    root_func_path: str
    image: str | None  # the recorded image digest: a cloud launcher reuses it when the code hash matches
    build_hash: str | None
    server_url: str  # where the rerun records
    api_key: str | None
    max_parallelism: int = 1  # the original resolution's
    settings: dict | None = None  # the original resolution's recorded settings (kind, storage_url, executor...)
    root_source_file: str | None = None

    def resolution(self) -> ResolutionSettings:
        """The rerun's resolution settings: the original's cache namespace and parallelism, the new id."""
        return ResolutionSettings(cache_namespace=(self.settings or {}).get("cache_namespace"),
                                  rerun_from=self.rerun_from, rerun_mode=self.mode,
                                  max_parallelism=self.max_parallelism, root_id=self.new_id)


class RerunLauncher(Protocol):
    def launch(self, request: RerunRequest) -> None:
        """Start the rerun; return without waiting for it."""


class LocalProcessLauncher:
    """Reruns as ``python -m sematic_k8s_server.rerun_worker`` processes on this machine, with artifacts in
    ``home``/storage. ``on_failure(request, message)`` is called when a process ends without having
    recorded its resolution (e.g. the pipeline's code cannot be imported)."""

    def __init__(self, home: Path, on_failure: Callable[[RerunRequest, str], None]) -> None:
        self.home = Path(home)
        self.on_failure = on_failure
        self.log_dir = self.home / "reruns"

    def launch(self, request: RerunRequest) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{request.new_id}.log"
        env = {**os.environ, SERVER_ENV: request.server_url, HOME_ENV: str(self.home),
               "PYTHONPATH": os.pathsep.join(_import_roots() + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        env.pop(API_KEY_ENV, None)
        if request.api_key:
            env[API_KEY_ENV] = request.api_key
        r = request.resolution()
        cmd = [sys.executable, "-m", "sematic_k8s_server.rerun_worker", "--rerun-from", str(r.rerun_from),
               "--mode", r.rerun_mode, "--root-id", str(r.root_id), "--max-parallelism", str(r.max_parallelism)]
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(cmd, env=env, cwd=os.getcwd(), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        log.info("rerun %s of %s: pid %d, log %s", request.new_id, request.rerun_of, proc.pid, log_path)
        threading.Thread(target=self._reap, args=(proc, request, log_path), daemon=True,
                         name=f"rerun-{request.new_id[:8]}").start()

    def _reap(self, proc: subprocess.Popen, request: RerunRequest, log_path: Path) -> None:
        code = proc.wait()
        if code != 0:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            self.on_failure(request, f"rerun process exited with status {code}:\n{tail}")


class CloudLauncher:
    """Reruns of cloud resolutions: a driver started from the recorded image digest (nothing is built),
    as a container on this machine or a Job on the cluster, like the CloudResolver's own."""

    def launch(self, request: RerunRequest) -> None:
        from sematic_k8s.launchers import driver_env, start_driver

        settings = request.settings or {}
        if not (request.image and settings.get("storage_url")):
            raise ValueError(f"resolution {request.rerun_of} has no recorded image or storage to rerun from")
        spec = DriverSpec(root=None, storage_url=settings["storage_url"], image=request.image,
                          build_hash=request.build_hash, resolution=request.resolution(),
                          executor=settings.get("executor", "docker"),
                          executor_settings=settings.get("executor_settings") or {},
                          root_func=request.root_func_path, root_source_file=request.root_source_file)
        start_driver(spec, driver_env(spec, request.server_url, request.api_key, settings.get("source_map")))
        log.info("rerun %s of %s: driver started from %s", request.new_id, request.rerun_of, request.image)


def _import_roots() -> list[str]:
    """The directories holding sematic_k8s and sematic_k8s_server (for an uninstalled checkout)."""
    return list(dict.fromkeys(str(p) for p in (Path(PACKAGE_DIR).parent, Path(__file__).resolve().parents[1])))
